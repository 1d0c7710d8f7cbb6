"""Soft-NMS (Bodla et al. 2017; METHODS.md §1.11), linear and Gaussian, per class.

Used to merge multi-scale CenterNet detections (Gaussian, sigma 0.5) and by the corner detectors to clean the
matched corner pairs (Gaussian, IoU 0.5).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import box_iou


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    method: Literal["gaussian", "linear"] = "gaussian",
    iou_threshold: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Per-class soft-NMS: repeatedly keep the best box and decay the scores of the rest.

    Gaussian: ``s <- s * exp(-IoU² / sigma)``; linear: ``s <- s * (1 - IoU)`` where ``IoU > iou_threshold``.
    Classes are separated by offsetting boxes (as ``torchvision.ops.batched_nms`` does), so one pass handles
    all classes. The loop runs once per kept box; each step is vectorised over the remaining boxes.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,) scores.
        labels: (N,) class ids; boxes of different classes never suppress each other.
        sigma: Gaussian decay parameter.
        score_threshold: boxes whose (decayed) score falls below it are dropped.
        method: ``gaussian`` or ``linear``.
        iou_threshold: overlap above which the linear method decays (unused by the Gaussian one).

    Returns:
        ``(keep, new_scores)``: indices into the input, in decreasing order of decayed score, and those scores.
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"soft-NMS method must be 'gaussian' or 'linear', got {method!r}")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)
    offset = labels.to(boxes) * (boxes.max() - boxes.min() + 1)
    iou = box_iou(boxes + offset[:, None], boxes + offset[:, None])  # (N, N)
    if method == "gaussian":
        decay = torch.exp(-(iou**2) / sigma)
    else:
        decay = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
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
        current = current * decay[best]
        alive &= current >= score_threshold
    return torch.stack(keep), torch.stack(kept_scores)
