"""The embedded "shapes" dataset: a deterministic COCO-format generator that needs no download.

Each image holds 1-4 non-overlapping filled shapes (circle, triangle, square) on a noisy gradient background.
Every shape has a polygon mask and 4 keypoints — its extreme points (top, right, bottom, left) — so
detection, segmentation, pose and extreme-point methods all train on it. Same arguments, same bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pointdet.data.cache import build_once, cache_dir, generation_progress
from pointdet.ops.polygons import signed_area

CLASS_NAMES = ("circle", "triangle", "square")
KEYPOINT_NAMES = ("top", "right", "bottom", "left")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShapesSplits:
    """Paths of a generated shapes dataset."""

    root: Path
    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path


def _polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """(P, 2) polygon vertices of a shape of circumradius ``radius``."""
    count = {"circle": 48, "triangle": 3, "square": 4}[kind]
    theta = angle + np.arange(count) * 2 * math.pi / count
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)


def _extreme_points(polygon: np.ndarray) -> np.ndarray:
    """(4, 2) top, right, bottom, left vertices."""
    return polygon[[polygon[:, 1].argmin(), polygon[:, 0].argmax(), polygon[:, 1].argmax(), polygon[:, 0].argmin()]]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    corner_a, corner_b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0, 1, size)[None, :, None]
    image = corner_a * (1 - ramp) + corner_b * ramp
    image = np.broadcast_to(image, (size, size, 3)) + rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _color_far_from(rng: np.random.Generator, reference: np.ndarray) -> tuple[int, int, int]:
    while True:
        color = rng.integers(0, 256, 3)
        if np.abs(color - reference).max() >= 90:
            return tuple(int(c) for c in color)


def _make_image(rng: np.random.Generator, size: int, image_id: int, first_ann_id: int):
    canvas = _background(rng, size)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    annotations, placed = [], []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            radius = rng.uniform(0.07, 0.24) * size
            cx, cy = rng.uniform(radius, size - radius, 2)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue
        placed.append((cx, cy, radius))
        label = int(rng.integers(len(CLASS_NAMES)))
        polygon = _polygon(CLASS_NAMES[label], cx, cy, radius, rng.uniform(0, 2 * math.pi))
        local = canvas[int(cy), int(cx)].astype(int)
        draw.polygon([tuple(p) for p in polygon], fill=_color_far_from(rng, local))
        x1, y1 = polygon.min(axis=0)
        x2, y2 = polygon.max(axis=0)
        keypoints = np.concatenate([_extreme_points(polygon), np.full((4, 1), 2.0)], axis=1)
        annotations.append(
            {
                "id": first_ann_id + len(annotations),
                "image_id": image_id,
                "category_id": label + 1,
                "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                "area": round(abs(signed_area(polygon)), 2),
                "segmentation": [[round(float(v), 2) for v in polygon.reshape(-1)]],
                "keypoints": [round(float(v), 2) for v in keypoints.reshape(-1)],
                "num_keypoints": 4,
                "iscrowd": 0,
            }
        )
    return image, annotations


def _write_split(folder: Path, name: str, count: int, size: int, seed: int) -> None:
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}[name]])
    images, annotations = [], []
    (folder / name).mkdir(parents=True)
    for index in generation_progress(range(count), count, f"generating {count} shapes images ({name})"):
        image_id = index + 1
        image, anns = _make_image(rng, size, image_id, len(annotations) + 1)
        file_name = f"{image_id:06d}.png"
        image.save(folder / name / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        annotations.extend(anns)
    categories = [
        {
            "id": i + 1,
            "name": n,
            "supercategory": "shape",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [[1, 2], [2, 3], [3, 4], [4, 1]],
        }
        for i, n in enumerate(CLASS_NAMES)
    ]
    document = {"images": images, "annotations": annotations, "categories": categories}
    (folder / f"instances_{name}.json").write_text(json.dumps(document))


def generate_shapes(
    root: str | Path | None = None, num_train: int = 1000, num_val: int = 200, image_size: int = 128, seed: int = 0
) -> ShapesSplits:
    """Generate (or reuse from the cache) the shapes dataset and return its paths.

    Args:
        root: parent folder; defaults to ``cache_dir()``.
        num_train, num_val: images per split.
        image_size: square image side in pixels.
        seed: generator seed; the same arguments always give identical files.
    """
    parent = Path(root) if root is not None else cache_dir()

    def write(staging: Path) -> None:
        _write_split(staging, "train", num_train, image_size, seed)
        _write_split(staging, "val", num_val, image_size, seed)

    folder = build_once(parent / f"shapes-v{FORMAT_VERSION}-{image_size}px-{num_train}-{num_val}-seed{seed}", write)
    return ShapesSplits(
        folder, folder / "instances_train.json", folder / "train", folder / "instances_val.json", folder / "val"
    )
