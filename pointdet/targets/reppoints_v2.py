"""RepPoints v2 verification targets (METHODS.md CARD 5 §5.1 (b) and §1.4): pure functions of the GT and the
prior layout.

**Corner verification** (Scalsol/RepPointsV2 mmdet/core/bbox/assigners/point_hm_assigner.py ``PointHMAssigner``
with ``gaussian_bump=True, gaussian_iou=0.7``, as summarised in the card; no code of theirs was copied): per GT
and per FPN level independently, the location nearest (Euclidean, image pixels) to the GT's top-left corner is
positive (target 1), and likewise for the bottom-right corner; every other location at distance ``d < r`` from
the corner gets ``exp(-d² / (2σ²))``, with ``r`` CornerNet's radius (variant A, ``min_overlap`` 0.7) of the
box in **pixels** and ``σ = (2r + 1) / 6``, the max over GTs. Positives regress ``(corner - location) / stride``.
The supplementary's CornerNet convention (⌊p/s⌋, inverse Gaussian) is not the code's, and the card follows the code.

**Foreground verification** (``LoadRPDV2Annotations``): per class a map at stride 8 over the padded image;
each GT fills ``[⌊y1/8⌋ : ⌊y2/8⌋ + 1, ⌊x1/8⌋ : ⌊x2/8⌋ + 1]`` with target 1 and weight ``1 / area`` (area in
pixels²); boxes are drawn from the largest to the smallest, so the smallest object wins where boxes of one class
overlap. The maps are then nearest-resized to each level (``resize_to_levels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pointdet.ops.gaussian import gaussian_radius
from pointdet.structures import Instances

CORNER_MIN_OVERLAP = 0.7  # the assigner's gaussian_iou
FOREGROUND_STRIDE = 8


class CornerVerificationTargets(NamedTuple):
    """Per-prior corner targets of a batch, corner ``k`` = 0 top-left, 1 bottom-right.

    Attributes:
        heatmap: (B, P, 2) Gaussian targets, exactly 1 at positives.
        offset: (B, P, 4) ``(dx, dy)`` of the top-left then the bottom-right corner, in stride units, at positives
            (zeros elsewhere).
        positive: (B, P, 2) bool, where ``heatmap == 1``.
    """

    heatmap: Tensor
    offset: Tensor
    positive: Tensor


def corner_image_targets(priors: Tensor, strides: Tensor, boxes: Tensor) -> CornerVerificationTargets:
    """Corner targets of one image (fields without the batch dimension).

    Args:
        priors: (P, 2) xy locations in image pixels, level after level.
        strides: (P,) stride of each location.
        boxes: (G, 4) xyxy GT boxes in image pixels.
    """
    num_priors = len(priors)
    heatmap = priors.new_zeros(num_priors, 2)
    offset = priors.new_zeros(num_priors, 4)
    if len(boxes) == 0 or num_priors == 0:
        return CornerVerificationTargets(heatmap, offset, heatmap == 1)
    size = boxes[:, 2:] - boxes[:, :2]  # (G, 2) wh
    radius = gaussian_radius(size[:, 1], size[:, 0], CORNER_MIN_OVERLAP, "cornernet").to(priors)  # (G,)
    sigma = (2 * radius + 1) / 6
    level_strides = torch.unique_consecutive(strides).tolist()
    for k, corner in enumerate((boxes[:, :2], boxes[:, 2:])):
        distance = torch.cdist(priors, corner.to(priors))  # (P, G) pixels
        gaussian = torch.exp(-distance.square() / (2 * sigma.square()))
        gaussian = torch.where(distance < radius, gaussian, 0.0)
        heatmap[:, k] = gaussian.amax(dim=1)
        for stride in level_strides:
            on_level = strides == stride
            nearest = torch.where(on_level[:, None], distance, torch.inf).argmin(dim=0)  # (G,) first of ties
            heatmap[nearest, k] = 1.0
            offset[nearest, 2 * k : 2 * k + 2] = (corner - priors[nearest]) / stride
    return CornerVerificationTargets(heatmap, offset, heatmap == 1)


def build_corner_targets(priors: Tensor, strides: Tensor, instances: Sequence[Instances]) -> CornerVerificationTargets:
    """``corner_image_targets`` of every image, stacked: (B, P, ...) fields."""
    per_image = [corner_image_targets(priors, strides, inst.boxes.to(priors)) for inst in instances]
    return CornerVerificationTargets(*(torch.stack(field) for field in zip(*per_image, strict=True)))


def foreground_image_targets(
    boxes: Tensor, labels: Tensor, num_classes: int, size: tuple[int, int], stride: int = FOREGROUND_STRIDE
) -> tuple[Tensor, Tensor]:
    """Box-filled foreground map of one image.

    Args:
        boxes: (G, 4) xyxy GT boxes in image pixels.
        labels: (G,) classes ``0..C-1``.
        num_classes: C.
        size: ``(H, W)`` of the map (the padded image / ``stride``, the P3 map).
        stride: image pixels per map cell (8).

    Returns:
        ``(target, weight)``, each (C, H, W): 1 / ``1 / area`` of the smallest same-class box covering a cell,
        0 elsewhere.
    """
    height, width = size
    target = boxes.new_zeros(num_classes, height, width)
    weight = boxes.new_zeros(num_classes, height, width)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cells = torch.div(boxes, stride, rounding_mode="floor").long().tolist()
    for index in area.argsort(descending=True).tolist():  # the smallest box is drawn last and wins
        x1, y1, x2, y2 = cells[index]
        x1, y1 = max(x1, 0), max(y1, 0)
        label = int(labels[index])
        target[label, y1 : y2 + 1, x1 : x2 + 1] = 1.0
        weight[label, y1 : y2 + 1, x1 : x2 + 1] = 1.0 / area[index].clamp(min=1.0)
    return target, weight


def build_foreground_targets(
    instances: Sequence[Instances], num_classes: int, size: tuple[int, int], stride: int = FOREGROUND_STRIDE
) -> tuple[Tensor, Tensor]:
    """``foreground_image_targets`` of every image: ``(target, weight)``, each (B, C, H, W)."""
    per_image = [
        foreground_image_targets(inst.boxes.float(), inst.labels, num_classes, size, stride) for inst in instances
    ]
    return torch.stack([t for t, _ in per_image]), torch.stack([w for _, w in per_image])


def resize_to_levels(maps: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
    """(B, C, H, W) maps -> (B, P, C) nearest-resized to every level (``F.interpolate``'s default mode, as the
    code), flattened row-major and concatenated level after level like the head's outputs."""
    resized = [F.interpolate(maps, size=tuple(size)).flatten(2).transpose(1, 2) for size in sizes]
    return torch.cat(resized, dim=1)
