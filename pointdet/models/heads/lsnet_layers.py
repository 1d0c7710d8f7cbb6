"""Building blocks of the LSNet head (``heads.lsnet``; METHODS.md CARD 4 (e)): the DCNv2 towers and their init, the
pyramid DCN's landmark features (``LandmarkFeatureConv``), the init stage's convs and signed DCN offsets
(``init_landmarks``) and the pose obj-box task's second regression branch (``BoxBranch``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdet.losses.cross_iou import decode_components
from pointdet.models.heads.reppoints import GROUPS, dcn_base_offset
from pointdet.ops.dcn import ModulatedDeformConv2d, deform_conv
from pointdet.targets.lsnet_tasks import BOX_BRANCH_FREE_POINTS, BOX_BRANCH_VECTORS

LandmarkFeatures = Literal["pyramid", "single", "none"]
LANDMARK_FEATURES: tuple[str, ...] = ("pyramid", "single", "none")
PyramidScaling = Literal["paper", "code"]
PYRAMID_SCALINGS: tuple[str, ...] = ("paper", "code")
KERNEL = 3  # the landmark DCN is 3 x 3


def dcn_tower(in_channels: int, channels: int, depth: int) -> nn.Sequential:
    """``depth`` x (DCNv2 3x3 with a bias -> GN(32) -> ReLU), the LSNet towers (``DCNConvModule``: its
    ``ModulatedDeformConvPack`` keeps mmdetection's default ``bias=True``; the bias starts at zero)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        dcn = ModulatedDeformConv2d(in_channels if i == 0 else channels, channels, bias=True)
        layers += [dcn, nn.GroupNorm(GROUPS, channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def normal_init_towers(towers: Sequence[nn.Sequential]) -> nn.Sequential:
    """Every conv and DCN of ``towers`` at normal(0, 0.01) with a zero bias (a DCN's offset conv stays at zero, as
    mmcv's); returns the last tower."""
    for layer in (layer for tower_layers in towers for layer in tower_layers):
        if isinstance(layer, nn.Conv2d | ModulatedDeformConv2d):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return towers[-1]


def pyramid_levels(level: int, num_levels: int) -> list[int]:
    """The levels a pyramid DCN reads for ``level``: itself and its neighbours, {0, 1, 2} at the bottom and
    {L-1, L-2, L-3} at the top (the code's order)."""
    if level == 0:
        return [0, 1, 2]
    if level == num_levels - 1:
        return [level, level - 1, level - 2]
    return [level, level - 1, level + 1]


class LandmarkFeatureConv(nn.Module):
    """Landmark features of one level: a (pyramid) point-guided DCNv1 fused with a 3x3 conv of the level, then the
    output 1x1 conv.

    Args:
        channels: D, of the hidden layers (and of the tower maps read, unless ``in_channels``).
        out_channels: outputs of the final 1x1 conv.
        mode: ``pyramid`` (read levels l-1, l, l+1, LSNet), ``single`` (level l alone) or ``none`` (no DCN, the 3x3
            conv of the level alone): the paper's Table 3 ablation.
        out_bias: initial bias of the output conv.
        in_channels: channels of the maps read, when not D (LSNet-CPV: D + the 6 corner-verification maps).
        pyramid_scaling: how the pyramid DCN's offsets reach the other levels: ``paper`` (each level's sampling
            positions, kernel grid and offsets alike, scaled by that level's size ratio) or ``code`` (the official
            ``forward_single2``: the kernel grid by the level's ratio, the offsets by the product of the ratios of
            the levels read so far, because the code rescales them in place on a shared tensor; the third level
            read gets its offsets scaled by ``r_2 * r_3`` instead of ``r_3``, e.g. 2 x 0.5 = 1 for a middle level).
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        mode: LandmarkFeatures = "pyramid",
        out_bias: float = 0.0,
        in_channels: int | None = None,
        pyramid_scaling: PyramidScaling = "paper",
    ) -> None:
        super().__init__()
        if mode not in LANDMARK_FEATURES:
            raise ValueError(f"landmark features must be one of {LANDMARK_FEATURES}, got {mode!r}")
        if pyramid_scaling not in PYRAMID_SCALINGS:
            raise ValueError(f"pyramid_scaling must be one of {PYRAMID_SCALINGS}, got {pyramid_scaling!r}")
        self.mode, self.pyramid_scaling = mode, pyramid_scaling
        in_channels = channels if in_channels is None else in_channels
        self.level_conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.out = nn.Conv2d(channels, out_channels, 1)
        convs = [self.level_conv, self.out]
        if mode != "none":
            self.dcn_weight = nn.Parameter(torch.empty(channels, in_channels, KERNEL, KERNEL))
            self.fuse = nn.Conv2d((3 if mode == "pyramid" else 1) * channels, channels, 1)
            nn.init.kaiming_uniform_(self.dcn_weight, a=math.sqrt(5))  # mmcv's kaiming_init of the DCN
            convs.append(self.fuse)
        for conv in convs:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.out.bias, out_bias)

    def forward(self, features: Sequence[Tensor], level: int, offset_yx: Tensor) -> Tensor:
        """Tower maps of every level [(B, in_channels, H_l, W_l)], this level's index and its (B, 18, H, W) DCN
        offsets -> (B, out_channels, H, W)."""
        hidden = self.level_conv(features[level])
        if self.mode != "none":
            height, width = features[level].shape[-2:]
            levels = pyramid_levels(level, len(features)) if self.mode == "pyramid" else [level]
            sampled, carried = [], (1.0, 1.0)  # ``code``: the ratios the offsets have already been scaled by
            for other in levels:
                scale = (features[other].shape[-2] / height, features[other].shape[-1] / width)
                # deform_conv scales kernel grid + offsets by ``scale``; the code's offsets carry ``carried`` more
                offsets = offset_yx if carried == (1.0, 1.0) else offset_yx * _per_axis(carried, offset_yx)
                sampled.append(deform_conv(features[other], offsets, self.dcn_weight, None, padding=1, scale=scale))
                if self.pyramid_scaling == "code":
                    carried = (carried[0] * scale[0], carried[1] * scale[1])
            hidden = hidden + F.relu(self.fuse(torch.cat(sampled, dim=1)))
        return self.out(F.relu(self.norm(hidden)))


def _per_axis(scale: tuple[float, float], offset_yx: Tensor) -> Tensor:
    """(1, 2K, 1, 1) factors ``(scale_y, scale_x)`` repeated over the K kernel points of (B, 2K, H, W) offsets."""
    factors = offset_yx.new_tensor(scale).repeat(offset_yx.shape[1] // 2)
    return factors.view(1, -1, 1, 1)


def init_landmarks(
    raw: Tensor, num_vectors: int, dcn_vectors: Tensor, gradient_mul: float, base_offset: Tensor
) -> tuple[Tensor, Tensor]:
    """Raw init output (B, 4V + 2F, H, W) -> init components (B, 4V, H, W) (softplus, stride units, vector after
    vector, ``[top, bottom, left, right]``) and the (B, 18, H, W) (dy, dx) offsets of the landmark DCN: the signed
    ``dcn_vectors`` then the F free points, passing only ``gradient_mul`` of their gradient back, less the kernel's
    ``base_offset`` (1, 18, 1, 1)."""
    components = F.softplus(raw[:, : 4 * num_vectors])
    batch, _, height, width = components.shape
    per_vector = components.view(batch, num_vectors, 4, height, width)[:, dcn_vectors]
    per_vector = per_vector.permute(0, 1, 3, 4, 2)  # (B, 9 - F, H, W, 4)
    # (B, 9 - F, 2, H, W) signed (dy, dx); explicit permutes: ONNX's Transpose takes no negative axis
    vectors_yx = decode_components(per_vector).flip(-1).permute(0, 1, 4, 2, 3)
    points_yx = torch.cat([vectors_yx.reshape(batch, -1, height, width), raw[:, 4 * num_vectors :]], dim=1)
    # The DCN sees the landmarks, but passes only gradient_mul of its gradient back to them.
    guided = (1 - gradient_mul) * points_yx.detach() + gradient_mul * points_yx
    return components, guided - base_offset.to(guided.dtype)


def init_convs(channels: int, out_channels: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The init stage's Conv3x3(D) -> (ReLU) -> Conv1x1(out), normal(0, 0.01), zero bias."""
    convs = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, out_channels, 1)
    for conv in convs:
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
    return convs


class BoxBranch(nn.Module):
    """The second regression branch of a task with one (pose obj-box's bbox branch): a tower, init convs regressing
    ``BOX_BRANCH_VECTORS`` vectors and ``BOX_BRANCH_FREE_POINTS`` free DCN points, and its landmark-feature conv.

    Args:
        tower: the branch's tower (as the head's).
        channels: D.
        mode, gradient_mul, pyramid_scaling: as ``LSNetHead``'s landmark features, gradient_mul and pyramid scaling.
    """

    def __init__(
        self,
        tower: nn.Sequential,
        channels: int,
        mode: LandmarkFeatures,
        gradient_mul: float,
        pyramid_scaling: PyramidScaling = "paper",
    ) -> None:
        super().__init__()
        self.tower, self.gradient_mul = tower, gradient_mul
        self.init_conv, self.init_out = init_convs(channels, 4 * BOX_BRANCH_VECTORS + 2 * BOX_BRANCH_FREE_POINTS)
        self.refine = LandmarkFeatureConv(channels, 4 * BOX_BRANCH_VECTORS, mode, pyramid_scaling=pyramid_scaling)
        self.register_buffer("dcn_base_offset", dcn_base_offset(KERNEL).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("dcn_vectors", torch.arange(BOX_BRANCH_VECTORS), persistent=False)

    def forward(self, features: Sequence[Tensor], level: int) -> tuple[Tensor, Tensor]:
        """Box-tower maps of every level and a level -> its (B, 20, H, W) init and refine components."""
        raw = self.init_out(F.relu(self.init_conv(features[level])))
        init, offset_yx = init_landmarks(
            raw, BOX_BRANCH_VECTORS, self.dcn_vectors, self.gradient_mul, self.dcn_base_offset
        )
        return init, F.softplus(self.refine(features, level, offset_yx) + init.detach())
