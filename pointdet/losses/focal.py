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
