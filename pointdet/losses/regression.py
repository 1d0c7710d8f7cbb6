"""Masked L1 over object slots, normalised per element as CenterNet's ``RegL1Loss`` (METHODS.md §1.5)."""

from __future__ import annotations

import torch
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
    weight = (mask if mask.dim() == pred.dim() else mask.unsqueeze(-1)).to(pred.dtype)
    if num_elements is None:
        num_elements = weight.expand_as(pred).sum()
    dtype = torch.promote_types(pred.dtype, torch.float32)
    return (pred.to(dtype) - target.to(dtype)).abs().mul(weight).sum() / (num_elements + 1e-4)
