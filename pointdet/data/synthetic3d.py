"""A deterministic synthetic KITTI: cars as shaded cuboids on a ground plane, seen by a pinhole camera.

No KITTI data can be downloaded in tests, so this writes the real KITTI layout (``training/image_2``,
``label_2``, ``calib``, ``ImageSets``) with the KITTI camera (P2 of drive 0000, 1242x375, 1.65 m above the
road). Each car is a body cuboid plus a cabin set back towards the rear, the front face lighter with two
headlights and the rear with red lights, so the heading is visible, not only the axis. Labels carry
truncation (box fraction outside the image), occlusion (0/1/2 from the visible fraction of the silhouette)
and alpha = rotation_y - atan2(x, z). Same arguments, same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pointdet.data.cache import build_once, cache_dir, generation_progress
from pointdet.data.kitti import write_label_file
from pointdet.ops.camera import cuboid_corners, observation_angle, project_points
from pointdet.structures import KittiObject

FORMAT_VERSION = 1
KITTI_SIZE = (1242, 375)
KITTI_P2 = np.array(
    [[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]]
)
CAMERA_HEIGHT = 1.65  # metres above the road; the road is the plane y = 1.65 in the camera frame
# Faces of a cuboid as corner indices of ``cuboid_corners`` (bottom 0-3, top 4-7): front is +x (local).
FACES = {"bottom": (0, 1, 2, 3), "top": (4, 5, 6, 7), "front": (0, 1, 5, 4), "rear": (2, 3, 7, 6),
         "right": (1, 2, 6, 5), "left": (3, 0, 4, 7)}  # fmt: skip
LIGHT = np.array([0.4, -1.0, -0.3]) / np.linalg.norm([0.4, -1.0, -0.3])


@dataclass(frozen=True)
class KittiSplits:
    """Paths of a generated synthetic KITTI dataset (``root`` is what ``KittiDataset`` takes)."""

    root: Path
    train_split: str = "train"
    val_split: str = "val"


def _calibration_text(p2: np.ndarray) -> str:
    identity = "1 0 0 0 1 0 0 0 1"
    rows = [f"P{i}: " + " ".join(f"{v:.12e}" for v in p2.reshape(-1)) for i in range(4)]
    rows += [
        f"R0_rect: {identity}",
        "Tr_velo_to_cam: " + " ".join(["0"] * 12),
        "Tr_imu_to_velo: " + " ".join(["0"] * 12),
    ]
    return "\n".join(rows) + "\n"


def _background(rng: np.random.Generator, width: int, height: int, horizon: float) -> np.ndarray:
    rows = np.arange(height)[:, None, None]
    sky = np.array([150, 180, 225]) + rng.uniform(-25, 25, 3)
    road = np.array([95, 95, 100]) + rng.uniform(-20, 20, 3)
    below = np.clip((rows - horizon) / max(1.0, height - horizon), 0, 1)
    image = np.where(rows < horizon, sky - 0.2 * rows, road * (0.8 + 0.4 * below))
    # No per-pixel noise: it would make every PNG ~0.6 MB instead of a few KB.
    return np.clip(np.broadcast_to(image, (height, width, 3)), 0, 255).astype(np.uint8)


def _draw_lanes(draw: ImageDraw.ImageDraw, p2: np.ndarray, rng: np.random.Generator) -> None:
    """Dashed lane markings on the road, for a sense of depth."""
    for lane_x in (-5.25, -1.75, 1.75, 5.25):
        lane_x += rng.uniform(-0.3, 0.3)
        for start in np.arange(3.0, 80.0, 6.0):
            quad = torch.tensor(
                [[lane_x - 0.08, CAMERA_HEIGHT, start], [lane_x + 0.08, CAMERA_HEIGHT, start],
                 [lane_x + 0.08, CAMERA_HEIGHT, start + 3], [lane_x - 0.08, CAMERA_HEIGHT, start + 3]],
                dtype=torch.float64,
            )  # fmt: skip
            points = project_points(quad, torch.from_numpy(p2)).tolist()
            draw.polygon([tuple(p) for p in points], fill=(225, 225, 215))


def _car_parts(h: float, w: float, length: float, x: float, z: float, yaw: float) -> list[torch.Tensor]:
    """(8, 3) corners of the body and of the cabin (set back towards the rear) of one car."""
    body_h, cabin_h = 0.55 * h, 0.45 * h
    body = torch.tensor([[body_h, w, length, x, CAMERA_HEIGHT, z, yaw]], dtype=torch.float64)
    back = -0.12 * length  # cabin centre, along the car's local +x (front)
    # KITTI yaw rotates local +x to (cos, 0, -sin) in the camera frame (see ops.camera.cuboid_corners).
    cabin_x, cabin_z = x + back * math.cos(yaw), z - back * math.sin(yaw)
    cabin = torch.tensor(
        [[cabin_h, 0.9 * w, 0.55 * length, cabin_x, CAMERA_HEIGHT - body_h, cabin_z, yaw]], dtype=torch.float64
    )
    return [cuboid_corners(body)[0], cuboid_corners(cabin)[0]]


def _draw_car(draw: ImageDraw.ImageDraw, parts: list[torch.Tensor], p2: torch.Tensor, color: np.ndarray) -> None:
    """Painter's algorithm over the faces of body and cabin that face the camera, shaded by the light."""
    faces = []
    for part in parts:
        centre = part.mean(dim=0)
        for name, index in FACES.items():
            corners = part[list(index)]
            face_centre = corners.mean(dim=0)
            normal = (face_centre - centre).numpy()
            normal /= np.linalg.norm(normal) + 1e-9
            if float(np.dot(normal, face_centre.numpy())) >= 0:  # facing away from the camera at the origin
                continue
            shade = 0.55 + 0.45 * max(0.0, float(-np.dot(normal, LIGHT)))
            tint = {"front": 1.25, "rear": 0.8}.get(name, 1.0)
            fill = tuple(int(v) for v in np.clip(color * shade * tint, 0, 255))
            faces.append((float(face_centre.norm()), name, corners, fill))
    for _, name, corners, fill in sorted(faces, key=lambda f: -f[0]):
        pixels = project_points(corners, p2)
        draw.polygon([tuple(p) for p in pixels.tolist()], fill=fill, outline=(30, 30, 30))
        if name in ("front", "rear"):
            _draw_lights(draw, corners, p2, (255, 240, 150) if name == "front" else (220, 30, 30))


def _draw_lights(draw: ImageDraw.ImageDraw, face: torch.Tensor, p2: torch.Tensor, color: tuple) -> None:
    """Two lamps near the upper corners of a front/rear face (corners: 2 bottom, then 2 top)."""
    bottom_a, bottom_b, top_b, top_a = face
    for side_bottom, side_top, other_bottom in ((bottom_a, top_a, bottom_b), (bottom_b, top_b, bottom_a)):
        centre = side_bottom + 0.6 * (side_top - side_bottom) + 0.18 * (other_bottom - side_bottom)
        half = 0.08 * (other_bottom - side_bottom).norm()
        lamp = torch.stack([centre + torch.tensor([d0, d1, 0.0], dtype=centre.dtype) * half for d0, d1 in
                            ((-1, -1), (1, -1), (1, 1), (-1, 1))])  # fmt: skip
        draw.polygon([tuple(p) for p in project_points(lamp, p2).tolist()], fill=color)


def _place_cars(rng: np.random.Generator, count: int) -> list[tuple[float, ...]]:
    cars: list[tuple[float, ...]] = []
    for _ in range(count):
        for _attempt in range(30):
            h, w, length = rng.uniform(1.4, 1.7), rng.uniform(1.55, 1.85), rng.uniform(3.5, 4.6)
            z = rng.uniform(5.0, 45.0)
            x = rng.uniform(-0.45, 0.45) * z * KITTI_SIZE[0] / KITTI_P2[0, 0]  # inside the view, roughly
            yaw = rng.uniform(-math.pi, math.pi)
            if all(math.hypot(x - c[3], z - c[5]) > (length + c[2]) / 2 + 0.8 for c in cars):
                cars.append((h, w, length, x, CAMERA_HEIGHT, z, yaw))
                break
    return cars


def _render(rng: np.random.Generator, size: tuple[int, int], p2: np.ndarray) -> tuple[Image.Image, list[KittiObject]]:
    width, height = size
    projection = torch.from_numpy(p2)
    image = Image.fromarray(_background(rng, width, height, horizon=p2[1, 2]))
    draw = ImageDraw.Draw(image)
    _draw_lanes(draw, p2, rng)
    cars = sorted(_place_cars(rng, int(rng.integers(1, 6))), key=lambda c: -c[5])  # far to near
    silhouettes, boxes = [], []
    for h, w, length, x, _, z, yaw in cars:
        parts = _car_parts(h, w, length, x, z, yaw)
        _draw_car(draw, parts, projection, rng.uniform(40, 230, 3))
        pixels = project_points(torch.cat(parts), projection).numpy()
        boxes.append(np.concatenate([pixels.min(axis=0), pixels.max(axis=0)]))
        mask = Image.new("L", size)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in _hull(pixels)], fill=1)
        silhouettes.append(np.asarray(mask, dtype=bool))
    objects = []
    for i, ((h, w, length, x, y, z, yaw), box) in enumerate(zip(cars, boxes, strict=True)):
        clipped = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])
        full_area = (box[2] - box[0]) * (box[3] - box[1])
        clipped_area = max(0.0, clipped[2] - clipped[0]) * max(0.0, clipped[3] - clipped[1])
        if clipped_area < 0.5 * full_area or clipped[3] - clipped[1] < 4:
            continue  # mostly outside the view
        visible = silhouettes[i].copy()
        for nearer in silhouettes[i + 1 :]:
            visible &= ~nearer
        fraction = visible.sum() / max(1, silhouettes[i].sum())
        occluded = 0 if fraction > 0.8 else 1 if fraction > 0.4 else 2
        alpha = float(observation_angle(torch.tensor(yaw), torch.tensor(x), torch.tensor(z)))
        objects.append(
            KittiObject(
                "Car",
                round(1 - clipped_area / full_area, 2),
                occluded,
                alpha,
                tuple(float(v) for v in clipped),
                (h, w, length),
                (x, y, z),
                float(yaw),
            )  # fmt: skip
        )
    return image, objects


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain) of (N, 2) points."""
    points = points[np.lexsort((points[:, 1], points[:, 0]))]

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    def half(sequence):
        chain: list[np.ndarray] = []
        for p in sequence:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    return np.array(half(points) + half(points[::-1]))


def generate_kitti_scenes(
    root: str | Path | None = None,
    num_train: int = 400,
    num_val: int = 100,
    image_size: tuple[int, int] = KITTI_SIZE,
    seed: int = 0,
) -> KittiSplits:
    """Generate (or reuse from the cache) a synthetic KITTI dataset and return its paths.

    Args:
        root: parent folder; defaults to ``data.cache.cache_dir()``.
        num_train, num_val: images per split (ids 0..num_train-1 train, the rest val).
        image_size: ``(width, height)``; the KITTI camera is scaled with it.
        seed: generator seed; the same arguments always give identical files.
    """
    width, height = image_size
    parent = Path(root) if root is not None else cache_dir()
    name = f"kitti-synthetic-v{FORMAT_VERSION}-{width}x{height}-{num_train}-{num_val}-seed{seed}"
    return KittiSplits(build_once(parent / name, lambda staging: _write(staging, num_train, num_val, image_size, seed)))


def _write(folder: Path, num_train: int, num_val: int, size: tuple[int, int], seed: int) -> None:
    p2 = KITTI_P2.copy()
    p2[:2] *= size[0] / KITTI_SIZE[0]
    p2[1, 2] = KITTI_P2[1, 2] * size[1] / KITTI_SIZE[1]
    for sub in ("image_2", "label_2", "calib"):
        (folder / "training" / sub).mkdir(parents=True)
    (folder / "ImageSets").mkdir()
    names = [f"{i:06d}" for i in range(num_train + num_val)]
    calibration = _calibration_text(p2)
    scenes = generation_progress(enumerate(names), len(names), f"generating {len(names)} synthetic KITTI scenes")
    for index, name in scenes:
        rng = np.random.default_rng([seed, index])
        image, objects = _render(rng, size, p2)
        image.save(folder / "training" / "image_2" / f"{name}.png")
        write_label_file(folder / "training" / "label_2" / f"{name}.txt", objects)
        (folder / "training" / "calib" / f"{name}.txt").write_text(calibration)
    (folder / "ImageSets" / "train.txt").write_text("\n".join(names[:num_train]) + "\n")
    (folder / "ImageSets" / "val.txt").write_text("\n".join(names[num_train:]) + "\n")
