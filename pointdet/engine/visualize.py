"""Drawing detections on images."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from pointdet.structures import Detections


def class_color(label: int) -> tuple[int, int, int]:
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: Tensor,
    detections: Detections,
    class_names: Sequence[str],
    score_threshold: float = 0.3,
    skeleton: Sequence[tuple[int, int]] = (),
) -> Image.Image:
    """(3, H, W) uint8 image with boxes, class names and scores of detections above ``score_threshold``, and
    their keypoints (joined by ``skeleton``) when the detections have any. Joints snapped to a joint-heatmap
    peak are filled dots; joints kept at their regressed place are hollow."""
    canvas = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()))
    draw = ImageDraw.Draw(canvas)
    keep = detections.scores >= score_threshold
    line = max(1, round(max(canvas.size) / 300))
    if detections.keypoints is not None:
        for joints, label in zip(detections.keypoints[keep].tolist(), detections.labels[keep].tolist(), strict=True):
            _draw_skeleton(draw, joints, skeleton, class_color(label), line)
    for box, score, label in zip(
        detections.boxes[keep].tolist(), detections.scores[keep].tolist(), detections.labels[keep].tolist(), strict=True
    ):
        color = class_color(label)
        draw.rectangle(box, outline=color, width=line)
        text = f"{class_names[label]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text)
        y = box[1] - (bottom - top) - 2 if box[1] - (bottom - top) - 2 >= 0 else box[1]
        draw.rectangle((box[0], y, box[0] + right - left + 2, y + bottom - top + 2), fill=color)
        draw.text((box[0] + 1, y), text, fill=(0, 0, 0))
    return canvas


def _draw_skeleton(
    draw: ImageDraw.ImageDraw,
    joints: list[list[float]],
    skeleton: Sequence[tuple[int, int]],
    color: tuple[int, int, int],
    line: int,
) -> None:
    """Limbs as lines, joints as dots (filled when snapped, i.e. with a positive score)."""
    for a, b in skeleton:
        draw.line([tuple(joints[a][:2]), tuple(joints[b][:2])], fill=color, width=line)
    radius = line + 1
    for x, y, score in joints:
        box = (x - radius, y - radius, x + radius, y + radius)
        draw.ellipse(box, fill=color if score > 0 else None, outline=(255, 255, 255), width=1)
