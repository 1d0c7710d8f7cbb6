"""Feature-map locations in image pixels, for the point-based heads (RepPoints, LSNet).

The point of feature cell (i, j) at stride s is ``(j·s, i·s)`` with **no** ``+s/2`` shift, as in RepPoints'
``PointGenerator`` (METHODS.md CARD 5 "Location convention"; Scalsol/RepPointsV2
mmdet/core/anchor/point_generator.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


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
        ``(points, point_strides)``: (P, 2) xy in image pixels and (P,) float strides, ``P = sum(H_l * W_l)``.
    """
    if len(sizes) != len(strides):
        raise ValueError(f"sizes has {len(sizes)} levels but strides has {len(strides)}")
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
