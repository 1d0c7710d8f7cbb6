"""Box-relative instance masks: cropping ground truth into boxes and pasting predictions back (Mask R-CNN's
convention, used by CentripetalNet's mask head; METHODS.md CARD 3 (e'))."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes


def crop_masks(masks: Tensor, boxes: Tensor, index: Tensor, size: int) -> Tensor:
    """Mask targets: ``masks[index[i]]`` resampled inside ``boxes[i]`` (torchvision's Mask R-CNN
    ``project_masks_on_boxes``: RoIAlign, soft values at the borders), the inverse of ``paste_masks``.

    Args:
        masks: (G, H, W) binary masks in image pixels.
        boxes: (N, 4) xyxy boxes in the same pixels.
        index: (N,) int64 mask of each box.
        size: output side M.

    Returns:
        (N, M, M) float in [0, 1].
    """
    if len(boxes) == 0:
        return torch.zeros(0, size, size, device=boxes.device)
    return project_masks_on_boxes(masks.float(), boxes.float(), index, size)


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """Paste box-relative mask probabilities into a ``height x width`` image (torchvision's Mask R-CNN paste).

    Args:
        masks: (N, M, M) probabilities inside each box.
        boxes: (N, 4) xyxy in the image's pixels.
        threshold: probability at which a pixel belongs to the object.

    Returns:
        (N, height, width) bool.
    """
    if len(boxes) == 0:
        return torch.zeros(0, height, width, dtype=torch.bool, device=masks.device)
    pasted = paste_masks_in_image(masks[:, None].float(), boxes.float(), (height, width), padding=1)
    return pasted[:, 0] >= threshold
