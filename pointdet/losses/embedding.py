"""CornerNet's associative-embedding grouping loss (Law & Deng 2018, Eq. 4-5): pull and push terms."""

from __future__ import annotations

import torch
from torch import Tensor


def associative_embedding_loss(
    tl_embedding: Tensor, br_embedding: Tensor, mask: Tensor, margin: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Pull the two corners of an object to their mean, push the means of different objects ``margin`` apart.

    Per image with N objects, ``pull = 1/N Σ_k (e_tl,k - ē_k)² + (e_br,k - ē_k)²`` and
    ``push = 1/(N(N-1)) Σ_k Σ_{j≠k} max(0, margin - |ē_k - ē_j|)`` (0 for N < 2); both are **summed over the
    images of the batch**, as CornerNet's ``_ae_loss`` and mmdetection's ``AssociativeEmbeddingLoss`` do, not
    averaged. Under DDP each process sums its own images and the gradients are averaged, as in mmdetection
    (CornerNet's DataParallel summed the whole multi-GPU batch). For N = 1 CornerNet's push is a constant near 1
    (no gradient) and mmdetection's 0; this is mmdetection's.

    Args:
        tl_embedding, br_embedding: (B, M) embeddings gathered at the objects' corners.
        mask: (B, M) 1 for real objects.

    Returns:
        ``(pull, push)`` scalars.
    """
    mask = mask.to(tl_embedding.dtype)
    count = mask.sum(dim=1)  # (B,)
    mean = (tl_embedding + br_embedding) / 2
    pull = ((tl_embedding - mean) ** 2 + (br_embedding - mean) ** 2) * mask
    pull = (pull.sum(dim=1) / count.clamp(min=1)).sum()
    pair_mask = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(mask.shape[1], device=mask.device))
    gap = (margin - (mean[:, :, None] - mean[:, None, :]).abs()).clamp(min=0) * pair_mask
    push = (gap.sum(dim=(1, 2)) / (count * (count - 1)).clamp(min=1)).sum()
    return pull, push
