"""CenterNet's two-bin orientation loss (METHODS.md §2c(c); code ``losses.py compute_rot_loss``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def multibin_rotation_loss(
    rotation: Tensor, bins: Tensor, residuals: Tensor, mask: Tensor, bin_normaliser: Tensor | float | None = None
) -> Tensor:
    """Bin classification (cross-entropy of each bin, summed over objects / ``bin_normaliser``) + smooth-L1 on
    ``(sin, cos)`` of the residual for every active bin (mean over them). The paper writes L1 for the residuals;
    the code's smooth-L1 is the recommended default (METHODS.md App. A #4).

    The code's cross-entropy averages over all ``B x max_objs`` slots, the empty ones with zeroed logits (a
    constant log 2 each, no gradient): ``bin_normaliser = B x max_objs`` gives its gradient (the value without
    that constant); None averages over the real objects.

    Args:
        rotation: (B, M, 8) outputs gathered at the object centres.
        bins: (B, M, 2) int64 bin memberships.
        residuals: (B, M, 2) angle minus bin centre.
        mask: (B, M) 1 for real objects.
        bin_normaliser: divisor of the summed cross-entropies; None = the number of real objects.
    """
    valid = mask.bool()
    outputs, bins, residuals = rotation[valid].float(), bins[valid], residuals[valid]
    if len(outputs) == 0:
        return rotation.sum() * 0.0
    cross_entropy = F.cross_entropy(outputs[:, 0:2], bins[:, 0], reduction="sum")
    cross_entropy = cross_entropy + F.cross_entropy(outputs[:, 4:6], bins[:, 1], reduction="sum")
    loss = cross_entropy / (len(outputs) if bin_normaliser is None else bin_normaliser)
    for which, (sin_channel, cos_channel) in enumerate(((2, 3), (6, 7))):
        active = bins[:, which] == 1
        if active.any():
            angle = residuals[active, which]
            loss = loss + F.smooth_l1_loss(outputs[active, sin_channel], angle.sin())
            loss = loss + F.smooth_l1_loss(outputs[active, cos_channel], angle.cos())
    return loss
