"""COCO box and keypoint AP through pycocotools or faster-coco-eval (identical numbers; METHODS.md §1.12)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pycocotools import mask as mask_utils
from torch import Tensor

from pointdet.ops.masks import instance_masks
from pointdet.structures import Detections

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
KEYPOINT_METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
KEYPOINT_PREFIX = "kp_"  # keypoint metrics sit beside the box metrics as kp_AP, kp_AP50, ...
SEGM_PREFIX = "segm_"  # and mask metrics as segm_AP, segm_AP50, ...

# COCO's per-joint OKS sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_KEYPOINT_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
DEFAULT_KEYPOINT_SIGMA = 0.05  # for other skeletons (e.g. the shapes' extreme points), unless configured


def keypoint_sigmas(num_joints: int, configured: Sequence[float] = ()) -> tuple[float, ...]:
    """OKS sigmas: the configured ones, COCO's for 17 joints, else ``DEFAULT_KEYPOINT_SIGMA`` for every joint."""
    if configured:
        if len(configured) != num_joints:
            raise ValueError(f"eval.keypoint_sigmas has {len(configured)} values for {num_joints} keypoints")
        return tuple(configured)
    return COCO_KEYPOINT_SIGMAS if num_joints == 17 else (DEFAULT_KEYPOINT_SIGMA,) * num_joints


def detections_to_coco(
    detections: Sequence[Detections], image_ids: Sequence[int], category_ids: Sequence[int]
) -> list[dict]:
    """COCO result records (``bbox`` as ``[x, y, w, h]``) from per-image detections in original pixels."""
    results = []
    for dets, image_id in zip(detections, image_ids, strict=True):
        boxes = dets.boxes.detach().cpu().double()
        boxes[:, 2:] -= boxes[:, :2]
        for box, score, label in zip(boxes.tolist(), dets.scores.tolist(), dets.labels.tolist(), strict=True):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label]),
                    "bbox": [round(v, 3) for v in box],
                    "score": round(float(score), 5),
                }
            )
    return results


def keypoints_to_coco(
    detections: Sequence[Detections], image_ids: Sequence[int], category_ids: Sequence[int]
) -> list[dict]:
    """COCO keypoint result records (``keypoints`` as ``[x, y, 1] * J``, the object score as ``score``)."""
    results = []
    for dets, image_id in zip(detections, image_ids, strict=True):
        keypoints = dets.keypoints.detach().cpu().double().clone()
        keypoints[..., 2] = 1.0
        for joints, score, label in zip(keypoints.tolist(), dets.scores.tolist(), dets.labels.tolist(), strict=True):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label]),
                    "keypoints": [round(v, 3) for joint in joints for v in joint],
                    "score": round(float(score), 5),
                }
            )
    return results


def masks_to_coco(
    detections: Sequence[Detections],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    image_sizes: Sequence[tuple[int, int]],
    threshold: float = 0.5,
) -> list[dict]:
    """COCO segmentation result records: each detection's box-relative mask pasted into its ``(height, width)``
    image (original pixels) and thresholded, or its contour rasterised there; run-length encoded."""
    results = []
    for dets, image_id, (height, width) in zip(detections, image_ids, image_sizes, strict=True):
        pasted = instance_masks(dets, height, width, threshold).cpu().numpy()
        encoded = mask_utils.encode(np.asfortranarray(pasted.transpose(1, 2, 0).astype(np.uint8)))
        for rle, score, label in zip(encoded, dets.scores.tolist(), dets.labels.tolist(), strict=True):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label]),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "score": round(float(score), 5),
                }
            )
    return results


def prediction_records(
    dets: Detections,
    image_id: int,
    category_ids: Sequence[int],
    class_names: Sequence[str],
    image_size: tuple[int, int],
) -> list[dict]:
    """What ``pointdet predict`` writes for one image: its COCO result records with ``category_name`` and, when
    the model predicts them, ``keypoints``, ``segmentation`` (RLE), ``landmarks`` (``[[x, y], ...]``, LSNet's
    extreme points) and ``contour`` (``[x1, y1, x2, y2, ...]``, a COCO polygon); ``image_size`` is
    ``(height, width)``."""
    boxes = detections_to_coco([dets], [image_id], category_ids)
    joints = keypoints_to_coco([dets], [image_id], category_ids) if dets.keypoints is not None else None
    masks = masks_to_coco([dets], [image_id], category_ids, [image_size]) if dets.has_masks else None
    landmarks = _rounded(dets.landmarks) if dets.landmarks is not None else None
    contours = _rounded(dets.contours.flatten(1)) if dets.contours is not None else None
    records = []
    for i, (record, label) in enumerate(zip(boxes, dets.labels.tolist(), strict=True)):
        extra = {"keypoints": joints[i]["keypoints"]} if joints else {}
        extra.update({"segmentation": masks[i]["segmentation"]} if masks else {})
        extra.update({"landmarks": landmarks[i]} if landmarks else {})
        extra.update({"contour": contours[i]} if contours else {})
        records.append({**record, **extra, "category_name": class_names[label]})
    return records


def _rounded(values: Tensor) -> list:
    """A tensor as nested lists of floats rounded to 3 decimals (pixels)."""
    return np.round(values.detach().cpu().double().numpy(), 3).tolist()


def _api(backend: str):
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        raise ValueError(f"unknown COCO backend {backend!r}; choose pycocotools or faster_coco_eval")
    return COCO, COCOeval


@dataclass
class CocoEvaluation:
    """What one COCOeval run gives.

    Attributes:
        metrics: the standard numbers in [0, 1] (``-1`` where a range has no ground truth).
        precision: COCOeval's accumulated ``(T, R, K, A, M)`` precision array (``evaluation.per_class``).
        category_names: the K names of its category axis (sorted category ids, as COCOeval orders them).
        category_ids: those K sorted ids.
        ground_truth: the loaded ground-truth ``COCO`` object (main process only; not meant to be sent).
    """

    metrics: dict[str, float]
    precision: np.ndarray | None
    category_names: list[str]
    category_ids: list[int]
    ground_truth: object = field(default=None, repr=False)


def run_coco_evaluation(
    annotation_file: str | Path | dict,
    results: list[dict],
    image_ids: Sequence[int] | None = None,
    backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools",
    iou_type: Literal["bbox", "segm", "keypoints"] = "bbox",
    keypoint_sigmas: Sequence[float] | None = None,
) -> CocoEvaluation:
    """Run COCOeval; its numbers, precision array and ground truth.

    Args:
        annotation_file: the ground-truth COCO JSON, or its content (``CocoDataset.ground_truth``: what the
            dataset trains on); a given content is not changed.
        results: COCO result records (``detections_to_coco`` or ``keypoints_to_coco``).
        image_ids: evaluate on these images only (default: all images of the file).
        backend: ``pycocotools`` or ``faster_coco_eval``.
        iou_type: ``bbox``/``segm`` (12 numbers, ``COCO_METRIC_NAMES``) or ``keypoints`` (OKS, 10 numbers,
            ``KEYPOINT_METRIC_NAMES``).
        keypoint_sigmas: per-joint OKS sigmas (default: COCO's, which only fit 17 joints).
    """
    names = KEYPOINT_METRIC_NAMES if iou_type == "keypoints" else COCO_METRIC_NAMES
    coco_cls, eval_cls = _api(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(annotation_file, dict):
            ground_truth = coco_cls()
            # COCOeval writes into the annotations (``ignore``, masks as RLE): it gets copies, ``annotation_file``
            # is left as it was
            annotations = [dict(annotation) for annotation in annotation_file["annotations"]]
            ground_truth.dataset = {**annotation_file, "annotations": annotations}
            ground_truth.createIndex()
        else:
            ground_truth = coco_cls(str(annotation_file))
        category_ids = sorted(ground_truth.getCatIds())
        category_names = [category["name"] for category in ground_truth.loadCats(category_ids)]
        if results:
            predictions = ground_truth.loadRes([dict(r) for r in results])  # loadRes adds keys to the records
        else:  # loadRes refuses an empty list; COCOeval itself scores no detections (0, per class too)
            predictions = coco_cls()
            predictions.dataset = {**ground_truth.dataset, "annotations": []}
            predictions.createIndex()
        evaluator = eval_cls(ground_truth, predictions, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        if keypoint_sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(keypoint_sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(value) for name, value in zip(names, evaluator.stats[: len(names)], strict=True)}
    precision = np.asarray(evaluator.eval["precision"])
    return CocoEvaluation(metrics, precision, category_names, category_ids, ground_truth)


def merge_classes(ground_truth: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """``ground_truth`` (a COCO dict) and box ``results`` with every category merged into one: the input of a
    class-agnostic evaluation, which scores the boxes with the classes ignored. Neither input is changed.

    A merged category keeps the first category's id and is named ``object``. Detections of several classes on one
    object become duplicates of it, so the merged AP is what the boxes score with the classes ignored, not an upper
    bound of what perfect classification would give.
    """
    category = {"id": ground_truth["categories"][0]["id"], "name": "object"}
    annotations = [{**annotation, "category_id": category["id"]} for annotation in ground_truth["annotations"]]
    merged_results = [{**record, "category_id": category["id"]} for record in results]
    return {**ground_truth, "categories": [category], "annotations": annotations}, merged_results


def evaluate_coco(*args, **kwargs) -> dict[str, float]:
    """COCOeval's standard numbers in [0, 1] (``-1`` where a range has no ground truth); the arguments of
    ``run_coco_evaluation``."""
    return run_coco_evaluation(*args, **kwargs).metrics


def per_joint_ap(
    annotation_file: str | Path | dict,
    results: list[dict],
    joint_names: Sequence[str],
    keypoint_sigmas: Sequence[float],
    image_ids: Sequence[int] | None = None,
    backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools",
) -> dict[str, dict[str, float]]:
    """Keypoint AP / AP50 of each joint alone: ``{joint name: {"AP": ..., "AP50": ...}}``.

    OKS is a mean over the visible joints of ``exp(-d^2 / (2 s^2 k^2))``; keeping one joint visible in the ground
    truth makes it that joint's similarity, and COCOeval then scores it at the usual 0.5:0.95 thresholds. Objects
    where the joint is not labelled are ignored, as COCO ignores objects without keypoints. One COCOeval run per
    joint.
    """
    truth = annotation_file if isinstance(annotation_file, dict) else json.loads(Path(annotation_file).read_text())
    table = {}
    for joint, name in enumerate(joint_names):
        annotations = []
        for annotation in truth["annotations"]:
            keypoints = list(annotation.get("keypoints") or [])
            if keypoints:
                visible = keypoints[3 * joint + 2] > 0
                keypoints = [v if i // 3 == joint or i % 3 != 2 else 0 for i, v in enumerate(keypoints)]
                annotation = {**annotation, "keypoints": keypoints, "num_keypoints": int(visible)}
            annotations.append(annotation)
        single = {**truth, "annotations": annotations}
        metrics = run_coco_evaluation(single, results, image_ids, backend, "keypoints", keypoint_sigmas).metrics
        table[name] = {"AP": metrics["AP"], "AP50": metrics["AP50"]}
    return table


def _table(title: str, names: Sequence[str], values: Sequence[float]) -> str:
    header = " | ".join(f"{n:>6}" for n in names)
    row = " | ".join(f"{100 * v:6.2f}" if v >= 0 else f"{'-':>6}" for v in values)
    return f"{title}\n{header}\n{row}" if title else f"{header}\n{row}"


def format_coco_metrics(metrics: dict[str, float]) -> str:
    """The COCO tables as a reader expects them: a row of names and a row of values in percent, for boxes and
    (when present) keypoints and masks."""
    groups = [
        ("boxes:", "", COCO_METRIC_NAMES),
        ("keypoints (OKS):", KEYPOINT_PREFIX, KEYPOINT_METRIC_NAMES),
        ("masks:", SEGM_PREFIX, COCO_METRIC_NAMES),
    ]
    tables = [(title, prefix, [n for n in names if prefix + n in metrics]) for title, prefix, names in groups]
    tables = [table for table in tables if table[2]]
    if len(tables) == 1:  # boxes alone need no title
        tables = [("", *tables[0][1:])]
    return "\n".join(_table(title, names, [metrics[prefix + n] for n in names]) for title, prefix, names in tables)
