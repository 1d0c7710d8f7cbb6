"""Res2Net-v1d (Gao et al., TPAMI 2021, "Res2Net: A New Multi-scale Backbone Architecture") as mmdetection's
``Res2Net`` builds it (the backbone of LSNet's R2-101 models), returning C2..C5.

A bottleneck splits its 1x1 conv's output into ``scales`` groups of ``width`` channels; group i > 0 goes through its
own 3x3 conv after adding the previous group's output (hierarchical residual), the last group passes unchanged, and
the concatenation goes through the 1x1 conv out. The first block of a stage (mmdetection's ``stage_type='stage'``)
feeds every group its own split only and average-pools the last group (3x3, the stage's stride) when it strides; its
shortcut average-pools (``ceil_mode``, padding not counted) before a 1x1 conv + BN. The "v1d" stem is three 3x3
convs (32, 32, 64 channels, the first of stride 2) + max-pool. DCNv2 may replace the 3x3 convs of chosen stages (LSNet's
``dconv_c3-c5``). Parameter names are mmdetection's (``stem``, ``layerN.k.conv1/bn1/convs.i/bns.i/conv3/bn3``,
``downsample.1/2``), so its ImageNet file (``res2net101_v1d_26w_4s_mmdetv2-*.pth``) loads as it is.

Facts derived from Duankaiwen/LSNet code/mmdet/models/backbones/res2net.py (``Bottle2neck``, ``Res2Layer``,
``Res2Net``) and resnet.py (``_make_stem_layer``); no code of theirs was copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from pointdet.models.backbones.resnet import StagedBackbone, _deformable_like
from pointdet.models.backbones.weights import IMAGENET, WeightsError, load_backbone_weights
from pointdet.structures import FeatureShape

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EXPANSION = 4
# ``model.backbone`` names -> ``Res2Net`` arguments (LSNet's R2-101: mmdetection's Res2Net-101 v1d, 26w x 4s).
RES2NETS: dict[str, dict[str, int]] = {"res2net101_v1d": {"depth": 101, "scales": 4, "base_width": 26}}


class Bottle2neck(nn.Module):
    """One Res2Net bottleneck.

    Args:
        in_channels: channels of the input.
        planes: the stage's base channels (64, 128, 256, 512); the output has ``4 * planes``.
        stride: of the 3x3 convs (and of the shortcut's pooling).
        scales: groups of the split (4).
        base_width: channels per group for ``planes = 64`` (26): ``width = planes * base_width // 64``.
        first: the stage's first block (own splits, pooled last group, a projected shortcut).
        norm_layer: the BatchNorm class.
    """

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        scales: int,
        base_width: int,
        first: bool,
        norm_layer: type[nn.Module],
    ) -> None:
        super().__init__()
        self.width, self.first = planes * base_width // 64, first
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, self.width * scales, 1, bias=False)
        self.bn1 = norm_layer(self.width * scales)
        self.convs = nn.ModuleList(
            nn.Conv2d(self.width, self.width, 3, stride, 1, bias=False) for _ in range(scales - 1)
        )
        self.bns = nn.ModuleList(norm_layer(self.width) for _ in range(scales - 1))
        self.conv3 = nn.Conv2d(self.width * scales, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(3, stride, 1) if first and stride != 1 else None
        self.downsample = None
        if first:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                norm_layer(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        splits = self.relu(self.bn1(self.conv1(x))).split(self.width, dim=1)
        pieces: list[Tensor] = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.bns, strict=True)):
            group = splits[i] if i == 0 or self.first else pieces[-1] + splits[i]
            pieces.append(self.relu(norm(conv(group))))
        pieces.append(splits[-1] if self.pool is None else self.pool(splits[-1]))
        out = self.bn3(self.conv3(torch.cat(pieces, dim=1)))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Res2Net(StagedBackbone):
    """Res2Net-v1d without its classifier.

    Args:
        depth: 50 or 101.
        weights: optional local ImageNet file in mmdetection's naming (``imagenet`` by name is not available:
            torchvision has no Res2Net).
        frozen_stages, norm, dcn_stages: as ``ResNet``'s (the DCNs replace every 3x3 conv of a chosen stage's blocks).
        scales, base_width: Res2Net's split (4 x 26w for the ``26w_4s`` models).

    Shapes:
        (B, 3, H, W) -> [C2, C3, C4, C5] at strides 4, 8, 16, 32 (256 to 2048 channels).
    """

    def __init__(
        self,
        depth: int = 101,
        weights: str | Path | None = None,
        *,
        frozen_stages: int = 0,
        norm: Literal["bn", "frozen_bn"] = "bn",
        dcn_stages: tuple[bool, bool, bool, bool] = (False, False, False, False),
        scales: int = 4,
        base_width: int = 26,
    ) -> None:
        super().__init__()
        if depth not in BLOCKS:
            raise ValueError(f"Res2Net depth must be one of {sorted(BLOCKS)}, got {depth}")
        if weights == IMAGENET:
            raise WeightsError(
                "model.backbone_weights=imagenet: torchvision has no Res2Net; give mmdetection's ImageNet file "
                "(res2net101_v1d_26w_4s_mmdetv2-*.pth) as model.backbone_weights"
            )
        norm_layer = FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
        self.stem = nn.Sequential(
            *_conv_norm_relu(3, 32, 2, norm_layer), *_conv_norm_relu(32, 32, 1, norm_layer),
            *_conv_norm_relu(32, 64, 1, norm_layer), nn.MaxPool2d(3, 2, 1),
        )  # fmt: skip
        for stage, blocks in enumerate(BLOCKS[depth]):
            planes, stride = 64 * 2**stage, 1 if stage == 0 else 2
            in_channels = 64 if stage == 0 else planes * EXPANSION // 2
            layer = [
                Bottle2neck(in_channels if block == 0 else planes * EXPANSION, planes, stride if block == 0 else 1,
                            scales, base_width, block == 0, norm_layer)
                for block in range(blocks)
            ]  # fmt: skip
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        if weights is not None:
            load_backbone_weights(self, weights)  # before the DCN swap: the file's conv weights land in the DCNs
        for layer, deformable in zip(self._stages()[1:], dcn_stages, strict=True):
            for block in layer if deformable else ():
                block.convs = nn.ModuleList(_deformable_like(conv) for conv in block.convs)
        self._freeze(frozen_stages)
        self.feature_shapes = tuple(FeatureShape(f"c{level}", 64 * 2**level, 2**level) for level in range(2, 6))
        self.size_divisor = 32


def _conv_norm_relu(in_channels: int, out_channels: int, stride: int, norm_layer: type[nn.Module]) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), norm_layer(out_channels), nn.ReLU(True)]
