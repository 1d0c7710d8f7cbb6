"""Feature-map locations in image pixels, for the point-based heads (RepPoints, LSNet).

The point of feature cell (i, j) at stride s is ``(j·s, i·s)`` with **no** ``+s/2`` shift, as in RepPoints'
``PointGenerator`` (METHODS.md CARD 5 "Location convention"; Scalsol/RepPointsV2
mmdet/core/anchor/point_generator.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pointdet.ops.constants import cached_constant


def grid_points(
    height: int,
    width: int,
    stride: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Locations of one feature map.

    Args:
        height: feature-map height H.
        width: feature-map width W.
        stride: feature-map stride in image pixels.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        (H*W, 2) xy in image pixels, row-major: row ``i*W + j`` is ``(j*stride, i*stride)``.
    """
    ys = torch.arange(height, device=device, dtype=dtype) * stride
    xs = torch.arange(width, device=device, dtype=dtype) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def level_points(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Locations of all pyramid levels, concatenated level after level.

    Args:
        sizes: L feature-map sizes ``(H_l, W_l)``.
        strides: L strides in image pixels.
        device: device of the results.

    Returns:
        ``(points, point_strides)``: (P, 2) xy in image pixels and (P,) float strides, ``P = sum(H_l * W_l)``;
        made once per sizes, strides and device (``ops.constants``), not to be modified in place.
    """
    if len(sizes) != len(strides):
        raise ValueError(f"sizes has {len(sizes)} levels but strides has {len(strides)}")
    key = ("level_points", tuple(map(tuple, sizes)), tuple(strides), str(torch.device(device or "cpu")))
    return cached_constant(key, lambda: _level_points(sizes, strides, device))


def _level_points(
    sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device | str | None
) -> tuple[Tensor, Tensor]:
    points, point_strides = [], []
    for (height, width), stride in zip(sizes, strides, strict=True):
        points.append(grid_points(height, width, stride, device))
        point_strides.append(torch.full((height * width,), float(stride), device=device))
    return torch.cat(points), torch.cat(point_strides)


def level_sizes(priors: Tensor, strides: Tensor) -> list[tuple[int, int]]:
    """The ``(H_l, W_l)`` of each level, finest first, read back from ``level_points``' output.

    Args:
        priors: (P, 2) xy locations, level after level, row-major within a level.
        strides: (P,) stride of each location.
    """
    sizes = []
    for stride, count in zip(*torch.unique_consecutive(strides, return_counts=True), strict=True):
        level = priors[strides == stride]
        width = int(torch.round(level[:, 0].max() / stride).item()) + 1
        sizes.append((int(count) // width, width))
    return sizes


MAX_LEVELS = 8  # most pyramid levels the tensor-only level functions below tell apart


def prior_levels(strides: Tensor) -> Tensor:
    """(B, P) level index of every prior (0 = finest) from the (B, P) strides of ``level_points``' layout (levels in
    contiguous runs, finest first): tensor ops only, no host sync."""
    change = (strides[:, 1:] != strides[:, :-1]).long()
    return F.pad(change.cumsum(dim=1), (1, 0))


def rank_within_levels(values: Tensor, levels: Tensor) -> Tensor:
    """(B, P) rank of every value among those of its level, 0 for the largest (equal values in ``sort``'s order).

    One sort of all priors, then a running count per level: ONNX-exportable (no stable sort) and free of host syncs.

    Args:
        values: (B, P) values of every prior.
        levels: (B, P) ``prior_levels``, below ``MAX_LEVELS``.
    """
    order = values.sort(dim=1, descending=True).indices
    on_level = levels.gather(1, order)[..., None] == torch.arange(MAX_LEVELS, device=levels.device)  # (B, P, L)
    running = (on_level.long().cumsum(dim=1) * on_level).sum(dim=-1) - 1  # (B, P) rank in sorted order
    return torch.zeros_like(order).scatter(1, order, running)


class LevelGrids(NamedTuple):
    """Where the maps of some pyramid levels lie in the flattened priors; every field is (B, L').

    Attributes:
        start: index of the level's first prior.
        width, height: the map's size.
        stride: its stride (float).
    """

    start: Tensor
    width: Tensor
    height: Tensor
    stride: Tensor


def level_grids(priors: Tensor, strides: Tensor, levels: Tensor, count: int) -> LevelGrids:
    """The ``LevelGrids`` of levels ``0..count-1`` from ``level_points``' layout, tensor ops only (a level that
    does not exist gets an infinite stride, width 1 and height 0).

    Args:
        priors: (B, P, 2) xy locations; strides: (B, P); levels: (B, P) ``prior_levels``.
    """
    index = torch.arange(count, device=levels.device)
    on_level = levels[..., None] == index  # (B, P, L')
    start = (levels[..., None] < index).sum(dim=1)
    stride = torch.where(on_level, strides[..., None], float("inf")).amin(dim=1)
    last_x = torch.where(on_level, priors[..., :1], -1.0).amax(dim=1)
    width = last_x.div(stride).round().long() + 1
    height = torch.div(on_level.sum(dim=1), width, rounding_mode="floor")
    return LevelGrids(start, width, height, stride)
