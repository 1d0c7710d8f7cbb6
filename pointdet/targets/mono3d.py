"""CenterNet monocular 3D targets (METHODS.md §2c(b)): depth, dimensions and the two-bin orientation.

The orientation is the observation angle alpha, encoded as in "Objects as Points" App. B and the official
``ddd.py``: two overlapping bins, B1 = [-7pi/6, pi/6] centred at -pi/2 and B2 = [-pi/6, 7pi/6] centred at
+pi/2; each active bin regresses ``(sin, cos)`` of the residual to its centre. The 8 rotation channels are
``[bin1 logits (inactive, active), sin1, cos1, bin2 logits (inactive, active), sin2, cos2]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.structures import Instances
from pointdet.targets.centernet import CenterNetTargets

BIN_CENTERS = (-math.pi / 2, math.pi / 2)


class Mono3DTargets(NamedTuple):
    """3D targets aligned with the M object slots of ``CenterNetTargets``.

    Attributes:
        depth: (B, M, 1) camera depth z in metres.
        dimensions: (B, M, 3) ``(h, w, l)`` in metres.
        bins: (B, M, 2) int64, 1 where alpha lies in bin 1 / bin 2.
        residuals: (B, M, 2) alpha minus each bin centre, radians.
    """

    depth: Tensor
    dimensions: Tensor
    bins: Tensor
    residuals: Tensor


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


def build_mono3d_targets(instances: list[Instances], centers: CenterNetTargets) -> Mono3DTargets:
    """Encode the ``boxes3d`` of ``instances`` for the object slots of ``centers``."""
    batch, slots = centers.mask.shape
    device = centers.heatmap.device
    depth = torch.zeros(batch, slots, 1, device=device)
    dimensions = torch.zeros(batch, slots, 3, device=device)
    bins = torch.zeros(batch, slots, 2, dtype=torch.long, device=device)
    residuals = torch.zeros(batch, slots, 2, device=device)
    for b, inst in enumerate(instances):
        if inst.boxes3d is None:
            raise ValueError("monocular 3D training needs Instances.boxes3d (a KITTI-format dataset)")
        count = int(centers.mask[b].sum())
        cuboids = inst.boxes3d.to(device)[centers.source[b, :count]].float()
        depth[b, :count, 0] = cuboids[:, 5]
        dimensions[b, :count] = cuboids[:, :3]
        bins[b, :count], residuals[b, :count] = encode_orientation(cuboids[:, 7])
    return Mono3DTargets(depth, dimensions, bins, residuals)
