"""Penalty-reduced pixel-wise focal loss (CenterNet Eq. 1; METHODS.md §1.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def penalty_reduced_focal_loss(
    logits: Tensor, target: Tensor, num_positives: Tensor | float, alpha: float = 2.0, beta: float = 4.0
) -> Tensor:
    """Focal loss against a Gaussian heatmap, summed and divided by the number of objects.

    ``p`` is clamped to ``[1e-4, 1 - 1e-4]`` as in CenterNet's ``_sigmoid``; the logs are then computed from
    the logits (``logsigmoid``) with the same clamp, which is exact and stable in low precision.

    Args:
        logits: (B, C, H, W) raw heatmap scores.
        target: (B, C, H, W) Gaussian targets, exactly 1 at object centres.
        num_positives: N; the caller clamps it to >= 1 and averages it over processes.
        alpha, beta: focusing and penalty-reduction exponents.

    Returns:
        Scalar loss.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)  # half-precision logits are computed in float32
    logits, target = logits.to(dtype), target.to(dtype)
    clamp = torch.logit(torch.tensor(1e-4, device=logits.device))
    logits = logits.clamp(clamp, -clamp)
    prob = logits.sigmoid()
    positive = target.eq(1).float()
    positive_loss = F.logsigmoid(logits) * (1 - prob).pow(alpha) * positive
    negative_loss = F.logsigmoid(-logits) * prob.pow(alpha) * (1 - target).pow(beta) * (1 - positive)
    return -(positive_loss.sum() + negative_loss.sum()) / num_positives


def normalized_focal_loss(logits: Tensor, target: Tensor, weight: Tensor, num_positives: Tensor | float) -> Tensor:
    """RepPoints v2's foreground loss (METHODS.md §1.4; the code's ``separate_sigmoid_focal_loss``): sigmoid focal
    loss whose positives are weighted by ``weight`` and normalised by the sum of those weights, and whose
    negatives are normalised by ``num_positives``.

    ``p`` is clamped to ``[1e-4, 1 - 1e-4]`` as in one of the code's variants (and ``penalty_reduced_focal_loss``).

    Args:
        logits: (...) raw scores.
        target: (...) 1 at positives, 0 elsewhere.
        weight: (...) weight of each positive (``1 / area``); ignored at negatives.
        num_positives: N, the number of positive entries; the caller clamps it to >= 1.

    The focal balance and exponent are the code's (α 0.25, γ 2).

    Returns:
        Scalar loss; without positives, the negative part alone.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits, target, weight = logits.to(dtype), target.to(dtype), weight.to(dtype)
    clamp = torch.logit(torch.tensor(1e-4, device=logits.device))
    logits = logits.clamp(clamp, -clamp)
    prob = logits.sigmoid()
    positive = target.eq(1)
    positive_weight = torch.where(positive, weight, 0.0)
    positive_loss = -(F.logsigmoid(logits) * (1 - prob).pow(2) * positive_weight).sum() * 0.25
    negative_loss = -(F.logsigmoid(-logits) * prob.pow(2) * (~positive)).sum() * 0.75
    return positive_loss / positive_weight.sum().clamp(min=torch.finfo(dtype).tiny) + negative_loss / num_positives
