"""Batched inference with test-time augmentation: the model's own flip test at each scale, optionally each scale's
detections kept to its valid box sizes (the ATSS / LSNet multi-scale test), and the scales merged by the
post-processor's own ``merge_scales`` when it has one (LSNet's box voting), else by ``decoders.tta.merge_scales``
(CenterNet's Gaussian soft-NMS, sigma 0.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from pointdet.configs.validation import is_box_range
from pointdet.decoders.tta import keep_box_sizes, merge_scales
from pointdet.structures import Detections


def _resize_batch(images: Tensor, scale: float, multiple: int = 32) -> tuple[Tensor, float, float]:
    """Resize a uint8 batch by ``scale`` to a size divisible by ``multiple``; returns the exact x/y factors."""
    height, width = images.shape[-2:]
    new_h = max(multiple, round(height * scale / multiple) * multiple)
    new_w = max(multiple, round(width * scale / multiple) * multiple)
    resized = F.interpolate(
        images.float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=scale < 1
    )
    return resized.round().clamp(0, 255).to(torch.uint8), new_w / width, new_h / height


def check_box_ranges(box_ranges: Sequence[tuple[float, float]], num_scales: int) -> None:
    """Refuse ``box_ranges`` that are neither empty nor one ``(low, high)`` pair with ``0 <= low < high`` per scale.

    Raises:
        ValueError: saying which.
    """
    if box_ranges and len(box_ranges) != num_scales:
        raise ValueError(
            f"box_ranges must be one (low, high) pair per test scale: {num_scales} scale(s), {len(box_ranges)} range(s)"
        )
    for pair in box_ranges:
        if not is_box_range(pair):
            raise ValueError(f"each box range must be (low, high) with 0 <= low < high, got {tuple(pair)}")


def predict_images(
    model: torch.nn.Module,
    images: Tensor,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    k: int = 100,
    soft_nms_sigma: float = 0.5,
    box_ranges: Sequence[tuple[float, float]] = (),
) -> list[Detections]:
    """Detections in the pixels of ``images`` ((B, 3, H, W) uint8, H and W multiples of 32).

    Args:
        model: has ``predict(images, flip, k)``.
        flip: flip test at every scale.
        scales: test scales; any but the single scale 1 without ``box_ranges`` goes through the merge (the
            post-processor's ``merge_scales``, else soft-NMS), one scale too (as the code votes its flip-only test).
        k: detections kept per image (per scale before the merge, as after it).
        box_ranges: empty, or one ``(low, high)`` per scale: that scale keeps only the detections whose box size
            ``sqrt(area)`` is in ``[low, high]`` (``high`` may be ``inf``), measured in the pixels of the image the
            network saw at that scale and applied after its NMS and top ``k``, before the merge, as the LSNet code's
            ATSS-style test (``decoders.tta.keep_box_sizes``).

    Raises:
        ValueError: ``box_ranges`` not one pair per scale, or a pair without ``0 <= low < high``.
    """
    check_box_ranges(box_ranges, len(scales))
    images = images.to(next(model.parameters()).device)
    if tuple(scales) == (1.0,) and not box_ranges:
        return model.predict(images, flip=flip, k=k)
    per_scale = []
    for index, scale in enumerate(scales):
        resized, factor_x, factor_y = _resize_batch(images, scale) if scale != 1.0 else (images, 1.0, 1.0)
        detections = model.predict(resized, flip=flip, k=k)
        if box_ranges:
            detections = [keep_box_sizes(d, *box_ranges[index]) for d in detections]
        per_scale.append([d.rescale(factor_x, factor_y) for d in detections])
    own_merge = getattr(getattr(model, "postprocess", None), "merge_scales", None)
    if own_merge is not None:
        return [own_merge(list(parts), k) for parts in zip(*per_scale, strict=True)]
    return [merge_scales(list(parts), k, soft_nms_sigma) for parts in zip(*per_scale, strict=True)]


def to_original_pixels(
    detections: list[Detections], scales: Tensor, orig_sizes: Sequence[tuple[int, int]]
) -> list[Detections]:
    """Undo the letterbox resize (all pixel coordinates ``/ scale``) and clip the boxes to the original image."""
    out = []
    for dets, scale, (height, width) in zip(detections, scales.tolist(), orig_sizes, strict=True):
        dets = dets.rescale(scale, scale)
        boxes = dets.boxes.clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        out.append(replace(dets, boxes=boxes))
    return out
