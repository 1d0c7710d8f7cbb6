"""CornerNet and CentripetalNet heads (METHODS.md §1.8 and CARD 3).

Per hourglass stack and corner type (top-left, bottom-right) a corner-pooling module feeds the class heatmap
and the sub-pixel offset branches, plus either

- CentripetalNet: a guiding-shift branch, the cross-star deformable conv whose offsets come from the *detached*
  guiding shift, and the centripetal-shift branch on the adapted feature; or
- CornerNet: a 1-channel associative-embedding branch (the grouping baseline of the paper's Table 4).

Every stack is supervised (intermediate supervision) and the losses are summed over stacks; inference reads
the last stack only. Corner scores use sigmoid as both codes do (the paper writes softmax; App. A #6).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from pointdet.distributed import mean_over_processes
from pointdet.losses import associative_embedding_loss, masked_smooth_l1, penalty_reduced_focal_loss
from pointdet.models.heads.branches import prediction_branch
from pointdet.models.heads.centernet import HEATMAP_PRIOR
from pointdet.ops.corner_pool import Direction, corner_pool
from pointdet.ops.dcn import deform_conv
from pointdet.ops.gather import gather_at
from pointdet.ops.layers import Norm, conv_norm_relu, norm_layer
from pointdet.structures import Instances
from pointdet.targets.corners import CORNERS, build_corner_targets

Matching = Literal["centripetal", "embedding"]
POOL_CHANNELS = 128


class CentripetalOutputs(NamedTuple):
    """Raw maps, each (B, S, D, H, W) over S stacks (only the last stack at inference). Heatmaps are logits
    (D = C); offsets, guiding and centripetal shifts have D = 2."""

    tl_heat: Tensor
    br_heat: Tensor
    tl_offset: Tensor
    br_offset: Tensor
    tl_guiding: Tensor
    br_guiding: Tensor
    tl_centripetal: Tensor
    br_centripetal: Tensor


class ShiftOutputs(NamedTuple):
    """``CentripetalOutputs`` without guiding shifts: centripetal shifts read from the pooled feature directly
    (``cross_star=False``, the base model of the paper's Tables 4-5)."""

    tl_heat: Tensor
    br_heat: Tensor
    tl_offset: Tensor
    br_offset: Tensor
    tl_centripetal: Tensor
    br_centripetal: Tensor


class EmbeddingOutputs(NamedTuple):
    """As ``CentripetalOutputs`` with CornerNet's (B, S, 1, H, W) associative embeddings instead of shifts."""

    tl_heat: Tensor
    br_heat: Tensor
    tl_offset: Tensor
    br_offset: Tensor
    tl_embedding: Tensor
    br_embedding: Tensor


class CornerPoolModule(nn.Module):
    """``y = ReLU(N(conv3x3(pool1(a) + pool2(b))) + N(conv1x1(x)))``, then a conv-N-ReLU (§1.8).

    ``a`` and ``b`` are conv-N-ReLU branches of ``pool_channels``. CornerNet: N = BatchNorm, 128 branch channels, a
    3x3 last conv (the defaults); RepPoints v2's ``CornerPoolPack``: N = GroupNorm(32), 64, 1x1.
    """

    def __init__(
        self,
        channels: int,
        directions: tuple[Direction, Direction],
        pool_channels: int = POOL_CHANNELS,
        norm: Norm = "bn",
        last_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.directions = directions
        self.branches = nn.ModuleList(
            nn.Sequential(*conv_norm_relu(channels, pool_channels, norm=norm)) for _ in directions
        )
        self.merge = nn.Sequential(
            nn.Conv2d(pool_channels, channels, 3, padding=1, bias=norm == "none"), norm_layer(norm, channels)
        )
        self.skip = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=norm == "none"), norm_layer(norm, channels))
        self.out = nn.Sequential(*conv_norm_relu(channels, channels, last_kernel, norm=norm))

    def forward(self, x: Tensor) -> Tensor:
        pooled = sum(corner_pool(branch(x), d) for branch, d in zip(self.branches, self.directions, strict=True))
        return self.out(torch.relu(self.merge(pooled) + self.skip(x)))


class CrossStarDeformConv(nn.Module):
    """DCNv1 3x3 on the pooled feature with offsets ``conv1x1(guiding.detach())`` (CARD 3 (e) steps 2-3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(2, 18, 1, bias=False)
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        nn.init.normal_(self.offset.weight, std=0.1)
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, features: Tensor, guiding: Tensor) -> Tensor:
        offset = self.offset(guiding.detach().to(features.dtype))
        return deform_conv(features, offset, self.weight, None, padding=1)


class CornerBranches(nn.Module):
    """The branches of one corner type in one stack; ``forward`` returns its maps by field suffix."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        head_conv: int,
        directions: tuple[Direction, Direction],
        matching: Matching,
        cross_star: bool = True,
    ) -> None:
        super().__init__()
        self.matching, self.cross_star = matching, cross_star
        self.pool = CornerPoolModule(channels, directions)
        self.heat = prediction_branch(channels, head_conv, num_classes, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        self.offset = prediction_branch(channels, head_conv, 2)
        if matching == "centripetal":
            if cross_star:
                self.guiding = prediction_branch(channels, head_conv, 2)
                self.adaption = CrossStarDeformConv(channels)
            self.centripetal = prediction_branch(channels, head_conv, 2)
        else:
            self.embedding = prediction_branch(channels, head_conv, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        pooled = self.pool(x)
        maps = {"heat": self.heat(pooled), "offset": self.offset(pooled)}
        if self.matching == "embedding":
            maps["embedding"] = self.embedding(pooled)
        elif self.cross_star:
            maps["guiding"] = self.guiding(pooled)
            maps["centripetal"] = self.centripetal(self.adaption(pooled, maps["guiding"]))
        else:
            maps["centripetal"] = self.centripetal(pooled)
        return maps


class CornerHead(nn.Module):
    """Corner heads over the stacks of an hourglass, with their losses (decoding: ``decoders.CornerPostprocess``).

    Args:
        in_channels: channels of each stack's feature.
        num_classes: C.
        num_stacks: S, one set of branches per stack.
        matching: ``centripetal`` (CentripetalNet) or ``embedding`` (CornerNet).
        cross_star: CentripetalNet's guiding shift + cross-star DCN before the centripetal branch; False reads the
            centripetal shift from the pooled feature (the paper's ablation base).
        head_conv: hidden channels of the prediction branches (256).
        stride: output stride (4).
        guiding_weight: alpha of the guiding-shift loss (0.05).
        embedding_weight: weight of CornerNet's pull and push losses (0.1 each).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_stacks: int = 2,
        matching: Matching = "centripetal",
        cross_star: bool = True,
        head_conv: int = 256,
        stride: int = 4,
        guiding_weight: float = 0.05,
        embedding_weight: float = 0.1,
    ) -> None:
        super().__init__()
        if matching not in ("centripetal", "embedding"):
            raise ValueError(f"corner matching must be 'centripetal' or 'embedding', got {matching!r}")
        self.num_classes, self.stride, self.matching = num_classes, stride, matching
        self.guiding_weight, self.embedding_weight = guiding_weight, embedding_weight
        if matching == "embedding":
            self.Outputs = EmbeddingOutputs
        else:
            self.Outputs = CentripetalOutputs if cross_star else ShiftOutputs
        branches = {"tl": ("top", "left"), "br": ("bottom", "right")}
        self.stacks = nn.ModuleList(
            nn.ModuleDict(
                {
                    corner: CornerBranches(in_channels, num_classes, head_conv, directions, matching, cross_star)
                    for corner, directions in branches.items()
                }
            )
            for _ in range(num_stacks)
        )

    def forward(self, features: list[Tensor]) -> NamedTuple:
        """S stack features (B, F, H, W) -> ``Outputs``; at inference only the last stack runs its branches."""
        used = range(len(features)) if self.training else [len(features) - 1]
        per_stack = [
            {f"{c}_{name}": value for c in CORNERS for name, value in self.stacks[i][c](features[i]).items()}
            for i in used
        ]
        return self.Outputs(**{name: torch.stack([maps[name] for maps in per_stack], dim=1) for name in per_stack[0]})

    def loss(self, outputs: NamedTuple, instances: list[Instances]) -> dict[str, Tensor]:
        """Loss terms summed over stacks, each the mean of its top-left and bottom-right parts (CARD 3 (c))."""
        num_stacks = outputs.tl_heat.shape[1]
        targets = build_corner_targets(instances, self.num_classes, tuple(outputs.tl_heat.shape[-2:]), self.stride)
        num_objects = mean_over_processes(targets.mask.sum()).clamp(min=1)
        terms: dict[str, Tensor] = {}

        def add(name: str, value: Tensor) -> None:
            terms[name] = terms.get(name, 0.0) + value

        for s in range(num_stacks):
            gathered = {}
            for corner in CORNERS:
                target = getattr(targets, corner)
                heat = getattr(outputs, f"{corner}_heat")[:, s]
                add("loss_heatmap", penalty_reduced_focal_loss(heat, target.heatmap, num_objects) / 2)
                offset = gather_at(getattr(outputs, f"{corner}_offset")[:, s], target.index)
                add("loss_offset", masked_smooth_l1(offset, target.offset, targets.mask, num_objects) / 2)
                if self.matching == "centripetal":
                    if hasattr(outputs, f"{corner}_guiding"):
                        guiding = gather_at(getattr(outputs, f"{corner}_guiding")[:, s], target.index)
                        add("loss_guiding", masked_smooth_l1(guiding, target.guiding, targets.mask, num_objects) / 2)
                    centripetal = gather_at(getattr(outputs, f"{corner}_centripetal")[:, s], target.index)
                    add(
                        "loss_centripetal",
                        masked_smooth_l1(centripetal, target.centripetal, targets.mask, num_objects) / 2,
                    )
                else:
                    gathered[corner] = gather_at(getattr(outputs, f"{corner}_embedding")[:, s], target.index)[..., 0]
            if self.matching == "embedding":
                pull, push = associative_embedding_loss(gathered["tl"], gathered["br"], targets.mask)
                add("loss_pull", pull)
                add("loss_push", push)
        weights = {
            "loss_guiding": self.guiding_weight,
            "loss_pull": self.embedding_weight,
            "loss_push": self.embedding_weight,
        }
        return {name: weights.get(name, 1.0) * value for name, value in terms.items()}
