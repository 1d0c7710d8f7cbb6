"""Box regression losses over positive priors: scale-normalised smooth-L1 (METHODS.md §1.5) and GIoU (§1.6).

The GIoU loss equals ``torchvision.ops.generalized_box_iou_loss`` and mmdetection v2's ``GIoULoss`` (union and
enclosing area clamped at eps 1e-6, as here) on valid boxes, but gives an inverted predicted box (x2 < x1, which
``exact_minmax`` produces) zero area, so the loss stays in [0, 2]. Both references assume valid boxes: a box
inverted along both axes has a positive "area" that can exceed the enclosing box, and the loss is unbounded below
(a tiny RepPoints overfit with ``exact_minmax`` + torchvision's GIoU ran to -1e6).

Both losses index the positives rather than multiplying by a mask, so a non-finite prediction at a negative prior
cannot leak into the loss, and an image without positives still yields a zero that is connected to the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GIOU_EPS = 1e-6


def smooth_l1_box_loss(
    pred: Tensor, target: Tensor, positive: Tensor, scale: Tensor, normaliser: Tensor | float, beta: float = 0.11
) -> Tensor:
    """Smooth-L1 of the boxes divided by a per-prior scale, summed over the positives' 4 coordinates / normaliser.

    This is mmdetection's RepPoints box loss: ``SmoothL1Loss(pred / (4 * stride), target / (4 * stride))`` with
    per-coordinate weights 1 at positives and ``avg_factor`` = number of positives.

    Args:
        pred: (..., 4) xyxy predicted boxes.
        target: (..., 4) xyxy targets.
        positive: (...) bool, the priors that are trained.
        scale: (...) divisor of each prior's box (``point_base_scale * stride``).
        normaliser: divisor of the sum (the number of positives, at least 1).
        beta: smooth-L1 transition point.

    Returns:
        () loss.
    """
    divisor = scale[positive].unsqueeze(-1)
    loss = F.smooth_l1_loss(pred[positive] / divisor, target[positive] / divisor, reduction="sum", beta=beta)
    return loss / normaliser


def giou_box_loss(pred: Tensor, target: Tensor, positive: Tensor, normaliser: Tensor | float) -> Tensor:
    """``1 - GIoU`` summed over the positives / normaliser (GIoU is scale-free, so no per-prior scale).

    Args:
        pred: (..., 4) xyxy predicted boxes.
        target: (..., 4) xyxy targets.
        positive: (...) bool, the priors that are trained.
        normaliser: divisor of the sum (the number of positives, at least 1).

    Returns:
        () loss.
    """
    pred, target = pred[positive], target[positive]  # (Q, 4)
    overlap = (torch.minimum(pred[:, 2:], target[:, 2:]) - torch.maximum(pred[:, :2], target[:, :2])).clamp(min=0)
    overlap = overlap.prod(dim=1)
    area_pred = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(dim=1)  # an inverted box has no area
    area_target = (target[:, 2:] - target[:, :2]).prod(dim=1)
    union = (area_pred + area_target - overlap).clamp(min=GIOU_EPS)
    enclosing = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).clamp(min=0)
    enclosing = enclosing.prod(dim=1).clamp(min=GIOU_EPS)
    giou = overlap / union - (enclosing - union) / enclosing
    return (1 - giou).sum() / normaliser
