"""A detection confusion matrix at one IoU and score threshold, with a background row and column.

Rows are the true classes, columns the predicted ones; the last row (background) counts false detections of each
predicted class, the last column (background) the objects of each true class that no detection found. Matching is
class-agnostic and greedy in score order, as COCO matches: each detection above ``score_threshold`` takes the
unmatched object it overlaps most (IoU >= ``iou_threshold``), so a box on the right object with the wrong class
lands off the diagonal. Detections on a crowd region (COCO ``iscrowd``, IoU measured as the part of the detection
inside it) count nowhere, and crowd regions are never missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image, ``xywh`` pixels (COCO's layout).

    Attributes:
        boxes: (N, 4) float64.
        labels: (N,) int class indices in ``0..C-1``.
        scores: (N,) float detection scores (ones for ground truth).
        crowd: (N,) bool crowd regions (ground truth only).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    crowd: np.ndarray


def confusion_matrix(
    truths: Sequence[ImageBoxes],
    detections: Sequence[ImageBoxes],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.3,
) -> np.ndarray:
    """(C + 1, C + 1) int64 counts; index C is the background (see the module docstring)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    for truth, dets in zip(truths, detections, strict=True):
        keep = dets.scores >= score_threshold
        order = np.argsort(-dets.scores[keep], kind="stable")
        boxes, labels = dets.boxes[keep][order], dets.labels[keep][order]
        matched = np.zeros(len(truth.labels), dtype=bool)
        if len(boxes) and len(truth.boxes):
            crowd = truth.crowd.astype(np.uint8).tolist()
            ious = np.asarray(mask_utils.iou(boxes.tolist(), truth.boxes.tolist(), crowd))
        else:
            ious = np.zeros((len(boxes), len(truth.boxes)))
        for det, label in enumerate(labels):
            candidates = np.where(~matched & ~truth.crowd & (ious[det] >= iou_threshold), ious[det], -1.0)
            if candidates.size and candidates.max() >= 0:
                best = int(candidates.argmax())
                matched[best] = True
                matrix[truth.labels[best], label] += 1
            elif not (truth.crowd & (ious[det] >= iou_threshold)).any():
                matrix[background, label] += 1
        for label in truth.labels[~matched & ~truth.crowd]:
            matrix[label, background] += 1
    return matrix


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows without any count stay zero)."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=np.float64), where=sums > 0)


def coco_confusion_matrix(
    ground_truth,
    results: Sequence[dict],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.3,
) -> np.ndarray:
    """``confusion_matrix`` of COCO box ``results`` against a loaded COCO ``ground_truth`` (pycocotools or
    faster-coco-eval ``COCO``); class ``k`` is ``category_ids[k]``."""
    label_of = {category: label for label, category in enumerate(category_ids)}
    by_image: dict[int, list[dict]] = {int(i): [] for i in image_ids}
    for record in results:
        if record["image_id"] in by_image and record["category_id"] in label_of:
            by_image[record["image_id"]].append(record)
    truths, detections = [], []
    for image_id in by_image:
        annotations = [
            a for a in ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[image_id])) if a["category_id"] in label_of
        ]
        truths.append(_image_boxes(annotations, label_of, truth=True))
        detections.append(_image_boxes(by_image[image_id], label_of, truth=False))
    return confusion_matrix(truths, detections, len(category_ids), iou_threshold, score_threshold)


def _image_boxes(records: list[dict], label_of: dict[int, int], truth: bool) -> ImageBoxes:
    return ImageBoxes(
        boxes=np.asarray([r["bbox"] for r in records], dtype=np.float64).reshape(-1, 4),
        labels=np.asarray([label_of[r["category_id"]] for r in records], dtype=np.int64),
        scores=np.asarray([1.0 if truth else r["score"] for r in records], dtype=np.float64),
        crowd=np.asarray([bool(r.get("iscrowd", 0)) and truth for r in records], dtype=bool),
    )
