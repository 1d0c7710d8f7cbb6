"""Prior-to-GT assigners for one image (METHODS.md §1.10), as pure functions batched over the priors.

- ``point_assign``: RepPoints v1 ``PointAssigner`` (Yang et al. ICCV 2019; open-mmlab/mmdetection
  mmdet/core/bbox/assigners/point_assigner.py), also the RepPoints v2 / LSNet init-stage assigner.
- ``max_iou_assign``: mmdetection's ``MaxIoUAssigner`` (mmdet/core/bbox/assigners/max_iou_assigner.py), the
  RepPoints v1 refine-stage assigner.
- ``atss_assign``: ATSS (Zhang et al. CVPR 2020, Alg. 1; Scalsol/RepPointsV2 mmdet/core/bbox/assigners/
  atss_assigner.py), the RepPoints v2 / LSNet refine-stage assigner.

Every assigner returns ``assigned: (P,) int64``: the index of the assigned GT, ``NEGATIVE`` (-1) for background or
``IGNORED`` (-2) for priors that are neither positive nor negative. (mmdetection writes ``gt + 1``, 0 and -1.)

Where mmdetection leaves ties to ``torch.topk`` (whose order is unspecified), these functions break them by the
lowest prior index, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_iou

NEGATIVE = -1
IGNORED = -2


class AssignedTargets(NamedTuple):
    """Per-prior targets gathered from an assignment.

    Attributes:
        boxes: (P, 4) xyxy GT box of each positive prior, zeros elsewhere.
        labels: (P,) int64 GT class of each positive prior, ``num_classes`` (background) elsewhere.
        positive: (P,) bool, ``assigned >= 0``.
    """

    boxes: Tensor
    labels: Tensor
    positive: Tensor


def gather_assigned(assigned: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int) -> AssignedTargets:
    """Turn an assignment into per-prior box and class targets.

    Ignored priors (-2) get the background label like negatives; callers mask them with ``assigned != IGNORED``.

    Args:
        assigned: (P,) int64 from one of the assigners.
        gt_boxes: (M, 4) xyxy.
        gt_labels: (M,) int64 class ids in ``0..num_classes-1``.
        num_classes: number of classes C, excluding background.

    Returns:
        ``AssignedTargets(boxes (P, 4), labels (P,), positive (P,))``.
    """
    positive = assigned >= 0
    index = assigned.clamp(min=0)
    boxes = torch.zeros((len(assigned), 4), dtype=gt_boxes.dtype, device=gt_boxes.device)
    labels = torch.full_like(assigned, num_classes)
    if len(gt_boxes):
        boxes = torch.where(positive[:, None], gt_boxes[index], boxes)
        labels = torch.where(positive, gt_labels[index], labels)
    return AssignedTargets(boxes, labels, positive)


def _iou(boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """(P, M) IoU; 0 where both boxes have zero area (mmdetection's eps-guarded union), not NaN."""
    return box_iou(boxes, gt_boxes).nan_to_num(0.0)


def _smallest(values: Tensor, k: int) -> Tensor:
    """(k, M) row indices of the k smallest entries of each column of (N, M) ``values``; ties to the lower row."""
    return values.sort(dim=0, stable=True).indices[:k]


def point_assign(
    points: Tensor,
    strides: Tensor,
    gt_boxes: Tensor,
    scale: int = 4,
    pos_num: int = 1,
) -> Tensor:
    """RepPoints' point assigner: each GT takes the ``pos_num`` points nearest its centre on its own level.

    The GT level is ``trunc((log2(w/scale) + log2(h/scale)) / 2)`` clamped to the points' level range (levels are
    ``log2(stride)``); distances are ``||(p - c) / (w, h)||_2`` to the GT centre c. A point claimed by several GTs
    keeps the nearest (the lowest GT index on a tie, as mmdetection's strict ``<`` in GT order). Every other point
    is negative; nothing is ignored. A GT whose level has no points gets none (mmdetection would fail there).

    Args:
        points: (P, 2) xy in image pixels.
        strides: (P,) stride of each point's level.
        gt_boxes: (M, 4) xyxy.
        scale: box side (pixels) that maps to level 0.
        pos_num: number of positive points per GT.

    Returns:
        (P,) int64 GT index or -1.
    """
    assigned = torch.full((len(points),), NEGATIVE, dtype=torch.long, device=points.device)
    if len(points) == 0 or len(gt_boxes) == 0:
        return assigned
    point_levels = torch.log2(strides).long()  # (P,), .long() truncates like mmdetection's .int()
    centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    sizes = (gt_boxes[:, 2:] - gt_boxes[:, :2]).clamp(min=1e-6)
    gt_levels = ((torch.log2(sizes[:, 0] / scale) + torch.log2(sizes[:, 1] / scale)) / 2).long()
    gt_levels = gt_levels.clamp(min=int(point_levels.min()), max=int(point_levels.max()))  # (M,)

    distances = ((points[:, None] - centers[None]) / sizes[None]).norm(dim=2)  # (P, M)
    on_level = point_levels[:, None] == gt_levels[None]  # (P, M)
    distances = distances.masked_fill(~on_level, float("inf"))
    nearest = _smallest(distances, min(pos_num, len(points)))  # (pos_num, M)
    claimed = on_level.gather(0, nearest)  # drops picks beyond a level's size
    gt_index = torch.arange(len(gt_boxes), device=points.device).expand_as(nearest)
    return _resolve_claims(assigned, nearest[claimed], gt_index[claimed], distances.gather(0, nearest)[claimed])


def _resolve_claims(assigned: Tensor, prior: Tensor, gt: Tensor, cost: Tensor) -> Tensor:
    """Give each claimed prior the claiming GT of the lowest cost, the lowest GT index on a tie.

    Args:
        assigned: (P,) int64 initial assignment, overwritten where claimed.
        prior: (Q,) claimed prior indices.
        gt: (Q,) claiming GT indices.
        cost: (Q,) claim costs.

    Returns:
        (P,) int64 assignment.
    """
    best_cost = torch.full(assigned.shape, float("inf"), dtype=cost.dtype, device=cost.device)
    best_cost = best_cost.scatter_reduce(0, prior, cost, reduce="amin")
    winner = cost == best_cost[prior]
    lowest_gt = torch.full_like(assigned, torch.iinfo(torch.long).max)
    lowest_gt = lowest_gt.scatter_reduce(0, prior[winner], gt[winner], reduce="amin")
    return torch.where(lowest_gt < torch.iinfo(torch.long).max, lowest_gt, assigned)


def max_iou_assign(
    boxes: Tensor,
    gt_boxes: Tensor,
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    min_pos_iou: float = 0.0,
    gt_max_assign_all: bool = True,
) -> Tensor:
    """mmdetection's ``MaxIoUAssigner`` with low-quality matches.

    1. Each prior's best GT (the lowest index on a tie): IoU < ``neg_iou`` is negative, IoU >= ``pos_iou`` takes
       that GT, anything between is ignored.
    2. Then, GT by GT in index order (a later GT overwrites), a GT whose best IoU is >= ``min_pos_iou`` takes its
       best prior(s): every prior tying that IoU if ``gt_max_assign_all``, else the lowest-index one.

    As in mmdetection, with ``min_pos_iou=0`` a GT that overlaps no prior (best IoU 0 >= 0) takes **every** prior
    under ``gt_max_assign_all`` (all tie at 0), or prior 0 otherwise. This is replicated, not guarded.

    Args:
        boxes: (P, 4) xyxy priors.
        gt_boxes: (M, 4) xyxy.
        pos_iou: IoU from which a prior is positive for its best GT.
        neg_iou: IoU below which a prior is negative.
        min_pos_iou: least IoU for a GT to take its best prior(s) in step 2.
        gt_max_assign_all: in step 2, take every prior tying the GT's best IoU.

    Returns:
        (P,) int64 GT index, -1 or -2.
    """
    assigned = torch.full((len(boxes),), NEGATIVE, dtype=torch.long, device=boxes.device)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return assigned
    iou = _iou(boxes, gt_boxes)  # (P, M)
    best_iou, best_gt = iou.max(dim=1)  # (P,)
    assigned = torch.where(best_iou < neg_iou, assigned, IGNORED)
    assigned = torch.where(best_iou >= pos_iou, best_gt, assigned)

    gt_best_iou = iou.max(dim=0).values  # (M,)
    if gt_max_assign_all:
        takes = iou == gt_best_iou[None]  # (P, M)
    else:
        takes = torch.zeros_like(iou, dtype=torch.bool)
        takes[iou.argmax(dim=0), torch.arange(len(gt_boxes), device=boxes.device)] = True
    takes &= gt_best_iou[None] >= min_pos_iou
    gt_index = torch.arange(len(gt_boxes), device=boxes.device)
    last_gt = torch.where(takes, gt_index[None], -1).max(dim=1).values  # the last GT overwrites
    return torch.where(last_gt >= 0, last_gt, assigned)


def atss_assign(boxes: Tensor, num_per_level: Sequence[int], gt_boxes: Tensor, k: int = 9) -> Tensor:
    """ATSS: an adaptive IoU threshold over the centre-nearest candidates of each level.

    1. On each level, each GT's ``min(k, level size)`` candidates are the priors whose box centres are nearest
       (L2) to the GT centre.
    2. The GT's threshold is mean + std (unbiased) of its candidates' IoUs over all levels.
    3. A candidate is positive if its IoU >= the threshold and its centre lies inside the GT with
       ``min(l, t, r, b) > 0.01``.
    4. A prior positive for several GTs keeps the highest IoU (the lowest GT index on a tie). The rest is negative.

    Args:
        boxes: (P, 4) xyxy priors (anchors, or boxes decoded from detached init predictions), level after level.
        num_per_level: L prior counts, summing to P.
        gt_boxes: (M, 4) xyxy.
        k: candidates per level per GT.

    Returns:
        (P,) int64 GT index or -1.
    """
    if sum(num_per_level) != len(boxes):
        raise ValueError(f"num_per_level sums to {sum(num_per_level)} but boxes has shape {tuple(boxes.shape)}")
    assigned = torch.full((len(boxes),), NEGATIVE, dtype=torch.long, device=boxes.device)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return assigned
    iou = _iou(boxes, gt_boxes)  # (P, M)
    prior_centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distances = (prior_centers[:, None] - gt_centers[None]).pow(2).sum(dim=2).sqrt()  # (P, M)

    candidates, start = [], 0
    for count in num_per_level:
        candidates.append(_smallest(distances[start : start + count], min(k, count)) + start)
        start += count
    candidates = torch.cat(candidates)  # (Q, M), Q = sum of min(k, level size)
    candidate_iou = iou.gather(0, candidates)  # (Q, M)
    threshold = candidate_iou.mean(dim=0) + candidate_iou.std(dim=0)  # (M,)

    centers = prior_centers[candidates]  # (Q, M, 2)
    inside = torch.cat([centers - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - centers], dim=2)
    positive = (candidate_iou >= threshold[None]) & (inside.min(dim=2).values > 0.01)  # (Q, M)
    gt_index = torch.arange(len(gt_boxes), device=boxes.device).expand_as(candidates)
    return _resolve_claims(assigned, candidates[positive], gt_index[positive], -candidate_iou[positive])
