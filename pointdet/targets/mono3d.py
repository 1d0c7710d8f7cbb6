"""CenterNet monocular 3D targets (METHODS.md §2c(b)): depth, dimensions and the two-bin orientation
(encoded by ``ops.angles.encode_orientation``)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.ops.angles import encode_orientation
from pointdet.structures import Instances
from pointdet.targets.centernet import CenterNetTargets


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
