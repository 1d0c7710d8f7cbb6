"""Cross-IoU loss with the softened prediction (LSNet, Duan et al. 2021, §3.3 and App. A; METHODS.md §1.7).

A landmark vector ``(dx, dy)`` from the anchor point is written in the "cross" coordinate system as 4 non-negative
components ``[top, bottom, left, right] = [(-dy)+, (dy)+, (-dx)+, (dx)+]`` (the order of the official head,
Duankaiwen/LSNet lsnet_head.py ``get_bbox_gt_reg``). The network predicts all 4 through ``softplus``; the target
keeps ``|d|`` on the side of the GT sign and the **softened** ``alpha * |d|`` (alpha = 0.2) on the other, so a
prediction on the wrong side still gets a gradient. Decoding takes the larger component of each axis, negated on
the top / left side.

``cross_iou = sum min(q, q*) / sum max(q, q*)`` over a set of components; the paper averages it over vectors, the
official code (cross_iou_loss.py) aggregates per task, which is the default here (METHODS.md App. A #11):

- ``bbox``: one ratio over all components of the sample (4 extremes + centre = 20 components);
- ``polygon``: the vectors split into ``groups`` interleaved groups (``i::groups``), one ratio per group, averaged;
- ``keypoint``: one ratio per vector and axis (2 components), invisible vectors multiplied by 0, the sum divided
  by the number of ratios (the centre, the last vector, always kept);
- ``vector``: one ratio per vector (its 4 components), averaged (the paper's formula); with ``visible``, invisible
  vectors count 0 as in ``keypoint``.

The code's extra CIoU-style penalty (``bbox`` and ``polygon``; App. A #12) is ``box_penalty``: with the boxes of
the prediction and of the GT, ``loss = 1 - (cIoU - (rho²/c² + v²/(1 - cIoU + v)))``. Everything here is
scale-free, so pred and target may be in any common unit (the code divides both by ``4 * stride``; the ratio and
the penalty do not change).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Aggregation = Literal["bbox", "polygon", "keypoint", "vector"]
AGGREGATIONS: tuple[str, ...] = ("bbox", "polygon", "keypoint", "vector")
SOFTENING = 0.2  # alpha of the softened target (LSNet App. A; the code's CrossIOULoss alpha)
EPS = 1e-6


def cross_components(offsets: Tensor) -> Tensor:
    """(..., V, 2) ``(dx, dy)`` vectors -> (..., V, 4) ``[(-dy)+, (dy)+, (-dx)+, (dx)+]`` (top, bottom, left, right)."""
    dx, dy = offsets.unbind(-1)
    return torch.stack([(-dy).clamp(min=0), dy.clamp(min=0), (-dx).clamp(min=0), dx.clamp(min=0)], dim=-1)


def softened_targets(offsets: Tensor, alpha: float = SOFTENING) -> Tensor:
    """(..., V, 2) GT ``(dx, dy)`` vectors -> (..., V, 4) softened cross targets: per axis ``|d|`` on the side of the
    sign of ``d`` and ``alpha * |d|`` on the other (a zero offset gives zeros on both sides)."""
    components = cross_components(offsets)
    swapped = components.view(*components.shape[:-1], 2, 2).flip(-1).reshape(components.shape)
    return components + alpha * swapped


def decode_components(components: Tensor) -> Tensor:
    """(..., V, 4) cross components -> (..., V, 2) ``(dx, dy)``: per axis the larger component, negative when it is
    the top / left one (a tie decodes to the negative side, as ``torch.max`` picking index 0 in the code)."""
    top, bottom, left, right = components.unbind(-1)
    dy = torch.where(bottom > top, bottom, -top)
    dx = torch.where(right > left, right, -left)
    return torch.stack([dx, dy], dim=-1)


def cross_iou(
    pred: Tensor,
    target: Tensor,
    aggregation: Aggregation = "bbox",
    groups: int = 9,
    visible: Tensor | None = None,
) -> Tensor:
    """Cross-IoU of each sample.

    Args:
        pred: (Q, V, 4) non-negative predicted components.
        target: (Q, V, 4) softened targets (``softened_targets``).
        aggregation: one of ``AGGREGATIONS`` (module docstring).
        groups: interleaved vector groups of ``polygon``.
        visible: (Q, V - 1) visibility of all vectors but the last (the centre), for ``keypoint`` and ``vector``;
            None = all.

    Returns:
        (Q,) cross-IoU in [0, 1].
    """
    if pred.shape != target.shape or pred.shape[-1] != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (Q, V, 4)")
    low, high = torch.minimum(pred, target), torch.maximum(pred, target)
    if aggregation == "bbox":
        return low.sum(dim=(1, 2)) / high.sum(dim=(1, 2)).clamp(min=EPS)
    if aggregation == "vector":
        per_vector = low.sum(dim=2) / high.sum(dim=2).clamp(min=EPS)  # (Q, V)
        return _visible_mean(per_vector[..., None], visible)
    if aggregation == "polygon":
        groups = min(groups, pred.shape[1])  # no empty group (37 vectors in 9 groups in the code)
        ratios = [
            low[:, i::groups].sum(dim=(1, 2)) / high[:, i::groups].sum(dim=(1, 2)).clamp(min=EPS) for i in range(groups)
        ]
        return torch.stack(ratios, dim=1).mean(dim=1)
    if aggregation == "keypoint":
        per_axis = low.unflatten(-1, (2, 2)).sum(-1) / high.unflatten(-1, (2, 2)).sum(-1).clamp(min=EPS)  # (Q, V, 2)
        return _visible_mean(per_axis, visible)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def signed_offset_l1(pred: Tensor, target: Tensor, scale: Tensor, visible: Tensor | None = None) -> Tensor:
    """L1 between the signed offsets (``right - left``, ``bottom - top``) of the predicted and the softened target
    components, divided by a per-sample ``scale``: pointdet's optional pose term (``Keypoints.offset_l1``), not LSNet's.

    A cross-IoU ratio whose prediction sits on the wrong side of the anchor has a gradient of only
    ``-low / high**2`` on the wrong-side component, so a sign the features do tell apart may never be learnt; this
    term has a gradient of ``1 / scale`` on both components. It compares with the softened target (whose signed
    offset is ``(1 - alpha) d``), so both terms agree on the optimum, ``pred == target``, which decodes to ``d``.

    Args:
        pred: (Q, V, 4) non-negative predicted components ``[top, bottom, left, right]``.
        target: (Q, V, 4) softened targets (``softened_targets``).
        scale: (Q,) positive normaliser (e.g. the square root of the GT box area).
        visible: (Q, V - 1) visibility as ``cross_iou`` (invisible vectors count 0, the last always kept).

    Returns:
        (Q,) mean over the vectors' 2 axes of ``|signed(pred) - signed(target)| / scale``.
    """
    errors = (_signed(pred) - _signed(target)).abs() / scale[:, None, None]  # (Q, V, 2)
    return _visible_mean(errors, visible)


def _signed(components: Tensor) -> Tensor:
    """(..., V, 4) ``[top, bottom, left, right]`` -> (..., V, 2) ``(right - left, bottom - top)``."""
    top, bottom, left, right = components.unbind(-1)
    return torch.stack([right - left, bottom - top], dim=-1)


def _visible_mean(ratios: Tensor, visible: Tensor | None) -> Tensor:
    """(Q, V, R) ratios -> (Q,): invisible vectors (``visible`` (Q, V - 1) <= 0; the last vector always kept) count
    as 0, and the sum is divided by the number of all ratios (the code's ``keypoint`` normalisation)."""
    if visible is not None:
        keep = torch.cat([(visible > 0).to(ratios.dtype), ratios.new_ones(len(ratios), 1)], dim=1)
        ratios = ratios * keep[..., None]
    return ratios.flatten(1).mean(dim=1)


def box_penalty(overlap: Tensor, pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """The official code's CIoU-style term with cIoU in place of IoU: ``rho²/c² + v²/(1 - cIoU + v)``.

    Args:
        overlap: (Q,) cross-IoU.
        pred_boxes, gt_boxes: (Q, 4) xyxy boxes (of the predicted landmarks and of the GT).

    Returns:
        (Q,) penalty, subtracted from ``overlap`` before ``1 - ...``.
    """
    enclosing = torch.maximum(pred_boxes[:, 2:], gt_boxes[:, 2:]) - torch.minimum(pred_boxes[:, :2], gt_boxes[:, :2])
    diagonal2 = enclosing.clamp(min=0).pow(2).sum(dim=1) + EPS
    centre_gap2 = ((gt_boxes[:, :2] + gt_boxes[:, 2:]) - (pred_boxes[:, :2] + pred_boxes[:, 2:])).pow(2).sum(1) / 4
    pred_w, pred_h = pred_boxes[:, 2] - pred_boxes[:, 0], pred_boxes[:, 3] - pred_boxes[:, 1] + EPS
    gt_w, gt_h = gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1] + EPS
    aspect = (4 / math.pi**2) * (torch.atan(gt_w / gt_h) - torch.atan(pred_w / pred_h)).pow(2)
    # The code divides by (1 - cIoU + v) unguarded, 0/0 at a perfect prediction; the clamp keeps that at 0.
    return centre_gap2 / diagonal2 + aspect.pow(2) / (1 - overlap + aspect).clamp(min=EPS)


def cross_iou_loss(
    pred: Tensor,
    target: Tensor,
    aggregation: Aggregation = "bbox",
    pred_boxes: Tensor | None = None,
    gt_boxes: Tensor | None = None,
    groups: int = 9,
    visible: Tensor | None = None,
) -> Tensor:
    """Per-sample cross-IoU loss ``1 - cIoU``, or ``1 - (cIoU - box_penalty)`` when both box sets are given.

    Args:
        pred: (Q, V, 4) non-negative predicted components.
        target: (Q, V, 4) softened targets.
        aggregation, groups, visible: as ``cross_iou``.
        pred_boxes, gt_boxes: (Q, 4) xyxy, for the code's penalty (``bbox`` / ``polygon``); None = no penalty (the
            paper has none).

    Returns:
        (Q,) losses; the caller sums the positives' and divides by their count.
    """
    overlap = cross_iou(pred, target, aggregation, groups, visible)
    if pred_boxes is None or gt_boxes is None:
        return 1 - overlap
    return 1 - (overlap - box_penalty(overlap, pred_boxes, gt_boxes))
