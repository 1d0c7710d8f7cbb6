"""Training RoIs of an R-CNN-style second stage for one image: proposals matched to GT boxes with torchvision's
``Matcher`` (IoU >= a threshold), then either kept as they are (every matched RoI: CPM R-CNN's grid stages,
CentripetalNet's mask head) or drawn into a batch with a bounded positive fraction by torchvision's
``BalancedPositiveNegativeSampler`` (Faster R-CNN's practice: CPM R-CNN's classifier and re-scoring module).

The GT boxes are appended to the proposals where the caller asks (Mask R-CNN's practice), so every object has a
training RoI from the first step. CPM R-CNN's use follows zhubinQAQ/CPM-R-CNN ``pet/rcnn/modeling/grid_rcnn/loss.py``
(``subsample``) as summarised in METHODS.md CARD 6; no code of theirs was copied.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.ops import box_iou


def threshold_matcher(iou_threshold: float) -> Matcher:
    """A ``Matcher`` with one threshold: IoU >= ``iou_threshold`` matches the best GT, anything below is background
    (no ignored band, no low-quality matches)."""
    return Matcher(iou_threshold, iou_threshold, allow_low_quality_matches=False)


def match_rois(rois: Tensor, gt_boxes: Tensor, matcher: Matcher) -> Tensor:
    """(R, 4) RoIs and (M, 4) GT boxes -> (R,) int64 index of each RoI's GT, or ``Matcher.BELOW_LOW_THRESHOLD`` /
    ``Matcher.BETWEEN_THRESHOLDS`` (negative); all below the threshold when M = 0."""
    if len(gt_boxes) == 0:  # torchvision's Matcher refuses an empty IoU matrix
        return torch.full((len(rois),), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=rois.device)
    return matcher(box_iou(gt_boxes, rois))  # box_iou: (M, R)


def select_matched_rois(
    rois: Tensor, gt_boxes: Tensor, iou_threshold: float, append_gt: bool, max_rois: int | None = None
) -> tuple[Tensor, Tensor]:
    """The RoIs (plus the GT boxes when ``append_gt``) whose IoU with their best GT is >= ``iou_threshold``, at most
    ``max_rois`` of them drawn at random.

    Args:
        rois: (R, 4) xyxy candidate boxes (detached proposals, or a previous stage's boxes).
        gt_boxes: (M, 4) in the same pixels.

    Returns:
        (S, 4) kept RoIs and (S,) int64 the index of their matched GT.
    """
    candidates = torch.cat([rois, gt_boxes]) if append_gt else rois
    matches = match_rois(candidates, gt_boxes, threshold_matcher(iou_threshold))
    keep = torch.where(matches >= 0)[0]
    if max_rois is not None and len(keep) > max_rois:
        keep = keep[torch.randperm(len(keep), device=keep.device)[:max_rois]]
    return candidates[keep], matches[keep]


def sample_rois(
    rois: Tensor, gt_boxes: Tensor, gt_labels: Tensor, matcher: Matcher, sampler: BalancedPositiveNegativeSampler
) -> tuple[Tensor, Tensor, Tensor]:
    """Faster R-CNN's RoI sampling of one image: match (IoU >= fg threshold, else background), then draw a batch
    with a bounded positive fraction.

    Args:
        rois: (R, 4) candidate boxes (proposals with the GT boxes appended).
        gt_boxes: (M, 4); gt_labels: (M,) contiguous ids ``0..C-1``.
        matcher: torchvision ``Matcher`` (fg and bg thresholds).
        sampler: torchvision ``BalancedPositiveNegativeSampler`` (batch size, positive fraction).

    Returns:
        (S,) indices into ``rois`` of the sampled RoIs, (S,) their labels (``1 + class``, 0 = background) and (S,)
        the index of their matched GT (meaningful for positives only).
    """
    matches = match_rois(rois, gt_boxes, matcher)
    matched = matches.clamp(min=0)
    labels = gt_labels[matched] + 1 if len(gt_boxes) else torch.zeros_like(matches)
    labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
    labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1  # ignored
    positive, negative = sampler([labels])
    chosen = torch.where(positive[0] | negative[0])[0]
    return chosen, labels[chosen], matched[chosen]


def sample_batch_rois(
    candidates: list[Tensor], instances: list, matcher: Matcher, sampler: BalancedPositiveNegativeSampler
) -> tuple[list[Tensor], list[Tensor]]:
    """``sample_rois`` image by image: B lists of (R_b, 4) candidate boxes and B ground truths (``Instances``) -> the
    B (S_b, 4) sampled RoIs and their B (S_b,) labels (``1 + class``, 0 = background)."""
    rois, labels = [], []
    for boxes, inst in zip(candidates, instances, strict=True):
        index, roi_labels, _ = sample_rois(boxes, inst.boxes, inst.labels, matcher, sampler)
        rois.append(boxes[index])
        labels.append(roi_labels)
    return rois, labels
