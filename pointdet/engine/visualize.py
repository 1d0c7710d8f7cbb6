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
    image: Tensor, detections: Detections, class_names: Sequence[str], score_threshold: float = 0.3
) -> Image.Image:
    """(3, H, W) uint8 image with boxes, class names and scores of detections above ``score_threshold``."""
    canvas = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()))
    draw = ImageDraw.Draw(canvas)
    keep = detections.scores >= score_threshold
    line = max(1, round(max(canvas.size) / 300))
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
