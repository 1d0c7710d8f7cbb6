"""Small layer builders shared by backbones, necks and heads (no model family owns them)."""

from __future__ import annotations

from torch import nn

BN_MOMENTUM = 0.1  # PyTorch's default, written out: the official CenterNet/CornerNet code sets it explicitly


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """``kernel x kernel`` conv (no bias, "same" padding) + BatchNorm + ReLU, as a list to splice into Sequentials."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
    ]
