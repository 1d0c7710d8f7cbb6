"""Grid R-CNN (Plus) point targets and CPM R-CNN's ISM targets (METHODS.md CARD 6 (b)); the RoI sampling is
``pointdet.targets.roi_sampling``.

Nine grid points per box, point ``j`` at column ``j // 3`` and row ``j % 3`` of a 3x3 grid over the box. A
heatmap refers to the RoI expanded about its centre by the stage's *mapping ratio* m (2, 1.5, 1.25 in the cascade;
Grid R-CNN uses 2): a virtual 56x56 map covers the expanded box, and point ``j`` predicts only the 28x28 sub-region
whose origin is ``14 * (column, row)`` (Grid R-CNN Plus). Positives are the pixels within distance 1 of the GT
point's cell on the 56x56 map (a plus shape). The cell is the official ``int()`` of the point's map coordinate, a
truncation toward zero: a point less than two cells left of or above the expanded RoI gets cell 0 or -1 where
``floor`` gives -1 or -2, and so keeps 4 or 1 pixels of its plus where ``floor`` keeps 1 or none.

Facts derived from zhubinQAQ/CPM-R-CNN ``pet/rcnn/modeling/grid_cascade_rcnn/loss.py`` (``prepare_target``,
``prepare_iou_target``) and mmdetection's ``GridHead.get_targets`` (the same rule at mapping ratio 2) as
summarised in METHODS.md CARD 6; no code of theirs was copied.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

GRID_POINTS = 9
VIRTUAL_SIZE = 56  # side of the virtual map covering the expanded RoI
HEATMAP_SIZE = 28  # side of each point's sub-region (the predicted heatmap)
SUBREGION_STEP = 14  # sub-region origin per grid index: 0, 14, 28
POSITIVE_RADIUS = 1
MIN_EXPANDED_SIDE = 3.0  # RoIs whose expanded side is <= 3 px get an all-zero target (the code's guard)


def grid_indices(device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(9,) column and (9,) row index in {0, 1, 2} of each grid point."""
    index = torch.arange(GRID_POINTS, device=device)
    return index // 3, index % 3


def grid_points(boxes: Tensor) -> Tensor:
    """(N, 4) xyxy boxes -> (N, 9, 2) xy grid points: ``x = (1 - c/2) x1 + (c/2) x2`` for column c, y likewise."""
    columns, rows = grid_indices(boxes.device)
    x = boxes[:, None, 0] + (boxes[:, None, 2] - boxes[:, None, 0]) * (columns / 2)
    y = boxes[:, None, 1] + (boxes[:, None, 3] - boxes[:, None, 1]) * (rows / 2)
    return torch.stack([x, y], dim=-1)


def expand_boxes(boxes: Tensor, mapping_ratio: float) -> Tensor:
    """(N, 4) xyxy -> (N, 4) the boxes scaled by ``mapping_ratio`` about their centres (the heatmaps' frame)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (mapping_ratio / 2)
    return torch.cat([centres - half, centres + half], dim=1)


def subregion_origins(device: torch.device | None = None) -> Tensor:
    """(9, 2) xy origin of each point's 28x28 sub-region on the 56x56 virtual map."""
    columns, rows = grid_indices(device)
    return torch.stack([columns, rows], dim=1) * SUBREGION_STEP


def crop_subregions(virtual: Tensor) -> Tensor:
    """(N, 9, 56, 56) per-point virtual maps -> (N, 9, 28, 28) each point's own sub-region."""
    crops = [
        virtual[:, j, y : y + HEATMAP_SIZE, x : x + HEATMAP_SIZE]
        for j, (x, y) in enumerate(subregion_origins().tolist())
    ]
    return torch.stack(crops, dim=1)


def build_grid_targets(rois: Tensor, gt_boxes: Tensor, mapping_ratio: float) -> Tensor:
    """Binary heatmap targets of the grid points of ``gt_boxes`` seen from ``rois``.

    Args:
        rois: (N, 4) xyxy input-pixel RoIs the features were pooled from.
        gt_boxes: (N, 4) the GT box matched to each RoI.
        mapping_ratio: m; the heatmaps cover the RoI scaled by m about its centre.

    Returns:
        (N, 9, 28, 28) float targets: 1 on the plus-shaped positives inside each point's sub-region.
    """
    expanded = expand_boxes(rois, mapping_ratio)
    size = (expanded[:, 2:] - expanded[:, :2]).clamp(min=1e-6)  # (N, 2)
    # Truncation toward zero, as the official ``int()`` (not ``floor``): see the module docstring.
    cells = ((grid_points(gt_boxes) - expanded[:, None, :2]) / size[:, None] * VIRTUAL_SIZE).trunc()  # (N, 9, 2)
    axis = torch.arange(VIRTUAL_SIZE, device=rois.device, dtype=rois.dtype)
    dx = axis[None, None, None, :] - cells[..., 0, None, None]  # (N, 9, 1, 56)
    dy = axis[None, None, :, None] - cells[..., 1, None, None]  # (N, 9, 56, 1)
    virtual = (dx**2 + dy**2 <= POSITIVE_RADIUS**2).to(rois.dtype)  # (N, 9, 56, 56)
    valid = (size > MIN_EXPANDED_SIDE).all(dim=1)
    return crop_subregions(virtual * valid[:, None, None, None])


def iou_targets(rois: Tensor, gt_boxes: Tensor) -> Tensor:
    """ISM targets: (R, 4) RoIs -> (R, 2) ``[1 - IoU, IoU]`` with their best-matching GT (IoU 0 without GT)."""
    iou = box_iou(rois, gt_boxes).max(dim=1).values if len(gt_boxes) else rois.new_zeros(len(rois))
    return torch.stack([1 - iou, iou], dim=1)
