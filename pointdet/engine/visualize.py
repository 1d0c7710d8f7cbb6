"""Drawing detections on images: boxes, masks, skeletons, projected 3D boxes and a bird's-eye view."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from pointdet.ops.camera import cuboid_corners, lift_to_camera, project_points
from pointdet.ops.masks import instance_masks
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
    """(3, H, W) uint8 image with boxes, class names and scores of detections above ``score_threshold``, their
    instance masks (tinted in the class colour), contours (outlined), landmarks (dots) and keypoints (joined by
    ``skeleton``) when the detections have any. Joints snapped to a joint-heatmap peak are filled dots; joints kept
    at their regressed place are hollow."""
    keep = detections.scores >= score_threshold
    pixels = image.permute(1, 2, 0).cpu().numpy()
    if detections.has_masks:
        pixels = _tint_masks(pixels, detections[keep])
    canvas = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(max(canvas.size) / 300))
    labels = detections.labels[keep].tolist()
    if detections.keypoints is not None:
        for joints, label in zip(detections.keypoints[keep].tolist(), labels, strict=True):
            _draw_skeleton(draw, joints, skeleton, class_color(label), line)
    if detections.contours is not None:
        for contour, label in zip(detections.contours[keep].tolist(), labels, strict=True):
            draw.polygon([tuple(point) for point in contour], outline=class_color(label), width=line)
    if detections.landmarks is not None:
        for points, label in zip(detections.landmarks[keep].tolist(), labels, strict=True):
            _draw_points(draw, points, class_color(label), line + 1)
    for box, score, label in zip(
        detections.boxes[keep].tolist(), detections.scores[keep].tolist(), detections.labels[keep].tolist(), strict=True
    ):
        color = class_color(label)
        x1, y1, x2, y2 = box
        box = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]  # an untrained model can predict w, h < 0
        draw.rectangle(box, outline=color, width=line)
        text = f"{class_names[label]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text)
        y = box[1] - (bottom - top) - 2 if box[1] - (bottom - top) - 2 >= 0 else box[1]
        draw.rectangle((box[0], y, box[0] + right - left + 2, y + bottom - top + 2), fill=color)
        draw.text((box[0] + 1, y), text, fill=(0, 0, 0))
    return canvas


def _tint_masks(pixels: np.ndarray, detections: Detections, opacity: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 with each detection's mask (``ops.masks.instance_masks``) blended in its class colour, lowest
    score first."""
    height, width = pixels.shape[:2]
    masks = instance_masks(detections, height, width).cpu().numpy()
    out = pixels.astype(np.float32)
    for mask, label in zip(masks[::-1], detections.labels.tolist()[::-1], strict=True):
        out[mask] = (1 - opacity) * out[mask] + opacity * np.asarray(class_color(label), dtype=np.float32)
    return out.round().astype(np.uint8)


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


def _draw_points(
    draw: ImageDraw.ImageDraw, points: list[list[float]], color: tuple[int, int, int], radius: int
) -> None:
    """Landmarks as filled dots in ``color`` ringed in white."""
    for x, y in points:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color, outline=(255, 255, 255), width=1)


# Edges of ``ops.camera.cuboid_corners``: bottom face, top face, verticals; the front face gets a cross.
CUBOID_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
FRONT_CROSS = [(0, 5), (1, 4)]


def draw_mono3d(
    image: Tensor,
    detections: Detections,
    calibration: Tensor,
    class_names: Sequence[str],
    score_threshold: float = 0.3,
    ground_truth: Tensor | None = None,
    bird_eye_range: tuple[float, float] = (40.0, 70.0),
) -> Image.Image:
    """Projected 3D boxes on the image (front face crossed) and a bird's-eye panel on the right.

    Args:
        image: (3, H, W) uint8 in the pixels of ``calibration``.
        detections: with ``mono3d`` in the same pixels.
        calibration: (3, 4) camera matrix.
        ground_truth: optional (N, 7) cuboids ``(h, w, l, x, y, z, rotation_y)`` drawn grey in the panel.
        bird_eye_range: panel extent in metres, ``(x width, z depth)``.
    """
    canvas = draw_detections(image, detections, class_names, score_threshold)
    kept = detections[detections.scores >= score_threshold]
    camera = calibration.double()
    mono3d = kept.mono3d.double() if kept.mono3d is not None else torch.zeros(0, 7, dtype=torch.float64)
    location, rotation_y = lift_to_camera(mono3d, camera)
    cuboids = torch.cat([mono3d[:, 3:6], location, rotation_y[:, None]], dim=1)
    draw = ImageDraw.Draw(canvas)
    labels = kept.labels.tolist()
    line = max(1, round(max(canvas.size) / 400))
    for corners, label in zip(cuboid_corners(cuboids), labels, strict=True):
        if (corners[:, 2] <= 0.1).any():
            continue  # behind the camera: the projection is meaningless
        pixels = project_points(corners, camera).tolist()
        for a, b in CUBOID_EDGES + FRONT_CROSS:
            draw.line([tuple(pixels[a]), tuple(pixels[b])], fill=class_color(label), width=line)
    panel = _bird_eye_panel(canvas.size[1], cuboids, labels, ground_truth, bird_eye_range)
    combined = Image.new("RGB", (canvas.size[0] + panel.size[0], canvas.size[1]))
    combined.paste(canvas, (0, 0))
    combined.paste(panel, (canvas.size[0], 0))
    return combined


def _bird_eye_panel(
    height: int, cuboids: Tensor, labels: list[int], ground_truth: Tensor | None, extent: tuple[float, float]
) -> Image.Image:
    """Top view: camera at the bottom centre, x to the right, depth z up; grid every 10 m."""
    width_m, depth_m = extent
    scale = height / depth_m
    width = round(width_m * scale)
    panel = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(panel)

    def to_panel(x: float, z: float) -> tuple[float, float]:
        return width / 2 + x * scale, height - z * scale

    for z in range(10, int(depth_m) + 1, 10):
        draw.line([to_panel(-width_m / 2, z), to_panel(width_m / 2, z)], fill=(60, 60, 66))
        draw.text(to_panel(-width_m / 2 + 0.5, z), f"{z} m", fill=(120, 120, 130))
    draw.line([to_panel(0, 0), to_panel(-width_m / 2, width_m / 2 * 1.7)], fill=(60, 60, 66))
    draw.line([to_panel(0, 0), to_panel(width_m / 2, width_m / 2 * 1.7)], fill=(60, 60, 66))
    boxes = [(c, (150, 150, 150)) for c in ground_truth.double()] if ground_truth is not None else []
    boxes += [(c, class_color(label)) for c, label in zip(cuboids, labels, strict=True)]
    for cuboid, color in boxes:
        footprint = cuboid_corners(cuboid[None])[0, :4][:, [0, 2]].tolist()
        polygon = [to_panel(x, z) for x, z in footprint]
        draw.polygon(polygon, outline=color, width=2)
        draw.line([polygon[0], polygon[1]], fill=(255, 255, 255), width=2)  # the front edge
    return panel
