"""Chamfer distance between point sets (Dense RepPoints' point-set loss, METHODS.md CARD 5 §5.2).

Scalsol/RepPointsV2 ``mmdet/models/losses/chamfer_loss.py`` (``ChamferLoss2D`` with its CUDA kernel), as
summarised here, no code copied: for sets A and B, ``(mean_a min_b |a - b| + mean_b min_a |a - b|) / 2`` with
Euclidean distances, each distance ``sqrt(max(squared distance, eps))`` so the gradient stays finite when points
coincide (``eps`` 1e-12).
"""

from __future__ import annotations

from torch import Tensor

CHAMFER_EPS = 1e-12


def chamfer_distance(first: Tensor, second: Tensor, eps: float = CHAMFER_EPS) -> Tensor:
    """Symmetric mean nearest-neighbour distance of two point sets (module docstring).

    Args:
        first: (..., N, D) points.
        second: (..., M, D) points, the same leading dimensions.
        eps: floor of the squared distances.

    Returns:
        (...) distances, in the points' units.
    """
    if first.shape[:-2] != second.shape[:-2] or first.shape[-1] != second.shape[-1]:
        raise ValueError(f"point sets of shapes {tuple(first.shape)} and {tuple(second.shape)} do not pair up")
    squared = (first[..., :, None, :] - second[..., None, :, :]).square().sum(dim=-1)  # (..., N, M)
    distance = squared.clamp(min=eps).sqrt()
    return (distance.amin(dim=-1).mean(dim=-1) + distance.amin(dim=-2).mean(dim=-1)) / 2
