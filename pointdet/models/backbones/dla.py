"""DLA-34 (Yu et al. 2018, "Deep Layer Aggregation") as used by CenterNet (METHODS.md §1.13).

Module names follow the official DLA release (``base_layer``, ``level0``..``level5``, ``tree1/tree2/root``),
so ImageNet ``dla34`` checkpoints load with ``weights=``. Verified against xingyizhou/CenterNet
``src/lib/models/networks/pose_dla_dcn.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from pointdet.models.backbones.weights import IMAGENET, imagenet_weights_file, load_backbone_weights
from pointdet.ops.layers import BN_MOMENTUM, conv_bn_relu
from pointdet.structures import FeatureShape

# Tensors of the official DLA-34 file that its forward never reads: the ImageNet classifier, and the projection of
# the outer level-3/4 nodes (see ``Tree``). Official files load strictly once these are set aside.
OFFICIAL_UNUSED_PREFIXES = ("fc.", "level3.project.", "level4.project.")


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class Root(nn.Module):
    """1x1 conv + BN + ReLU over the concatenated children of a tree node."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *children: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(torch.cat(children, 1))))


class Tree(nn.Module):
    """Hierarchical deep aggregation node of ``levels`` levels (Fig. 3 of the DLA paper)."""

    def __init__(
        self,
        levels: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        level_root: bool = False,
        root_dim: int = 0,
    ) -> None:
        super().__init__()
        root_dim = root_dim or 2 * out_channels
        if level_root:
            root_dim += in_channels
        if levels == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride)
            self.tree2 = BasicBlock(out_channels, out_channels, 1)
            self.root = Root(root_dim, out_channels)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels)
        self.levels, self.level_root = levels, level_root
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        # Only a leaf node uses its projected residual (an inner node's tree1 computes its own and ignores the one
        # it is given), so inner nodes get no projection. The official tree computes one there too, and discards it:
        # the outputs are the same, and an unused parameter would break DistributedDataParallel.
        if in_channels != out_channels and levels == 1:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
            )

    def forward(self, x: Tensor, residual: Tensor | None = None, children: list[Tensor] | None = None) -> Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        residual = self.project(bottom) if self.project is not None else bottom
        if self.level_root:
            children.append(bottom)
        x1 = self.tree1(x, residual)
        if self.levels == 1:
            return self.root(self.tree2(x1), x1, *children)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA34(nn.Module):
    """DLA-34: levels [1, 1, 1, 2, 2, 1], channels [16, 32, 64, 128, 256, 512].

    Args:
        weights: optional local ImageNet ``dla34`` checkpoint in the official DLA release naming
            (e.g. ``dla34-ba72cf86.pth``), or ``imagenet`` for that file from torch's cache (downloaded once).

    Shapes:
        (B, 3, H, W) -> six maps at strides 1, 2, 4, 8, 16, 32.
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        channels = [16, 32, 64, 128, 256, 512]
        self.base_layer = nn.Sequential(*conv_bn_relu(3, channels[0], kernel=7))
        self.level0 = nn.Sequential(*conv_bn_relu(channels[0], channels[0]))
        self.level1 = nn.Sequential(*conv_bn_relu(channels[0], channels[1], stride=2))
        self.level2 = Tree(1, channels[1], channels[2], 2, level_root=False)
        self.level3 = Tree(2, channels[2], channels[3], 2, level_root=True)
        self.level4 = Tree(2, channels[3], channels[4], 2, level_root=True)
        self.level5 = Tree(1, channels[4], channels[5], 2, level_root=True)
        self.feature_shapes = tuple(
            FeatureShape(f"level{level}", width, 2**level) for level, width in enumerate(channels)
        )
        self.size_divisor = 32
        if weights == IMAGENET:
            weights = imagenet_weights_file("dla34")
        if weights is not None:
            load_backbone_weights(self, weights, OFFICIAL_UNUSED_PREFIXES, strict=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        x = self.base_layer(x)
        for level in (self.level0, self.level1, self.level2, self.level3, self.level4, self.level5):
            x = level(x)
            features.append(x)
        return features
