"""RepPoints v2 head ("RepPoints V2: Verification Meets Regression for Object Detection", Chen et al. NeurIPS 2020;
METHODS.md CARD 5 §5.1): RepPoints v1 plus two verification tasks whose maps are fused back into it.

Dataflow per FPN level, the card's (e) block (shared weights across levels)::

    cls_f = cls_tower(x);  reg_f = reg_tower(x);  shared = ConvNormReLU3x3(reg_f)
    sem_score = Conv1x1(shared -> C);  sem_f = ConvNormReLU1x1(shared)             # foreground verification
    cls_f += sem_f;  pts_f = reg_f + sem_f;  hem_f = shared + sem_f
    hm_score = [Conv3x3(TLPool(hem_f) -> 1), Conv3x3(BRPool(hem_f) -> 1)]          # corner verification
    hm_offset = [Conv3x3(TLPool(hem_f) -> 2), Conv3x3(BRPool(hem_f) -> 2)]
    v = cat(hm_score, hm_offset)                                                  # 6 raw channels
    init points from pts_f; classifier and refine DCNs read cat(cls_f, v) and cat(pts_f, v)

The RepPoints v1 head (``RepPointsHead``) is a part of this one, not a base class: its towers, its point stage
(with ``guide_channels=6``), its output assembly and its loss are reused as they are; the corner pools are the
CornerNet module (``CornerPoolModule``) in RepPoints v2's form (64 channels, GroupNorm, a 1x1 last conv).

Loss (card (c); the code's weights): ``L = L_cls + γ1 L_init + γ2 L_refine + 0.25 L_corner_heat
+ 1.0 L_corner_offset + 0.1 L_fg``. The corner heatmap loss is CornerNet's penalty-reduced focal loss (α 2, β 4),
the offset loss smooth-L1 (β 1/9) at positives, each the mean of its top-left and bottom-right parts, each part
divided by its positive locations over all levels (``sum over images of max(#pos, 1)``). The foreground loss is
the normalised focal loss of §1.4 over every level and class at once; its weight is 0.1 in the code and 1.0 in the
paper (``foreground_weight``).

Facts derived from Scalsol/RepPointsV2 ``mmdet/models/dense_heads/reppoints_v2_head.py`` (``_init_layers``,
``init_weights``, ``forward_single``, ``loss``, ``loss_single``), ``mmdet/ops/corner_pool/corner_pool.py``
(``CornerPoolPack``) and its configs, as summarised in the card; no code of theirs was copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from pointdet.decoders.point_sets import RepPointsOutputs
from pointdet.distributed import mean_over_processes
from pointdet.losses import masked_smooth_l1, normalized_focal_loss, penalty_reduced_focal_loss
from pointdet.models.heads.corner import CornerPoolModule
from pointdet.models.heads.reppoints import CLASS_PRIOR, RepPointsHead, conv_tower
from pointdet.ops.layers import conv_norm_relu
from pointdet.ops.priors import level_sizes
from pointdet.structures import Instances
from pointdet.targets.reppoints_v2 import build_corner_targets, build_foreground_targets, resize_to_levels

VERIFICATION_CHANNELS = 6  # hm_score (2) + hm_offset (4), fused into the classifier and the refine regressor
CORNER_DIM = 64  # channels of the corner-pool branches (the config's corner_dim)
CORNER_OFFSET_BETA = 1 / 9
PRIOR_BIAS = -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR)


RepPointsV2Outputs = NamedTuple(  # noqa: UP014 - the fields extend RepPointsOutputs' without restating them
    "RepPointsV2Outputs",
    [
        *((name, Tensor) for name in RepPointsOutputs._fields),
        ("corner_scores", Tensor),
        ("corner_offsets", Tensor),
        ("foreground", Tensor),
    ],
)
RepPointsV2Outputs.__doc__ = """``RepPointsOutputs``' fields (same meaning) followed by the verification maps,
flattened over levels like ``scores``.

Attributes:
    corner_scores: (B, P, 2) top-left and bottom-right corner logits (``hm_score``).
    corner_offsets: (B, P, 4) ``(dx, dy)`` of the top-left then the bottom-right corner from the location, in
        stride units (``hm_offset``).
    foreground: (B, P, C) within-box foreground logits (``sem_score``).
"""


def points_outputs(outputs: RepPointsV2Outputs) -> RepPointsOutputs:
    """The RepPoints v1 part of ``outputs``."""
    return RepPointsOutputs(*outputs[: len(RepPointsOutputs._fields)])


def flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """Per-level maps [(B, D, H_l, W_l)] -> (B, P, D), row-major within a level, level after level."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def output_conv(in_channels: int, out_channels: int, kernel: int, bias: float = 0.0) -> nn.Conv2d:
    """A prediction conv at normal(0, 0.01) with a constant bias (mmcv's ``normal_init``)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, bias)
    return conv


class ForegroundVerification(nn.Module):
    """``sem_score = Conv1x1(x -> C)`` and the embedding ``sem_f = ConvNormReLU1x1(x)`` fused into the others."""

    def __init__(self, channels: int, num_classes: int, norm: Literal["gn", "none"]) -> None:
        super().__init__()
        self.score = output_conv(channels, num_classes, 1, PRIOR_BIAS)
        self.embedding = nn.Sequential(*conv_norm_relu(channels, channels, 1, norm=norm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, H, W) -> logits (B, C, H, W), embedding (B, D, H, W)."""
        return self.score(x), self.embedding(x)


class CornerVerification(nn.Module):
    """Top-left / bottom-right corner pools, each with a 1-channel score and a 2-channel offset 3x3 conv."""

    def __init__(self, channels: int, norm: Literal["gn", "none"], corner_dim: int = CORNER_DIM) -> None:
        super().__init__()
        self.pools = nn.ModuleList(
            CornerPoolModule(channels, directions, corner_dim, norm, last_kernel=1)
            for directions in (("top", "left"), ("bottom", "right"))
        )
        self.scores = nn.ModuleList(output_conv(channels, 1, 3, PRIOR_BIAS) for _ in range(2))
        self.offsets = nn.ModuleList(output_conv(channels, 2, 3) for _ in range(2))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, H, W) -> ``hm_score`` (B, 2, H, W) logits, ``hm_offset`` (B, 4, H, W)."""
        pooled = [pool(x) for pool in self.pools]
        scores = torch.cat([conv(p) for conv, p in zip(self.scores, pooled, strict=True)], dim=1)
        offsets = torch.cat([conv(p) for conv, p in zip(self.offsets, pooled, strict=True)], dim=1)
        return scores, offsets


def normal_init_tower(tower: nn.Sequential) -> nn.Sequential:
    """``tower`` with its first conv's weight drawn from normal(0, 0.01) (mmcv's ``normal_init`` of a ConvModule)."""
    nn.init.normal_(tower[0].weight, std=0.01)
    return tower


def verification_branches(
    make_shared: Callable[[], nn.Module],
    channels: int,
    num_classes: int,
    norm: Literal["gn", "none"],
    corner_verification: bool,
    foreground_verification: bool,
) -> tuple[nn.Module | None, ForegroundVerification | None, CornerVerification | None]:
    """The modules ``verify`` runs: the shared conv (``make_shared()``, built only when a branch is), the foreground
    branch and the corner branch, each None when switched off."""
    shared = make_shared() if corner_verification or foreground_verification else None
    foreground = ForegroundVerification(channels, num_classes, norm) if foreground_verification else None
    corners = CornerVerification(channels, norm) if corner_verification else None
    return shared, foreground, corners


class VerificationMaps(NamedTuple):
    """One level's verification maps (``verify``) and what they fuse back into the detector's features.

    Attributes:
        embedding: (B, D, H, W) foreground embedding ``sem_f`` added to the towers, or None without that branch.
        corner_scores: (B, 2, H, W) ``hm_score`` logits (0 channels without the corner branch).
        corner_offsets: (B, 4, H, W) ``hm_offset`` (0 channels without the corner branch).
        foreground: (B, C, H, W) ``sem_score`` logits (0 channels without the foreground branch).
        guide: (B, 6, H, W) ``cat(hm_score, hm_offset)``, concatenated to the classifier's and the refine stage's
            inputs, or None without the corner branch.
    """

    embedding: Tensor | None
    corner_scores: Tensor
    corner_offsets: Tensor
    foreground: Tensor
    guide: Tensor | None

    def embed(self, features: Tensor) -> Tensor:
        """(B, D, H, W) tower features plus the foreground embedding (unchanged without it)."""
        return features if self.embedding is None else features + self.embedding

    def fuse(self, features: Tensor) -> Tensor:
        """``embed(features)`` with the guide maps concatenated: (B, D + 6, H, W) (D without the corner branch)."""
        embedded = self.embed(features)
        return embedded if self.guide is None else torch.cat([embedded, self.guide], dim=1)


def verify(
    reg_features: Tensor,
    shared: nn.Module | None,
    foreground: ForegroundVerification | None,
    corners: CornerVerification | None,
) -> VerificationMaps:
    """The card's verification dataflow on one level's (B, D, H, W) regression-tower map: ``shared`` conv, the
    foreground branch on it, the corner branch on ``shared + sem_f``; a branch given as None is skipped."""
    empty = reg_features.new_zeros(reg_features.shape[0], 0, *reg_features.shape[2:])
    hidden = shared(reg_features) if shared is not None else reg_features
    scores, embedding = foreground(hidden) if foreground is not None else (empty, None)
    if corners is None:
        return VerificationMaps(embedding, empty, empty, scores, None)
    corner_scores, corner_offsets = corners(hidden if embedding is None else hidden + embedding)
    guide = torch.cat([corner_scores, corner_offsets], dim=1)
    return VerificationMaps(embedding, corner_scores, corner_offsets, scores, guide)


class VerificationOutputs(Protocol):
    """What ``VerificationLoss`` and joint inference read of a verified head's outputs (``RepPointsV2Outputs``,
    ``LSNetCPVOutputs``): (B, P, 2) ``priors``, (B, P) ``strides``, and the flattened maps of ``VerificationMaps``:
    (B, P, 2) ``corner_scores``, (B, P, 4) ``corner_offsets``, (B, P, C) ``foreground``."""

    priors: Tensor
    strides: Tensor
    corner_scores: Tensor
    corner_offsets: Tensor
    foreground: Tensor


@dataclass(frozen=True)
class VerificationLoss:
    """The verification terms of a head's loss (module docstring): ``loss_corner_heatmap`` and
    ``loss_corner_offset`` with the corner branch, ``loss_foreground`` with the foreground branch.

    Args:
        num_classes: C.
        corners, foreground: which branches the head has.
        heatmap_weight: λ1 of the corner heatmap loss (0.25).
        corner_offset_weight: weight of the corner offset loss (1.0).
        foreground_weight: λ2 of the foreground loss (0.1 code, 1.0 paper).
    """

    num_classes: int
    corners: bool
    foreground: bool
    heatmap_weight: float = 0.25
    corner_offset_weight: float = 1.0
    foreground_weight: float = 0.1

    def __call__(self, outputs: VerificationOutputs, instances: list[Instances]) -> dict[str, Tensor]:
        """The weighted terms of the branches built, in float32."""
        losses = self.corner_loss(outputs, instances) if self.corners else {}
        if self.foreground:
            losses["loss_foreground"] = self.foreground_weight * self.foreground_loss(outputs, instances)
        return losses

    def corner_loss(self, outputs: VerificationOutputs, instances: list[Instances]) -> dict[str, Tensor]:
        """Corner heatmap and offset terms, each the mean over the two corners (module docstring)."""
        priors, strides = outputs.priors[0].float(), outputs.strides[0].float()
        targets = build_corner_targets(priors, strides, instances)
        scores, offsets = outputs.corner_scores.float(), outputs.corner_offsets.float()
        heatmap, offset = 0.0, 0.0
        for k in range(2):
            positive = targets.positive[..., k]  # (B, P)
            count = mean_over_processes(positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)
            heat = penalty_reduced_focal_loss(scores[..., k], targets.heatmap[..., k], count)
            heatmap = heatmap + heat / 2
            pair = slice(2 * k, 2 * k + 2)
            smooth = masked_smooth_l1(
                offsets[..., pair], targets.offset[..., pair], positive, count, CORNER_OFFSET_BETA
            )
            offset = offset + smooth / 2
        return {
            "loss_corner_heatmap": self.heatmap_weight * heatmap,
            "loss_corner_offset": self.corner_offset_weight * offset,
        }

    def foreground_loss(self, outputs: VerificationOutputs, instances: list[Instances]) -> Tensor:
        """§1.4 over every level and class at once; the maps are built at the finest level (stride 8, P3)."""
        priors, strides = outputs.priors[0], outputs.strides[0]
        sizes = level_sizes(priors, strides)
        finest = int(strides[0].item())
        target, weight = build_foreground_targets(instances, self.num_classes, sizes[0], finest)
        target, weight = resize_to_levels(target, sizes), resize_to_levels(weight, sizes)  # (B, P, C)
        count = mean_over_processes((target > 0).sum().float()).clamp(min=1)
        return normalized_focal_loss(outputs.foreground.float(), target, weight, count)


class RepPointsV2Head(nn.Module):
    """RepPoints v2 head with its loss (decoding: ``decoders.reppoints_v2.RepPointsV2Postprocess``).

    Args:
        points: the RepPoints v1 part, built with ``guide_channels=6`` (v2's defaults: ``corner_minmax``, GIoU,
            ATSS); its towers, point stage, output assembly and loss are used as they are.
        channels: width of its towers.
        norm: its towers' norm, ``gn`` or ``none`` (also used by the shared conv and the verification branches).
        heatmap_weight: λ1 of the corner heatmap loss (0.25).
        corner_offset_weight: weight of the corner offset loss (1.0).
        foreground_weight: λ2 of the foreground loss (0.1 code, 1.0 paper).
        corner_verification: build the corner branch and fuse its maps (``points`` then needs
            ``guide_channels=6``, else 0); off only for the ablation.
        foreground_verification: build the foreground branch and add its embedding to the towers; off only for the
            ablation.
    """

    def __init__(
        self,
        points: RepPointsHead,
        channels: int,
        norm: Literal["gn", "none"] = "gn",
        heatmap_weight: float = 0.25,
        corner_offset_weight: float = 1.0,
        foreground_weight: float = 0.1,
        corner_verification: bool = True,
        foreground_verification: bool = True,
    ) -> None:
        super().__init__()
        guide_channels = VERIFICATION_CHANNELS if corner_verification else 0
        if points.refine_dcn_weight.shape[1] != channels + guide_channels:
            raise ValueError(
                f"the RepPoints part must read {channels} + {guide_channels} channels in its DCNs "
                f"(guide_channels={guide_channels}), got {points.refine_dcn_weight.shape[1]}"
            )
        self.points, self.num_classes = points, points.num_classes
        self.verification_loss = VerificationLoss(
            points.num_classes, corner_verification, foreground_verification, heatmap_weight, corner_offset_weight,
            foreground_weight,
        )  # fmt: skip
        self.shared, self.foreground, self.corners = verification_branches(
            lambda: normal_init_tower(conv_tower(channels, channels, 1, norm)), channels, points.num_classes, norm,
            corner_verification, foreground_verification,
        )  # fmt: skip

    def forward_level(self, x: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """One level (B, D, H, W) -> ``RepPointsHead.forward_level``'s maps and (``hm_score`` (B, 2, H, W),
        ``hm_offset`` (B, 4, H, W), ``sem_score`` (B, C, H, W)); a branch switched off gives 0-channel maps."""
        cls_features, reg_features = self.points.cls_tower(x), self.points.reg_tower(x)
        maps = verify(reg_features, self.shared, self.foreground, self.corners)
        if self.points.cls_branch == "points":  # the dense class branch reads its tower alone (RepPointsHead)
            cls_features = maps.embed(cls_features)
        points = self.points.point_stage(cls_features, maps.embed(reg_features), maps.guide)
        return points, (maps.corner_scores, maps.corner_offsets, maps.foreground)

    def forward(self, features: list[Tensor]) -> RepPointsV2Outputs:
        """FPN levels [(B, D, H_l, W_l)], finest first -> ``RepPointsV2Outputs``."""
        if len(features) != len(self.points.strides):
            raise ValueError(
                f"expected {len(self.points.strides)} levels (strides {self.points.strides}), got {len(features)}"
            )
        levels = [self.forward_level(x) for x in features]
        points = self.points.collect(features, [level[0] for level in levels])
        verification = [flatten_levels([level[1][i] for level in levels]) for i in range(3)]
        return RepPointsV2Outputs(*points, *verification)

    def loss(self, outputs: RepPointsV2Outputs, instances: list[Instances]) -> dict[str, Tensor]:
        """RepPoints' ``loss_cls``, ``loss_box_init``, ``loss_box_refine`` plus ``VerificationLoss``' terms (those of
        the branches built), weighted, in float32."""
        losses = self.points.loss(points_outputs(outputs), instances)
        losses.update(self.verification_loss(outputs, instances))
        return losses
