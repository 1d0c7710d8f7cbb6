"""Stacked hourglass backbones (Newell et al. 2016) as used by CornerNet and CentripetalNet (METHODS.md §1.13).

Hourglass-104 is two stacks of a 5-level hourglass over dims ``[256, 256, 384, 384, 384, 512]`` with
``[2, 2, 2, 2, 2, 4]`` residual modules per level; Hourglass-52 is one stack of it. Layout follows
xingyizhou/CenterNet ``large_hourglass.py`` (itself CornerNet's): stride-2 residuals instead of max-pools,
nearest up-sampling, merges by addition, a 3x3 conv after each hourglass and a 1x1 "inter" link between stacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pointdet.ops.layers import BN_MOMENTUM, conv_bn_relu
from pointdet.structures import FeatureShape


class Residual(nn.Module):
    """3x3 conv-BN-ReLU -> 3x3 conv-BN, plus a (1x1 conv-BN when the shape changes) skip, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(in_channels, out_channels, 3, stride),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        )
        self.skip = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.skip(x))


def residuals(in_channels: int, out_channels: int, count: int, stride: int = 1) -> nn.Sequential:
    """``count`` residual modules; the first one changes the channels (and the stride)."""
    layers = [Residual(in_channels, out_channels, stride)]
    layers += [Residual(out_channels, out_channels) for _ in range(count - 1)]
    return nn.Sequential(*layers)


class HourglassLevel(nn.Module):
    """One recursive level: a full-resolution branch added to down -> inner level -> up.

    Args:
        dims: channels from this level inwards (``dims[0]`` here, ``dims[1]`` one level down, ...).
        modules: residual modules per level, same length as ``dims``.
    """

    def __init__(self, dims: Sequence[int], modules: Sequence[int]) -> None:
        super().__init__()
        current, inner = dims[0], dims[1]
        self.skip = residuals(current, current, modules[0])
        self.down = residuals(current, inner, modules[0], stride=2)
        if len(dims) > 2:
            self.inner = HourglassLevel(dims[1:], modules[1:])
        else:
            self.inner = residuals(inner, inner, modules[1])
        self.up = nn.Sequential(*(Residual(inner, inner) for _ in range(modules[0] - 1)), Residual(inner, current))

    def forward(self, x: Tensor) -> Tensor:
        low = self.up(self.inner(self.down(x)))
        return self.skip(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class Hourglass(nn.Module):
    """Stem (7x7 s2 conv + stride-2 residual, stride 4) and ``num_stacks`` hourglasses.

    Args:
        num_stacks: 2 for Hourglass-104, 1 for Hourglass-52.
        dims: channels per level, outermost first (its length - 1 is the number of down-samplings).
        modules: residual modules per level.
        stem_channels: channels of the 7x7 stem conv.
        out_channels: channels of each stack's output (``cnv_dim``).

    Shapes:
        (B, 3, H, W) -> list of ``num_stacks`` maps (B, out_channels, H/4, W/4), last stack last; H and W must be
        multiples of ``size_divisor`` (``Detector.preprocess`` zero-pads to it, as the reference's test-time pad).
    """

    def __init__(
        self,
        num_stacks: int = 2,
        dims: Sequence[int] = (256, 256, 384, 384, 384, 512),
        modules: Sequence[int] = (2, 2, 2, 2, 2, 4),
        stem_channels: int = 128,
        out_channels: int = 256,
    ) -> None:
        super().__init__()
        if len(dims) != len(modules) or len(dims) < 2:
            raise ValueError(f"hourglass dims {tuple(dims)} and modules {tuple(modules)} need equal lengths >= 2")
        self.num_stacks = num_stacks
        self.size_divisor = 4 * 2 ** (len(dims) - 1)
        # Stacks are not pyramid levels: every stack is a full stride-4 map, intermediate ones for supervision.
        self.feature_shapes = tuple(FeatureShape(f"stack{i + 1}", out_channels, 4) for i in range(num_stacks))
        width = dims[0]
        self.stem = nn.Sequential(*conv_bn_relu(3, stem_channels, 7, 2), Residual(stem_channels, width, stride=2))
        self.hourglasses = nn.ModuleList(HourglassLevel(dims, modules) for _ in range(num_stacks))
        self.outputs = nn.ModuleList(nn.Sequential(*conv_bn_relu(width, out_channels)) for _ in range(num_stacks))
        self.inter_skip = nn.ModuleList(_conv1x1_bn(width, width) for _ in range(num_stacks - 1))
        self.inter_out = nn.ModuleList(_conv1x1_bn(out_channels, width) for _ in range(num_stacks - 1))
        self.inter = nn.ModuleList(Residual(width, width) for _ in range(num_stacks - 1))

    def forward(self, images: Tensor) -> list[Tensor]:
        inter = self.stem(images)
        features = []
        for index in range(self.num_stacks):
            feature = self.outputs[index](self.hourglasses[index](inter))
            features.append(feature)
            if index < self.num_stacks - 1:
                inter = self.inter[index](F.relu(self.inter_skip[index](inter) + self.inter_out[index](feature)))
        return features


def _conv1x1_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
    )


def hourglass104() -> Hourglass:
    return Hourglass(num_stacks=2)


def hourglass52() -> Hourglass:
    return Hourglass(num_stacks=1)


def hourglass_small() -> Hourglass:
    """A CPU-sized hourglass for the shapes data: one stack, 3 down-samplings, 32-64 channels."""
    return Hourglass(num_stacks=1, dims=(48, 64, 64, 96), modules=(1, 1, 1, 2), stem_channels=32, out_channels=64)
