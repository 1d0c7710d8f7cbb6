"""Small layer builders shared by backbones, necks and heads (no model family owns them)."""

from __future__ import annotations

from typing import Literal

from torch import nn

BN_MOMENTUM = 0.1  # PyTorch's default, written out: the official CenterNet/CornerNet code sets it explicitly
GN_GROUPS = 32  # GroupNorm groups of the FPN-style heads (mmcv's norm_cfg=dict(type='GN', num_groups=32))

Norm = Literal["bn", "gn", "none"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """``kernel x kernel`` conv (no bias, "same" padding) + BatchNorm + ReLU, as a list to splice into Sequentials."""
    return conv_norm_relu(in_channels, out_channels, kernel, stride, norm="bn")


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """BatchNorm (``BN_MOMENTUM``), GroupNorm(32) or, for ``none``, an identity."""
    if norm == "bn":
        return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
    if norm == "gn":
        return nn.GroupNorm(GN_GROUPS, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'bn', 'gn' or 'none', got {norm!r}")


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, norm: Norm = "bn"
) -> list[nn.Module]:
    """``kernel x kernel`` conv ("same" padding; a bias only without norm) + ``norm_layer`` + ReLU, as a list."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=norm == "none")
    return [conv, norm_layer(norm, out_channels), nn.ReLU(inplace=True)]
