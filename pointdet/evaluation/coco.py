"""COCO box AP through pycocotools or faster-coco-eval (identical numbers; METHODS.md §1.12)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pointdet.structures import Detections

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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


def evaluate_coco(
    annotation_file: str | Path,
    results: list[dict],
    image_ids: Sequence[int] | None = None,
    backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools",
    iou_type: str = "bbox",
) -> dict[str, float]:
    """Run COCOeval and return the 12 standard numbers in [0, 1] (``-1`` where a range has no ground truth).

    Args:
        annotation_file: the ground-truth COCO JSON.
        results: COCO result records (``detections_to_coco``).
        image_ids: evaluate on these images only (default: all images of the file).
        backend: ``pycocotools`` or ``faster_coco_eval``.
    """
    coco_cls, eval_cls = _api(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = coco_cls(str(annotation_file))
        if not results:
            return dict.fromkeys(COCO_METRIC_NAMES, 0.0)
        predictions = ground_truth.loadRes([dict(r) for r in results])  # loadRes adds keys to the records
        evaluator = eval_cls(ground_truth, predictions, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats[:12], strict=True)}


def format_metrics(metrics: dict[str, float]) -> str:
    """The COCO table as a reader expects it: one row of names, one of values in percent."""
    names = [n for n in COCO_METRIC_NAMES if n in metrics]
    header = " | ".join(f"{n:>6}" for n in names)
    values = " | ".join(f"{100 * metrics[n]:6.2f}" if metrics[n] >= 0 else f"{'-':>6}" for n in names)
    return f"{header}\n{values}"
