"""RepPoints v1 targets (METHODS.md CARD 5 §5.0 and §1.10): pure functions, one image at a time, then stacked.

Following open-mmlab/mmdetection v2.x ``RepPointsHead.loss`` / ``get_targets`` and its RepPoints configs
(configs/reppoints/reppoints_moment_r50_fpn_1x_coco.py):

- init stage: ``PointAssigner(scale=4, pos_num=1)`` on the prior locations; positives regress their GT box;
- refine stage: the candidates are the boxes of the **detached** init points (image pixels), assigned by
  ``MaxIoUAssigner(0.5, 0.4, min_pos_iou=0)`` (v1) or ATSS with k=9 (Scalsol/RepPointsV2); positives regress
  their GT box and carry the class label, negatives are background, ignored priors get no classification loss.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pointdet.structures import Instances
from pointdet.targets.assigners import IGNORED, atss_assign, gather_assigned, max_iou_assign, point_assign

RefineAssigner = Literal["max_iou", "atss"]


class RepPointsTargets(NamedTuple):
    """Per-prior targets of a batch.

    Attributes:
        init_boxes: (B, P, 4) xyxy GT box of each init positive, zeros elsewhere.
        init_positive: (B, P) bool.
        refine_boxes: (B, P, 4) xyxy GT box of each refine positive, zeros elsewhere.
        refine_positive: (B, P) bool.
        labels: (B, P) int64 class of each refine positive, ``num_classes`` (background) elsewhere.
        label_valid: (B, P) bool, False at priors the refine assigner ignored (no classification loss).
        init_assigned, refine_assigned: (B, P) int64 GT index of each prior in either stage, negative where it is
            not positive (``targets.assigners``' convention); Dense RepPoints reads the GT's contour and mask.
    """

    init_boxes: Tensor
    init_positive: Tensor
    refine_boxes: Tensor
    refine_positive: Tensor
    labels: Tensor
    label_valid: Tensor
    init_assigned: Tensor
    refine_assigned: Tensor


def reppoints_image_targets(
    priors: Tensor,
    strides: Tensor,
    candidate_boxes: Tensor,
    instances: Instances,
    num_classes: int,
    refine_assigner: RefineAssigner = "max_iou",
    point_scale: int = 4,
    num_per_level: list[int] | None = None,
) -> RepPointsTargets:
    """Targets of one image (fields without the batch dimension).

    Args:
        priors: (P, 2) xy prior locations in image pixels.
        strides: (P,) stride of each prior.
        candidate_boxes: (P, 4) xyxy boxes of the detached init points, in image pixels.
        instances: the image's GT (boxes xyxy pixels, labels ``0..C-1``).
        num_classes: C.
        refine_assigner: ``max_iou`` (RepPoints v1: pos 0.5, neg 0.4, min_pos_iou 0) or ``atss`` (k=9).
        point_scale: the point assigner's ``scale`` (box side that maps to level 0).
        num_per_level: L prior counts, needed by ATSS.

    Returns:
        ``RepPointsTargets`` with (P, ...) fields.
    """
    gt_boxes = instances.boxes.to(device=priors.device, dtype=candidate_boxes.dtype)
    gt_labels = instances.labels.to(device=priors.device, dtype=torch.long)
    init_assigned = point_assign(priors, strides, gt_boxes, scale=point_scale)
    init = gather_assigned(init_assigned, gt_boxes, gt_labels, num_classes)
    if refine_assigner == "max_iou":
        assigned = max_iou_assign(candidate_boxes, gt_boxes, pos_iou=0.5, neg_iou=0.4, min_pos_iou=0.0)
    elif refine_assigner == "atss":
        if num_per_level is None:
            raise ValueError("the atss refine assigner needs num_per_level")
        assigned = atss_assign(candidate_boxes, num_per_level, gt_boxes, k=9)
    else:
        raise ValueError(f"refine_assigner must be 'max_iou' or 'atss', got {refine_assigner!r}")
    refine = gather_assigned(assigned, gt_boxes, gt_labels, num_classes)
    return RepPointsTargets(
        init.boxes,
        init.positive,
        refine.boxes,
        refine.positive,
        refine.labels,
        assigned != IGNORED,
        init_assigned,
        assigned,
    )


def build_reppoints_targets(
    priors: Tensor,
    strides: Tensor,
    candidate_boxes: Tensor,
    instances: list[Instances],
    num_classes: int,
    refine_assigner: RefineAssigner = "max_iou",
    point_scale: int = 4,
) -> RepPointsTargets:
    """Targets of a batch whose images share one prior layout.

    Args:
        priors: (P, 2) xy prior locations in image pixels, level after level.
        strides: (P,) stride of each prior.
        candidate_boxes: (B, P, 4) xyxy boxes of the detached init points, in image pixels.
        instances: B per-image GTs.
        num_classes: C.
        refine_assigner: ``max_iou`` or ``atss``.
        point_scale: the point assigner's ``scale``.

    Returns:
        ``RepPointsTargets`` with (B, P, ...) fields.
    """
    if len(instances) != len(candidate_boxes):
        raise ValueError(f"{len(instances)} instances for candidate_boxes of shape {tuple(candidate_boxes.shape)}")
    num_per_level = torch.unique_consecutive(strides, return_counts=True)[1].tolist()
    per_image = [
        reppoints_image_targets(priors, strides, boxes, gt, num_classes, refine_assigner, point_scale, num_per_level)
        for boxes, gt in zip(candidate_boxes, instances, strict=True)
    ]
    return RepPointsTargets(*(torch.stack(field) for field in zip(*per_image, strict=True)))
