"""Box-relative instance masks: cropping ground truth into boxes and pasting predictions back (Mask R-CNN's
convention, used by CentripetalNet's mask head; METHODS.md CARD 3 (e')); polygon masks (LSNet's contours,
rasterised on the image as its code does with ``pycocotools``, CARD 4 (d) step 5)."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes

from pointdet.structures import Detections


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


def rasterise_polygons(polygons: Tensor, height: int, width: int) -> Tensor:
    """Fill closed polygons on a ``height x width`` image with pycocotools (COCO's own polygon-to-mask rule).

    Args:
        polygons: (N, V, 2) xy pixels, V >= 3.

    Returns:
        (N, height, width) bool on the polygons' device.
    """
    if len(polygons) == 0:
        return torch.zeros(0, height, width, dtype=torch.bool, device=polygons.device)
    flat = polygons.detach().double().flatten(1).cpu().tolist()
    encoded = mask_utils.frPyObjects(flat, height, width)
    masks = np.ascontiguousarray(mask_utils.decode(encoded).transpose(2, 0, 1))
    return torch.from_numpy(masks).to(device=polygons.device, dtype=torch.bool)


def instance_masks(detections: Detections, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """(N, height, width) bool masks of detections in a ``height x width`` image: box-relative ``masks`` pasted
    (thresholded at ``threshold``), or ``contours`` rasterised."""
    if detections.masks is not None:
        return paste_masks(detections.masks, detections.boxes, height, width, threshold)
    if detections.contours is not None:
        return rasterise_polygons(detections.contours, height, width)
    raise ValueError("these detections have no masks: neither box-relative masks nor contours")
