import contextlib
import io
import json

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pointdet.evaluation import detections_to_coco, evaluate_coco
from pointdet.structures import Detections


def _noisy_predictions(annotation_file, seed=0):
    """Perturbed ground truth, some false positives and missed objects."""
    document = json.loads(annotation_file.read_text())
    generator = torch.Generator().manual_seed(seed)
    by_image = {}
    for ann in document["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    detections, image_ids = [], []
    for image in document["images"]:
        anns = by_image.get(image["id"], [])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes += torch.randn(boxes.shape, generator=generator) * 2
        boxes = torch.cat([boxes, torch.tensor([[1.0, 1.0, 20.0, 20.0]])])
        labels = torch.tensor([a["category_id"] - 1 for a in anns] + [0])
        scores = torch.rand(len(labels), generator=generator)
        keep = torch.rand(len(labels), generator=generator) > 0.1
        detections.append(Detections(boxes[keep], scores[keep], labels[keep]))
        image_ids.append(image["id"])
    return detections, image_ids


def _reference(annotation_file, results):
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_wrapper_equals_pycocotools_and_faster_coco_eval(tiny_shapes):
    detections, image_ids = _noisy_predictions(tiny_shapes.train_json)
    results = detections_to_coco(detections, image_ids, [1, 2, 3])
    reference = _reference(tiny_shapes.train_json, [dict(r) for r in results])
    ours = evaluate_coco(tiny_shapes.train_json, results)
    assert 0.2 < ours["AP"] < 0.95
    assert list(ours.values()) == pytest.approx(list(reference[:12]), abs=1e-12)
    pytest.importorskip("faster_coco_eval")
    faster = evaluate_coco(tiny_shapes.train_json, results, backend="faster_coco_eval")
    assert list(faster.values()) == pytest.approx(list(ours.values()), abs=1e-9)


def test_perfect_detections_score_one(tiny_shapes):
    document = json.loads(tiny_shapes.val_json.read_text())
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in document["annotations"]
    ]
    assert evaluate_coco(tiny_shapes.val_json, results)["AP"] == pytest.approx(1.0)


def test_results_use_original_category_ids_and_xywh():
    dets = Detections(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), torch.tensor([0.5]), torch.tensor([1]))
    assert detections_to_coco([dets], [42], [7, 9]) == [
        {"image_id": 42, "category_id": 9, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.5}
    ]
