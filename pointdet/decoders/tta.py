"""Test-time augmentation merging, in one place: a mirrored pass mapped back, the detections of one test scale kept
to its valid box sizes, and multi-scale detections merged.

Flip merging that works on maps (CenterNet's averaged heatmaps, its pose joints) lives in that family's
post-processor, because it happens before decoding; merging decoded detections happens here.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor
from torchvision.ops import box_area

from pointdet.ops.nms import soft_nms
from pointdet.structures import Detections


def mirror_boxes(boxes: Tensor, width: float | Tensor) -> Tensor:
    """(..., 4) xyxy boxes of a horizontally flipped image mapped back to the original: ``x -> width - x``
    (``width`` a number or a tensor broadcasting against (...), e.g. one width per image)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def mirror(detections: Detections, width: float) -> Detections:
    """Detections of a horizontally flipped image mapped back to the original (boxes only)."""
    return replace(detections, boxes=mirror_boxes(detections.boxes, width))


def keep_box_sizes(detections: Detections, low: float, high: float) -> Detections:
    """The detections whose box size ``sqrt(area)`` lies in ``[low, high]``, both ends included (``high`` may be
    ``inf``), measured in the pixels the boxes are in.

    The per-scale valid ranges of the ATSS / LSNet multi-scale test (Duankaiwen/LSNet
    code/mmdet/models/detectors/lsnet.py ``remove_boxes``: ``low**2 <= area <= high**2``, area ``(x2 - x1)(y2 - y1)``).
    """
    area = box_area(detections.boxes)
    return detections[(area >= low * low) & (area <= high * high)]


def merge_scales(parts: list[Detections], k: int = 100, soft_nms_sigma: float = 0.5) -> Detections:
    """Detections of one image at several test scales (already in the same pixels) merged as CenterNet does
    (METHODS.md §2a(d) step 5): concatenated, per-class Gaussian soft-NMS, the top ``k`` over all classes."""
    combined = Detections.cat(parts)
    keep, scores = soft_nms(combined.boxes, combined.scores, combined.labels, sigma=soft_nms_sigma, max_kept=k)
    return replace(combined[keep], scores=scores)
