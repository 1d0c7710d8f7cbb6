"""Dense RepPoints v2 targets (METHODS.md CARD 5 §5.2): pure functions of the GT masks, polygons and the prior
layout. The box and class targets are RepPoints' (``targets.reppoints``: point assigner, then ATSS).

Facts derived from Scalsol/RepPointsV2 ``dense_reppoints_v2_head.py`` (``distance_sample_pts``, ``loss_single``,
``_dense_point_target_single``), ``point_ct_assigner.py`` and ``loading_reppointsv2.py``
(``LoadDenseRPDV2Annotations``), as summarised in the card; no code of theirs was copied.

- **Point-set targets** (the Chamfer loss): ``count`` points on the GT contour of the assigned object. The code
  draws them at random from a 2-px band around the contour of the object's mask resized to 56 x 56 (jittered);
  here they are the contour of the object's largest polygon part resampled by edge length (``Contours``, shared
  with LSNet), deterministic and exactly on the contour.
- **Point mask-score targets**: whether each (detached) init point lies inside the assigned object's mask.
- **Contour heatmap** (class-agnostic, one channel): every pixel of the objects' contour band — the pixels where a
  3 x 3 dilation and erosion of the mask differ, a 2-px band across the boundary as the code's 2-px polylines —
  taken at its centre ``(j + 0.5, i + 0.5)``; on each level the cell ``round(p / stride)`` is positive and
  regresses ``p / stride - cell``. Several pixels fall in one cell: the code keeps the last one drawn (an order
  it does not fix), here the mean of their offsets.
- **Semantic foreground map**: the category of every pixel at stride 8 (masks resized by nearest, later objects
  over earlier ones, as the code's drawing order), one-hot per class, nearest-resized to every level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pointdet.ops.masks import crop_masks
from pointdet.ops.priors import level_sizes
from pointdet.structures import Instances
from pointdet.targets.lsnet_tasks import Contours
from pointdet.targets.reppoints_v2 import FOREGROUND_STRIDE, resize_to_levels

BAND_GRID = 56  # box-relative grid the band targets are drawn on (the code's training ``mask_size``)


class ContourTargets(NamedTuple):
    """Per-prior contour-verification targets of a batch.

    Attributes:
        heatmap: (B, P) 1 at contour cells, 0 elsewhere.
        offset: (B, P, 2) ``(dx, dy)`` from the cell to the contour, in stride units, at positives (0 elsewhere).
        positive: (B, P) bool.
    """

    heatmap: Tensor
    offset: Tensor
    positive: Tensor


def boundary_bands(masks: Tensor) -> Tensor:
    """(G, H, W) binary masks -> (G, H, W) bool: the pixels where a 3 x 3 dilation and a 3 x 3 erosion of each mask
    differ (the 2-px band across its boundary)."""
    filled = masks.float()[:, None]
    dilated = F.max_pool2d(filled, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-filled, 3, stride=1, padding=1)
    return (dilated != eroded)[:, 0]


def contour_band(masks: Tensor) -> Tensor:
    """(G, H, W) binary masks -> (H, W) bool: the pixels of some object's ``boundary_bands``."""
    if len(masks) == 0:
        return torch.zeros(masks.shape[-2:], dtype=torch.bool, device=masks.device)
    return boundary_bands(masks).any(dim=0)


def contour_image_targets(priors: Tensor, strides: Tensor, masks: Tensor) -> ContourTargets:
    """Contour targets of one image (fields without the batch dimension).

    Args:
        priors: (P, 2) xy locations in image pixels, level after level, row-major within a level.
        strides: (P,) stride of each location.
        masks: (G, H, W) binary GT masks in image pixels.
    """
    num_priors = len(priors)
    heatmap, offset = priors.new_zeros(num_priors), priors.new_zeros(num_priors, 2)
    rows, columns = contour_band(masks.to(priors.device)).nonzero(as_tuple=True)
    pixels = torch.stack([columns, rows], dim=1).to(priors.dtype) + 0.5  # (K, 2) xy pixel centres
    total = priors.new_zeros(num_priors, 2)
    count = priors.new_zeros(num_priors)
    start = 0
    for (height, width), stride in zip(
        level_sizes(priors, strides), torch.unique_consecutive(strides).tolist(), strict=True
    ):
        scaled = pixels / stride
        cell = scaled.round()
        inside = (cell[:, 0] < width) & (cell[:, 1] < height)
        index = start + (cell[inside, 1] * width + cell[inside, 0]).long()
        total.index_add_(0, index, (scaled - cell)[inside])
        count.index_add_(0, index, torch.ones_like(index, dtype=count.dtype))
        start += height * width
    positive = count > 0
    heatmap[positive] = 1.0
    offset[positive] = total[positive] / count[positive, None]
    return ContourTargets(heatmap, offset, positive)


def build_contour_targets(priors: Tensor, strides: Tensor, instances: Sequence[Instances]) -> ContourTargets:
    """``contour_image_targets`` of every image, stacked: (B, P, ...) fields."""
    per_image = [contour_image_targets(priors, strides, inst.masks) for inst in instances]
    return ContourTargets(*(torch.stack(field) for field in zip(*per_image, strict=True)))


def semantic_image_targets(masks: Tensor, labels: Tensor, num_classes: int, size: tuple[int, int]) -> Tensor:
    """(C, h, w) one-hot category map of one image at the finest level's ``size``: the masks nearest-resized, later
    objects drawn over earlier ones."""
    target = masks.new_zeros((num_classes, *size), dtype=torch.float32)
    if len(masks) == 0:
        return target
    small = F.interpolate(masks[None].float(), size=size)[0] > 0  # (G, h, w)
    category = torch.full(size, -1, dtype=torch.long, device=masks.device)
    for mask, label in zip(small, labels.tolist(), strict=True):
        category[mask] = label
    drawn = category >= 0
    rows, columns = drawn.nonzero(as_tuple=True)
    target[category[drawn], rows, columns] = 1.0
    return target


def build_semantic_targets(instances: Sequence[Instances], num_classes: int, priors: Tensor, strides: Tensor) -> Tensor:
    """(B, P, C) one-hot semantic targets of every prior: the map at stride 8 (the finest level) resized to every
    level, flattened like the head's outputs."""
    sizes = level_sizes(priors, strides)
    finest = int(strides[0].item())
    if finest != FOREGROUND_STRIDE:
        raise ValueError(f"the semantic map is built at stride {FOREGROUND_STRIDE}, the finest level has {finest}")
    maps = torch.stack([semantic_image_targets(inst.masks, inst.labels, num_classes, sizes[0]) for inst in instances])
    return resize_to_levels(maps.to(priors.device), sizes)


def contour_point_sets(instances: Instances, count: int) -> Tensor:
    """(G, count, 2) xy GT points of every object: its contour (``Contours``, LSNet's sampling by edge length, brought
    onto the box; objects without polygon parts use their box outline)."""
    return Contours(count).ground_truth_landmarks(instances)[1][:, :count]


def band_point_sets(masks: Tensor, boxes: Tensor, count: int, distance: float = 2.0, size: int = BAND_GRID) -> Tensor:
    """(G, count, 2) xy GT points of every object drawn at random from the band around its contour, both sides of it
    (the code's ``distance_sample_pts``, METHODS.md CARD 5 §5.2; module docstring).

    The mask ``masks[g]`` is cropped into ``boxes[g]`` on a ``size x size`` grid (``ops.masks.crop_masks``, >= 0.5);
    its boundary (``boundary_bands`` with the outside of the box as background, the code's 2-px contour lines) is
    widened by every cell within ``distance`` cells (the code's distance transform <= ``dist_sample_thr``). Every
    cell of the band is drawn ``count // K`` times and ``count % K`` of them once more, at random (K cells), each at
    a uniform random position inside its cell, mapped back onto the box. An object without a band (an empty crop)
    draws from every cell of its box.

    Args:
        masks: (G, H, W) binary GT masks in image pixels.
        boxes: (G, 4) xyxy GT boxes in the same pixels.
        count: points per object.
        distance: band half-width beyond the boundary, in grid cells (2, the code's ``dist_sample_thr``).
        size: side of the box-relative grid (56, the code's training ``mask_size``).
    """
    if len(boxes) == 0:
        return boxes.new_zeros(0, count, 2)
    crops = crop_masks(masks.to(boxes.device), boxes, torch.arange(len(boxes), device=boxes.device), size) >= 0.5
    boundary = boundary_bands(F.pad(crops.float(), (1, 1, 1, 1)))[:, 1:-1, 1:-1]
    radius = int(distance)
    steps = torch.arange(-radius, radius + 1, device=boxes.device, dtype=torch.float32)
    disk = (steps[:, None] ** 2 + steps[None] ** 2 <= distance**2).float()[None, None]
    band = F.conv2d(boundary.float()[:, None], disk, padding=radius)[:, 0] > 0
    point_sets = []
    for object_band, box in zip(band, boxes, strict=True):
        if not object_band.any():
            object_band = torch.ones_like(object_band)
        cells = object_band.nonzero().flip(-1).to(boxes.dtype)  # (K, 2) xy
        drawn = torch.cat(
            [torch.arange(len(cells)).repeat(count // len(cells)), torch.randperm(len(cells))[: count % len(cells)]]
        )
        grid = cells[drawn.to(cells.device)] + torch.rand(count, 2, dtype=boxes.dtype, device=boxes.device)
        point_sets.append(box[:2] + grid * (box[2:] - box[:2]) / size)
    return torch.stack(point_sets)


def point_mask_labels(points: Tensor, masks: Tensor, assigned: Tensor) -> Tensor:
    """Whether each point lies inside its object's mask.

    Args:
        points: (K, N, 2) xy image pixels of K point sets.
        masks: (G, H, W) binary GT masks.
        assigned: (K,) int64 GT of each set.

    Returns:
        (K, N) float 0 / 1: the mask at the pixel holding each point (``floor(p)``; pixel ``j`` covers
        ``[j, j + 1)``), clamped into the image. The code rounds, its pixels being centred on the integers.
    """
    if len(points) == 0:
        return points.new_zeros(points.shape[:2])
    height, width = masks.shape[-2:]
    pixel = torch.floor(points.detach()).long()
    x, y = pixel[..., 0].clamp(0, width - 1), pixel[..., 1].clamp(0, height - 1)
    return masks.to(points.device)[assigned[:, None], y, x].to(points.dtype)
