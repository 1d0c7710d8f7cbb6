"""The small conv branch every dense head is made of: 3x3 conv -> ReLU -> 1x1 conv."""

from __future__ import annotations

from torch import nn


def prediction_branch(in_channels: int, hidden: int, out_channels: int, bias: float = 0.0) -> nn.Sequential:
    """3x3 conv (``hidden`` channels) + ReLU + 1x1 conv to ``out_channels`` whose bias starts at ``bias``."""
    branch = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)
    )
    nn.init.constant_(branch[-1].bias, bias)
    return branch
