"""What the RepPoints family's heads produce and its decoders read: ``RepPointsOutputs`` and the point-set-to-box
transform ``points_to_boxes`` (one owner below both the heads and the decoders).

``points_to_boxes`` is the point-set-to-box transform of RepPoints (Yang et al. ICCV 2019, §3.2 "pseudo box";
open-mmlab/mmdetection v2.x mmdet/models/dense_heads/reppoints_head.py ``points2bbox``; ``exact_minmax`` from
Scalsol/RepPointsV2 mmdet/models/dense_heads/reppoints_head.py). The head's loss uses it too, so training and
decoding read the same boxes.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

Transform = Literal["minmax", "partial_minmax", "moment", "exact_minmax", "corner_minmax"]
TRANSFORMS: tuple[str, ...] = ("minmax", "partial_minmax", "moment", "exact_minmax", "corner_minmax")
CORNER_POINTS = 2  # exact_minmax / corner_minmax: points 0 and 1 are the box corners
CORNER_TRANSFORMS: tuple[str, ...] = ("exact_minmax", "corner_minmax")  # the box is the extent of points 0, 1


def points_to_boxes(points: Tensor, transform: Transform, moment_transfer: Tensor | None = None) -> Tensor:
    """Pseudo boxes of point sets.

    - ``minmax``: the extent of all points; ``partial_minmax``: the extent of the first 4 points.
    - ``moment``: ``mean ± std * exp(moment_transfer)`` per axis, std unbiased (``torch.std``, as mmdetection);
      ``moment_transfer`` is ``(log width factor, log height factor)``.
    - ``exact_minmax`` (the RepPoints v2 code): point 0 is ``(x1, y1)`` and point 1 is ``(x2, y2)``. A pair that
      crosses over gives an inverted box, which no box loss can turn back: its overlap with any GT is 0.
    - ``corner_minmax`` (pointdet's RepPoints v2 default): the extent of points 0 and 1, equal to ``exact_minmax``
      whenever point 0 is above and left of point 1, and a valid box when the pair crosses over.

    Args:
        points: (..., N, 2) xy. The transforms commute with ``points * stride + prior``, so pixels in gives pixels
            out and stride units in gives stride units out.
        transform: one of ``TRANSFORMS``.
        moment_transfer: for ``moment`` only, a tensor broadcastable to (..., 2): (2,) or, for (B, P, N, 2) points,
            (B, 1, 2). None means 0.

    Returns:
        (..., 4) xyxy boxes in the units of ``points``.
    """
    if points.shape[-1] != 2:
        raise ValueError(f"points must be (..., N, 2) xy, got shape {tuple(points.shape)}")
    if transform in ("minmax", "partial_minmax", "corner_minmax"):
        subset = {
            "minmax": points,
            "partial_minmax": points[..., :4, :],
            "corner_minmax": points[..., :CORNER_POINTS, :],
        }
        return torch.cat([subset[transform].amin(dim=-2), subset[transform].amax(dim=-2)], dim=-1)
    if transform == "exact_minmax":
        return points[..., :CORNER_POINTS, :].flatten(-2)
    if transform == "moment":
        mean = points.mean(dim=-2)  # (..., 2)
        half = points.std(dim=-2)  # (..., 2) unbiased, as mmdetection's torch.std
        if moment_transfer is not None:
            half = half * moment_transfer.exp()
        return torch.cat([mean - half, mean + half], dim=-1)
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


class RepPointsOutputs(NamedTuple):
    """Raw head outputs, flattened over levels (p3..p7, row-major within a level, as ``ops.priors.level_points``).

    Every field leads with the batch dimension, so a batch can be split (the flip test runs both passes at once).

    Attributes:
        scores: (B, P, C) class logits.
        points_init: (B, P, 2N) init points in absolute input-image pixels, xy interleaved
            (``view(B, P, N, 2)`` gives N ``(x, y)``): ``prior + (dx, dy) * stride``.
        points_refine: (B, P, 2N) refine points, same convention.
        priors: (B, P, 2) prior xy in image pixels (an expanded view).
        strides: (B, P) float stride of each prior.
        moment_transfer: (B, 2) ``(log width, log height)`` factors of the ``moment`` transform, gradient already
            scaled by 0.01 (an expanded view of the head's parameter); zeros for the other transforms. Carried in
            the outputs so the loss and the decoder need nothing but the outputs.
    """

    scores: Tensor
    points_init: Tensor
    points_refine: Tensor
    priors: Tensor
    strides: Tensor
    moment_transfer: Tensor
