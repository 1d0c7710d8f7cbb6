"""Gaussian soft-NMS (Bodla et al. 2017), used to merge multi-scale CenterNet detections (METHODS.md §1.11)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def soft_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, sigma: float = 0.5, score_threshold: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """Per-class Gaussian soft-NMS: repeatedly keep the best box and decay the rest by ``exp(-IoU²/σ)``.

    Classes are separated by offsetting boxes (as ``torchvision.ops.batched_nms`` does), so one pass
    handles all classes. Each step is vectorised over the remaining boxes.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,) scores.
        labels: (N,) class ids; boxes of different classes never suppress each other.
        sigma: Gaussian decay parameter.
        score_threshold: boxes whose decayed score falls below it are dropped.

    Returns:
        ``(keep, new_scores)``: indices into the input, in decreasing order of decayed score, and those scores.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)
    offset = labels.to(boxes) * (boxes.max() - boxes.min() + 1)
    iou = box_iou(boxes + offset[:, None], boxes + offset[:, None])  # (N, N)
    current = scores.clone()
    alive = current >= score_threshold
    keep, kept_scores = [], []
    for _ in range(len(scores)):
        if not alive.any():
            break
        best = torch.where(alive, current, current.new_tensor(-1.0)).argmax()
        keep.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        current = current * torch.exp(-(iou[best] ** 2) / sigma)
        alive &= current >= score_threshold
    return torch.stack(keep), torch.stack(kept_scores)
