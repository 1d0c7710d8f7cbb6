"""Size-adaptive Gaussian heatmap targets (METHODS.md §1.1).

Two radius formulas exist. ``"cornernet"`` (variant A) solves the three quadratic cases of CornerNet
correctly; ``"centernet"`` (variant B) is the formula as written in CenterNet's code, which drops the ``2a``
divisor and gives ~3x larger radii. CenterNet was tuned with B, so its presets use B (METHODS.md App. A #1).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

RadiusMode = Literal["cornernet", "centernet"]


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7, mode: RadiusMode = "centernet") -> Tensor:
    """Radius such that a corner displaced by it still gives IoU >= ``min_overlap`` with the box.

    Args:
        height: (N,) box heights in output-map pixels (the caller applies ``ceil``).
        width: (N,) box widths in output-map pixels.
        min_overlap: the minimum IoU ``t``.
        mode: ``"cornernet"`` (variant A) or ``"centernet"`` (variant B, CenterNet's code).

    Returns:
        (N,) float radii, not yet truncated to integers.
    """
    height, width, t = height.double(), width.double(), min_overlap
    b1, c1 = height + width, width * height * (1 - t) / (1 + t)
    b2, c2 = 2 * (height + width), (1 - t) * width * height
    a3, b3, c3 = 4 * t, -2 * t * (height + width), (t - 1) * width * height
    sq1 = torch.sqrt(b1**2 - 4 * c1)
    sq2 = torch.sqrt(b2**2 - 16 * c2)
    sq3 = torch.sqrt(b3**2 - 4 * a3 * c3)
    if mode == "cornernet":
        r1, r2, r3 = (b1 - sq1) / 2, (b2 - sq2) / 8, (b3 + sq3) / (2 * a3)
    elif mode == "centernet":
        r1, r2, r3 = (b1 + sq1) / 2, (b2 + sq2) / 2, (b3 + sq3) / 2
    else:
        raise ValueError(f"radius mode must be 'cornernet' or 'centernet', got {mode!r}")
    return torch.minimum(torch.minimum(r1, r2), r3).float()


def gaussian_kernel(radius: int) -> Tensor:
    """(2r+1, 2r+1) kernel ``exp(-(i²+j²)/(2σ²))`` with ``σ = (2r+1)/6``; peak value exactly 1."""
    sigma = (2 * radius + 1) / 6
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))
    kernel[kernel < torch.finfo(torch.float32).eps * kernel.max()] = 0
    return kernel


def draw_gaussian(heatmap: Tensor, center_xy: tuple[int, int], radius: int) -> Tensor:
    """Paste a Gaussian at an integer centre with element-wise max, truncated at the border (in place).

    This is the simple per-object reference; the batched target builder must agree with it.

    Args:
        heatmap: (H, W) float map, modified in place.
        center_xy: integer ``(x, y)`` in map pixels.
        radius: integer radius ``r >= 0``.

    Returns:
        The same ``heatmap``.
    """
    kernel = gaussian_kernel(radius).to(heatmap)
    x, y = center_xy
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return heatmap
    region = heatmap[y - top : y + bottom, x - left : x + right]
    patch = kernel[radius - top : radius + bottom, radius - left : radius + right]
    torch.maximum(region, patch, out=region)
    return heatmap


def splat_gaussians(
    heatmap: Tensor, flat_channel: Tensor, centers: Tensor, radii: Tensor, chunk: int = 1 << 22
) -> Tensor:
    """Paste one Gaussian per object into ``heatmap`` with element-wise max, all objects at once.

    Equivalent to calling ``ops.draw_gaussian`` per object (tested), but batched with ``scatter_reduce`` so it
    runs on the GPU: each object contributes its ``(2R+1)^2`` window, R the largest radius in the chunk.

    Args:
        heatmap: (B, C, H, W) map, updated in place.
        flat_channel: (N,) ``batch * C + class`` of each object.
        centers: (N, 2) integer ``(x, y)`` in map pixels.
        radii: (N,) integer radii.
        chunk: soft cap on the number of window elements processed at once (bounds memory).
    """
    _, _, height, width = heatmap.shape
    flat = heatmap.view(-1)
    if len(radii) == 0:
        return heatmap
    order = radii.argsort()
    sorted_radii = radii[order].tolist()  # one host sync, then chunking is plain Python
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * (2 * sorted_radii[stop] + 1) ** 2 <= chunk:
            stop += 1
        pick, max_radius = order[start:stop], sorted_radii[stop - 1]
        steps = torch.arange(-max_radius, max_radius + 1, device=heatmap.device)
        dy, dx = torch.meshgrid(steps, steps, indexing="ij")
        dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)  # (1, S)
        r = radii[pick].to(heatmap.dtype)[:, None]  # (n, 1)
        sigma = (2 * r + 1) / 6
        values = torch.exp(-(dx**2 + dy**2).to(heatmap.dtype) / (2 * sigma * sigma))  # (n, S)
        xs, ys = centers[pick, 0:1] + dx, centers[pick, 1:2] + dy
        valid = (dx.abs() <= r) & (dy.abs() <= r) & (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        valid &= values >= torch.finfo(heatmap.dtype).eps
        target = (flat_channel[pick, None] * height + ys) * width + xs
        flat.scatter_reduce_(0, target[valid], values[valid], reduce="amax")
        start = stop
    return heatmap
