"""Masked L1 and smooth-L1 over object slots (METHODS.md §1.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor, num_elements: Tensor | float | None = None) -> Tensor:
    """Sum of ``|pred - target|`` over real objects divided by their number of elements (objects x D).

    The paper writes 1/N over objects; the code divides by objects x D, and the loss weights were tuned with
    the code's normalisation, so we follow the code (METHODS.md App. A #3).

    Args:
        pred: (B, M, D) predictions gathered at the object centres.
        target: (B, M, D).
        mask: (B, M) 1 for real objects, or (B, M, D) 1 for the elements to train (e.g. labelled joints).
        num_elements: normaliser; defaults to the number of masked elements (pass an all-reduced value under DDP).
    """
    return masked_smooth_l1(pred, target, mask, num_elements, beta=0.0)


def masked_smooth_l1(
    pred: Tensor, target: Tensor, mask: Tensor, normaliser: Tensor | float | None = None, beta: float = 1.0
) -> Tensor:
    """Sum of smooth-L1 (``beta``; 0 gives L1) over the masked slots divided by ``normaliser``.

    Args:
        pred, target: (B, M, D).
        mask: (B, M) or (B, M, D) 1 for the slots or elements to train.
        normaliser: divisor; defaults to the number of masked elements.
        beta: smooth-L1 transition point.
    """
    weight = (mask if mask.dim() == pred.dim() else mask.unsqueeze(-1)).to(pred.dtype)
    if normaliser is None:
        normaliser = weight.expand_as(pred).sum()
    dtype = torch.promote_types(pred.dtype, torch.float32)
    loss = F.smooth_l1_loss(pred.to(dtype), target.to(dtype), reduction="none", beta=beta)
    return loss.mul(weight).sum() / (normaliser + 1e-4)
