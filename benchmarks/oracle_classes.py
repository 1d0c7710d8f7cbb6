"""How much of a detector's AP is lost to its classes: its detections scored as they are, and with every detection
given the class of the ground-truth object it overlaps.

    pointdet eval --weights RUN data.val_json=V.json data.val_images=DIR --results detections.json
    python benchmarks/oracle_classes.py V.json detections.json [more.json ...]

Each detection that overlaps a ground-truth box with IoU >= 0.5 takes the class of the box it overlaps most (the
others keep theirs); class-wise NMS at 0.6 then removes the copies this makes of one box under one class. Its COCO
box AP is the most any re-classifier that keeps the detector's boxes and scores could reach. Prints one JSON line
per results file: AP and AP50 as they are, with the oracle's classes, and class-agnostic (every class merged).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections import defaultdict

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import batched_nms, box_convert, box_iou

MATCH_IOU = 0.5
NMS_IOU = 0.6


def box_ap(ground_truth: COCO, detections: list[dict]) -> tuple[float, float]:
    """COCO box AP and AP50 (percent) of ``detections`` (COCO results records) on ``ground_truth``."""
    if not detections:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return 100 * evaluation.stats[0], 100 * evaluation.stats[1]


def _xyxy(records: list[dict]) -> torch.Tensor:
    return box_convert(torch.tensor([r["bbox"] for r in records], dtype=torch.float64).view(-1, 4), "xywh", "xyxy")


def oracle_classes(ground_truth: COCO, detections: list[dict]) -> list[dict]:
    """``detections`` relabelled with the class of their best-overlapping ground truth (IoU >= 0.5), then class-wise
    NMS at 0.6 per image."""
    by_image = defaultdict(list)
    for record in detections:
        by_image[record["image_id"]].append(record)
    relabelled = []
    for image_id, records in by_image.items():
        boxes, scores = _xyxy(records), torch.tensor([r["score"] for r in records], dtype=torch.float64)
        labels = torch.tensor([r["category_id"] for r in records])
        objects = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=image_id, iscrowd=False))
        if objects:
            overlap, best = box_iou(boxes, _xyxy(objects)).max(dim=1)
            object_labels = torch.tensor([o["category_id"] for o in objects])
            labels = torch.where(overlap >= MATCH_IOU, object_labels[best], labels)
        for index in batched_nms(boxes, scores, labels, NMS_IOU).tolist():
            relabelled.append({**records[index], "category_id": int(labels[index])})
    return relabelled


def class_agnostic(ground_truth: COCO) -> COCO:
    """A copy of ``ground_truth`` with one category (id 1) for every object."""
    merged = COCO()
    dataset = json.loads(json.dumps(ground_truth.dataset))
    for annotation in dataset["annotations"]:
        annotation["category_id"] = 1
    dataset["categories"] = [{"id": 1, "name": "object"}]
    merged.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        merged.createIndex()
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ground_truth", help="COCO instances JSON the detections were made on")
    parser.add_argument("results", nargs="+", help="COCO results JSON (pointdet eval --results)")
    args = parser.parse_args()
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(args.ground_truth)
    merged = class_agnostic(ground_truth)
    for path in args.results:
        with open(path) as file:
            detections = json.load(file)
        as_is, oracle = box_ap(ground_truth, detections), box_ap(ground_truth, oracle_classes(ground_truth, detections))
        agnostic = box_ap(merged, [{**d, "category_id": 1} for d in detections])
        row = {"results": path, "AP": as_is[0], "AP50": as_is[1], "oracle_AP": oracle[0], "oracle_AP50": oracle[1]}
        print(json.dumps({**row, "class_agnostic_AP": agnostic[0], "class_agnostic_AP50": agnostic[1]}))


if __name__ == "__main__":
    main()
