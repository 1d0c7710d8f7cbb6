"""Angles of monocular 3D detection: wrapping and CenterNet's two-bin orientation code (METHODS.md §2c(b)).

The orientation is the observation angle alpha, encoded as in "Objects as Points" App. B and the official
``ddd.py``: two overlapping bins, B1 = [-7pi/6, pi/6] centred at -pi/2 and B2 = [-pi/6, 7pi/6] centred at
+pi/2; each active bin regresses ``(sin, cos)`` of the residual to its centre. The 8 rotation channels are
``[bin1 logits (inactive, active), sin1, cos1, bin2 logits (inactive, active), sin2, cos2]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BIN_CENTERS = (-math.pi / 2, math.pi / 2)


def encode_orientation(alpha: Tensor) -> tuple[Tensor, Tensor]:
    """(N,) alpha in [-pi, pi] -> (N, 2) bin memberships and (N, 2) residuals to the bin centres."""
    in_first = (alpha < math.pi / 6) | (alpha > 5 * math.pi / 6)
    in_second = (alpha > -math.pi / 6) | (alpha < -5 * math.pi / 6)
    bins = torch.stack([in_first, in_second], dim=-1).long()
    residuals = torch.stack([alpha - BIN_CENTERS[0], alpha - BIN_CENTERS[1]], dim=-1)
    return bins, residuals


def decode_orientation(rotation: Tensor) -> Tensor:
    """(..., 8) rotation outputs -> (...) alpha in [-pi, pi], from the bin with the larger "active" logit."""
    first = torch.atan2(rotation[..., 2], rotation[..., 3]) + BIN_CENTERS[0]
    second = torch.atan2(rotation[..., 6], rotation[..., 7]) + BIN_CENTERS[1]
    alpha = torch.where(rotation[..., 1] > rotation[..., 5], first, second)
    return wrap_angle(alpha)


def wrap_angle(angle: Tensor) -> Tensor:
    """Angles mapped to [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
