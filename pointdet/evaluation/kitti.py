"""KITTI object evaluation: 2D AP, AOS, BEV AP and 3D AP at Easy / Moderate / Hard (METHODS.md §1.12).

A NumPy re-implementation of the official devkit protocol (``evaluate_object.cpp`` and its Python port):

- difficulty filters: min box height 40/25/25 px, max occlusion 0/1/2, max truncation 0.15/0.30/0.50;
  ground truth outside the filter, and of the neighbouring class (Van for Car, Person_sitting for
  Pedestrian), is "ignored" — matching it is neither a TP nor a FP; detections lower than the min height
  are ignored the same way; 2D detections inside DontCare regions are not false positives;
- greedy matching per image at each score threshold; thresholds chosen where recall crosses the 41 sample
  points 0, 1/40, ..., 1; precision made monotone; AP averages precision at 11 points (0, 0.1, ..., 1:
  the paper's protocol) or at 40 points (1/40, ..., 1: the official protocol since 2019);
- AOS weighs each TP by ``(1 + cos(delta_alpha)) / 2``.

Minimum overlaps: ``official`` (Car 0.7, Pedestrian/Cyclist 0.5 for 2D, BEV and 3D), ``loose`` (the
devkit's second setting: 2D as official, BEV/3D 0.5 / 0.25), ``paper`` (0.5 everywhere: the CenterNet
paper's 2D/AOS/BEV protocol), or one number for every class and metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pointdet.ops.camera import cuboid_corners, lift_to_camera
from pointdet.ops.polygons import signed_area
from pointdet.structures import Detections, KittiObject

DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
METRICS = ("2d", "aos", "bev", "3d")
OVERLAPS = {
    "official": {"car": (0.7, 0.7, 0.7), "pedestrian": (0.5, 0.5, 0.5), "cyclist": (0.5, 0.5, 0.5)},
    "loose": {"car": (0.7, 0.5, 0.5), "pedestrian": (0.5, 0.25, 0.25), "cyclist": (0.5, 0.25, 0.25)},
    "paper": {"car": (0.5, 0.5, 0.5), "pedestrian": (0.5, 0.5, 0.5), "cyclist": (0.5, 0.5, 0.5)},
}
SAMPLE_POINTS = 41


# ------------------------------------------------------------------------------------------------- overlaps
def image_overlaps(boxes: np.ndarray, query: np.ndarray, over_first_area: bool = False) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU, or intersection over the area of ``boxes`` (DontCare test)."""
    width = np.minimum(boxes[:, None, 2], query[None, :, 2]) - np.maximum(boxes[:, None, 0], query[None, :, 0])
    height = np.minimum(boxes[:, None, 3], query[None, :, 3]) - np.maximum(boxes[:, None, 1], query[None, :, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if over_first_area:
        return intersection / np.maximum(area[:, None], 1e-12)
    query_area = (query[:, 2] - query[:, 0]) * (query[:, 3] - query[:, 1])
    return intersection / np.maximum(area[:, None] + query_area[None] - intersection, 1e-12)


def _clip(polygon: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of ``polygon`` on the left of the directed edge a -> b."""

    def side(p):
        return (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])

    out = []
    for current, following in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        s_current, s_following = side(current), side(following)
        if s_current >= 0:
            out.append(current)
        if s_current * s_following < 0:
            t = s_current / (s_current - s_following)
            out.append(current + t * (following - current))
    return np.array(out).reshape(-1, 2)


def _area(polygon: np.ndarray) -> float:
    return abs(signed_area(polygon)) if len(polygon) >= 3 else 0.0


def _counter_clockwise(polygon: np.ndarray) -> np.ndarray:
    return polygon if signed_area(polygon) > 0 else polygon[::-1]


def ground_polygons(cuboids: np.ndarray) -> np.ndarray:
    """(N, 7) ``(h, w, l, x, y, z, rotation_y)`` -> (N, 4, 2) bird's-eye ``(x, z)`` footprints."""
    if len(cuboids) == 0:
        return np.zeros((0, 4, 2))
    corners = cuboid_corners(torch.as_tensor(cuboids, dtype=torch.float64)).numpy()
    return corners[:, :4][..., [0, 2]]


def cuboid_overlaps(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 7) x (M, 7) cuboids -> (N, M) bird's-eye IoU of the footprints and (N, M) 3D IoU, from one
    footprint intersection per pair."""
    bird_eye = np.zeros((len(first), len(second)))
    full = np.zeros((len(first), len(second)))
    polygons_a = [_counter_clockwise(p) for p in ground_polygons(first)]
    polygons_b = [_counter_clockwise(p) for p in ground_polygons(second)]
    for i, a in enumerate(polygons_a):
        for j, b in enumerate(polygons_b):
            clipped = a
            for start, end in zip(b, np.roll(b, -1, axis=0), strict=True):
                clipped = _clip(clipped, start, end)
                if len(clipped) == 0:
                    break
            intersection = _area(clipped)
            if intersection <= 0:
                continue
            area_a, area_b = _area(a), _area(b)
            bird_eye[i, j] = intersection / (area_a + area_b - intersection)
            (h_a, y_a), (h_b, y_b) = first[i, [0, 4]], second[j, [0, 4]]
            vertical = min(y_a, y_b) - max(y_a - h_a, y_b - h_b)  # y points down; a box spans [y - h, y]
            if vertical > 0:
                volume = intersection * vertical
                full[i, j] = volume / (area_a * h_a + area_b * h_b - volume)
    return bird_eye, full


# ---------------------------------------------------------------------------------------------- protocol
def _filters(gt: Sequence[KittiObject], dt: Sequence[KittiObject], name: str, difficulty: int):
    """Devkit ``clean_data``: per-object ignore flags (0 counted, 1 ignored, -1 not this class) and DontCare boxes."""
    ignored_gt = np.full(len(gt), -1)
    for i, obj in enumerate(gt):
        kind = obj.type.lower()
        valid = 1 if kind == name else 0 if NEIGHBOUR.get(name) == kind else -1
        too_hard = (
            obj.occluded > MAX_OCCLUSION[difficulty]
            or obj.truncated > MAX_TRUNCATION[difficulty]
            or obj.box[3] - obj.box[1] <= MIN_HEIGHT[difficulty]
        )
        if valid == 1 and not too_hard:
            ignored_gt[i] = 0
        elif valid == 0 or (valid == 1 and too_hard):
            ignored_gt[i] = 1
    ignored_dt = np.full(len(dt), -1)
    for j, obj in enumerate(dt):
        if abs(obj.box[3] - obj.box[1]) < MIN_HEIGHT[difficulty]:
            ignored_dt[j] = 1
        elif obj.type.lower() == name:
            ignored_dt[j] = 0
    dontcare = np.array([o.box for o in gt if o.type == "DontCare"], dtype=np.float64).reshape(-1, 4)
    return ignored_gt, ignored_dt, dontcare


def _match(overlaps, scores, gt_alpha, dt_alpha, ignored_gt, ignored_dt, dontcare_overlaps, min_overlap, threshold):
    """Devkit ``compute_statistics`` for one image. ``threshold=None`` is the first pass, which only collects the
    scores of the true positives (best-scoring match of each ground truth).

    Returns:
        tp, fp, fn, summed orientation similarity of the TPs, and the TP scores.
    """
    assigned = np.zeros(len(scores), dtype=bool)
    below = np.zeros(len(scores), dtype=bool) if threshold is None else scores < threshold
    usable = (ignored_dt != -1) & ~below
    tp = fp = fn = 0
    similarity, tp_scores = 0.0, []
    for i in np.flatnonzero(ignored_gt != -1):
        candidates = np.flatnonzero(usable & ~assigned & (overlaps[:, i] > min_overlap))
        best = -1
        if len(candidates) and threshold is None:
            best = candidates[np.argmax(scores[candidates])]
        elif len(candidates):
            counted = candidates[ignored_dt[candidates] == 0]
            # a counted detection with the largest overlap, else any ignored one (the first such, as the devkit)
            best = counted[np.argmax(overlaps[counted, i])] if len(counted) else candidates[0]
        if best < 0:
            fn += ignored_gt[i] == 0
        elif ignored_gt[i] == 1 or ignored_dt[best] == 1:
            assigned[best] = True
        else:
            tp += 1
            tp_scores.append(scores[best])
            similarity += (1.0 + np.cos(gt_alpha[i] - dt_alpha[best])) / 2.0
            assigned[best] = True
    if threshold is not None:
        unmatched = usable & ~assigned & (ignored_dt == 0)
        if dontcare_overlaps is not None and dontcare_overlaps.size:
            unmatched &= ~(dontcare_overlaps > min_overlap).any(axis=1)
        fp = int(unmatched.sum())
    return tp, fp, fn, similarity, tp_scores


def _thresholds(tp_scores: list[float], num_gt: int) -> np.ndarray:
    """Scores where the recall first reaches 0, 1/40, ..., 1 (devkit ``get_thresholds``)."""
    scores = np.sort(np.asarray(tp_scores))[::-1]
    thresholds, current = [], 0.0
    for i, score in enumerate(scores):
        left = (i + 1) / num_gt
        right = (i + 2) / num_gt if i < len(scores) - 1 else left
        if right - current < current - left and i < len(scores) - 1:
            continue
        thresholds.append(score)
        current += 1.0 / (SAMPLE_POINTS - 1)
    return np.asarray(thresholds)


def _average(curve: np.ndarray, recall_points: int) -> float:
    if recall_points == 11:
        return float(curve[::4].mean())  # 0, 0.1, ..., 1 of the 41 samples
    if recall_points == 40:
        return float(curve[1:].mean())
    raise ValueError(f"recall_points must be 11 or 40, got {recall_points}")


def evaluate_kitti(
    ground_truth: Sequence[Sequence[KittiObject]],
    detections: Sequence[Sequence[KittiObject]],
    classes: Sequence[str] = ("Car",),
    recall_points: int = 11,
    min_overlaps: str | float = "official",
) -> dict[str, float]:
    """KITTI metrics in [0, 1], keyed ``"<Class>/<2d|aos|bev|3d>/<easy|moderate|hard>"``.

    Args:
        ground_truth: per image, its label-file objects (all types, DontCare included).
        detections: per image (same order), the detected objects with scores.
        classes: the classes to evaluate.
        recall_points: 11 (the paper's protocol) or 40 (the official one since 2019).
        min_overlaps: ``official``, ``loose``, ``paper`` or one IoU for every class and metric.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection lists")
    metrics: dict[str, float] = {}
    per_image = [_image_arrays(gt, dt) for gt, dt in zip(ground_truth, detections, strict=True)]  # class-free
    for cls in classes:
        name = cls.lower()
        if isinstance(min_overlaps, str):
            overlap_2d, overlap_bev, overlap_3d = OVERLAPS[min_overlaps][name]
        else:
            overlap_2d = overlap_bev = overlap_3d = float(min_overlaps)
        for metric, overlap in (("2d", overlap_2d), ("bev", overlap_bev), ("3d", overlap_3d)):
            for d, difficulty in enumerate(DIFFICULTIES):
                precision, orientation = _curves(ground_truth, detections, per_image, name, d, metric, overlap)
                metrics[f"{cls}/{metric}/{difficulty}"] = _average(precision, recall_points)
                if metric == "2d":
                    metrics[f"{cls}/aos/{difficulty}"] = _average(orientation, recall_points)
    order = [f"{c}/{m}/{d}" for c in classes for m in METRICS for d in DIFFICULTIES]
    return {key: metrics[key] for key in order}


def _image_arrays(gt: Sequence[KittiObject], dt: Sequence[KittiObject]) -> dict[str, np.ndarray]:
    def cuboids(objects):
        return np.array([(*o.dimensions, *o.location, o.rotation_y) for o in objects], dtype=np.float64).reshape(-1, 7)

    gt_boxes = np.array([o.box for o in gt], dtype=np.float64).reshape(-1, 4)
    dt_boxes = np.array([o.box for o in dt], dtype=np.float64).reshape(-1, 4)
    bird_eye, full = cuboid_overlaps(cuboids(dt), cuboids(gt))
    return {
        "2d": image_overlaps(dt_boxes, gt_boxes),
        "bev": bird_eye,
        "3d": full,
        "scores": np.array([o.score for o in dt], dtype=np.float64),
        "gt_alpha": np.array([o.alpha for o in gt], dtype=np.float64),
        "dt_alpha": np.array([o.alpha for o in dt], dtype=np.float64),
        "dt_boxes": dt_boxes,
    }


def _curves(ground_truth, detections, per_image, name, difficulty, metric, min_overlap):
    """Interpolated precision and orientation similarity at the 41 sampled recall points."""
    filters = [_filters(gt, dt, name, difficulty) for gt, dt in zip(ground_truth, detections, strict=True)]
    num_gt = sum(int((f[0] == 0).sum()) for f in filters)
    precision, orientation = np.zeros(SAMPLE_POINTS), np.zeros(SAMPLE_POINTS)
    if num_gt == 0:
        return precision, orientation
    dontcare = [
        image_overlaps(arrays["dt_boxes"], f[2], over_first_area=True) if metric == "2d" else None
        for arrays, f in zip(per_image, filters, strict=True)
    ]

    def statistics(threshold):
        totals = np.zeros(4)
        scores = []
        for arrays, (ignored_gt, ignored_dt, _), dc in zip(per_image, filters, dontcare, strict=True):
            tp, fp, fn, similarity, tp_scores = _match(
                arrays[metric], arrays["scores"], arrays["gt_alpha"], arrays["dt_alpha"], ignored_gt, ignored_dt, dc,
                min_overlap, threshold,
            )  # fmt: skip
            totals += (tp, fp, fn, similarity)
            scores += tp_scores
        return totals, scores

    _, tp_scores = statistics(None)
    for k, threshold in enumerate(_thresholds(tp_scores, num_gt)[:SAMPLE_POINTS]):
        (tp, fp, _, similarity), _ = statistics(threshold)
        if tp + fp > 0:
            precision[k] = tp / (tp + fp)
            orientation[k] = similarity / (tp + fp)
    # monotone (max to the right), as the devkit
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    orientation = np.maximum.accumulate(orientation[::-1])[::-1]
    return precision, orientation


def format_kitti_metrics(metrics: dict[str, float]) -> str:
    """One table per class: rows 2D AP / AOS / BEV AP / 3D AP, columns Easy / Moderate / Hard, in percent."""
    classes = list(dict.fromkeys(key.split("/")[0] for key in metrics))
    lines = []
    for cls in classes:
        lines.append(f"{cls:<8}|   Easy | Moderate |   Hard")
        for metric, title in zip(METRICS, ("2D AP", "AOS", "BEV AP", "3D AP"), strict=True):
            values = [100 * metrics[f"{cls}/{metric}/{d}"] for d in DIFFICULTIES]
            lines.append(f"{title:<8}| {values[0]:6.2f} | {values[1]:8.2f} | {values[2]:6.2f}")
    return "\n".join(lines)


def detections_to_kitti(
    detections: Detections, calibration: np.ndarray | torch.Tensor, class_names: Sequence[str]
) -> list[KittiObject]:
    """KITTI result objects from ``mono3d`` detections in the pixels of the camera ``calibration`` (3, 4):
    location and rotation_y from ``ops.camera.lift_to_camera``; truncation and occlusion unknown (-1)."""
    if detections.mono3d is None:
        raise ValueError("KITTI results need monocular 3D detections (a model with model.task=mono3d)")
    location, rotation_y = lift_to_camera(detections.mono3d.double(), torch.as_tensor(calibration))
    objects = []
    rows = zip(
        detections.boxes.tolist(),
        detections.scores.tolist(),
        detections.labels.tolist(),
        detections.mono3d.tolist(),
        location.tolist(),
        rotation_y.tolist(),
        strict=True,
    )
    for box, score, label, (_, _, _, h, w, length, alpha), xyz, yaw in rows:
        objects.append(
            KittiObject(class_names[label], -1.0, -1, alpha, tuple(box), (h, w, length), tuple(xyz), yaw, score)
        )
    return objects
