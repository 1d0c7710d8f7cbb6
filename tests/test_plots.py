"""Per-class AP, precision-recall curves, the confusion matrix and the pictures of a run folder."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pointdet.cli import main
from pointdet.engine.evaluate import Evaluation
from pointdet.engine.plots import write_plots, write_training_curves
from pointdet.engine.trainer import Trainer
from pointdet.evaluation import (
    coco_confusion_matrix,
    format_per_class,
    keypoint_sigmas,
    per_joint_ap,
    pr_curves,
    run_coco_evaluation,
)

from .helpers import tiny_config

# Two images, classes cat (id 3) and dog (id 7); boxes are COCO xywh.
GROUND_TRUTH = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [30, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [60, 60, 40, 40], "area": 1600, "iscrowd": 1},
    ],
}
DETECTIONS = [
    {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},  # cat on the cat
    {"image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10], "score": 0.8},  # cat on the dog
    {"image_id": 1, "category_id": 7, "bbox": [50, 50, 10, 10], "score": 0.7},  # a dog on nothing
    {"image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.2},  # under the score threshold
    {"image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},  # cat on the cat
    {"image_id": 2, "category_id": 3, "bbox": [1, 0, 10, 10], "score": 0.6},  # its duplicate: a false detection
    {"image_id": 2, "category_id": 7, "bbox": [65, 65, 10, 10], "score": 0.8},  # inside the crowd: not counted
]  # and the second cat of image 2 is missed


def _ground_truth(tmp_path):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(GROUND_TRUTH))
    with contextlib.redirect_stdout(io.StringIO()):
        return path, COCO(str(path))


def test_confusion_matrix_equals_the_hand_count(tmp_path):
    _, truth = _ground_truth(tmp_path)
    matrix = coco_confusion_matrix(truth, DETECTIONS, [1, 2], [3, 7], iou_threshold=0.5, score_threshold=0.3)
    # rows: true cat, dog, background (false detections); columns: predicted cat, dog, background (missed)
    expected = [
        [2, 0, 1],
        [1, 0, 0],
        [1, 1, 0],
    ]
    np.testing.assert_array_equal(matrix, expected)
    everything = coco_confusion_matrix(truth, DETECTIONS, [1, 2], [3, 7], score_threshold=0.0)
    assert everything[0, 1] == 0 and everything[2, 1] == 2  # the 0.2 dog on the matched cat: a false detection


def _noisy_results(truth: COCO, seed: int = 0) -> list[dict]:
    """Every object found with a jittered box and a random score, plus random false boxes of every class."""
    rng = np.random.default_rng(seed)
    results = []
    for annotation in truth.loadAnns(truth.getAnnIds()):
        x, y, w, h = annotation["bbox"]
        jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
        box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
        results.append({**_record(annotation, box), "score": float(rng.uniform(0.2, 1.0))})
        if rng.uniform() < 0.4:  # a confusion with the next class
            others = sorted(truth.getCatIds())
            wrong = others[(others.index(annotation["category_id"]) + 1) % len(others)]
            results.append({**_record(annotation, box), "category_id": wrong, "score": float(rng.uniform(0, 0.6))})
    for image_id in truth.getImgIds():
        for category in truth.getCatIds():
            box = [*rng.uniform(0, 40, 2), *rng.uniform(4, 20, 2)]
            results.append({"image_id": image_id, "category_id": category, "bbox": box, "score": rng.uniform()})
    return results


def _record(annotation: dict, box: list[float]) -> dict:
    return {"image_id": annotation["image_id"], "category_id": annotation["category_id"], "bbox": list(box)}


def test_pr_curve_areas_and_per_class_ap_match_the_evaluator(tiny_shapes):
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(tiny_shapes.val_json))
    results = _noisy_results(truth)
    evaluation = run_coco_evaluation(tiny_shapes.val_json, results)
    assert 0.2 < evaluation.metrics["AP"] < 0.95  # a case where the curves are not trivial
    _, all_classes = pr_curves(evaluation.precision, "0.5:0.95")
    assert all_classes.mean() == pytest.approx(evaluation.metrics["AP"], abs=1e-12)
    _, all_classes = pr_curves(evaluation.precision, "0.5")
    assert all_classes.mean() == pytest.approx(evaluation.metrics["AP50"], abs=1e-12)
    per_class, _ = pr_curves(evaluation.precision, "0.5:0.95")
    # The oracle: COCOeval run on one category at a time.
    for k, category in enumerate(evaluation.category_ids):
        with contextlib.redirect_stdout(io.StringIO()):
            single = COCOeval(truth, truth.loadRes([dict(r) for r in results]), "bbox")
            single.params.catIds = [category]
            single.evaluate()
            single.accumulate()
            single.summarize()
        assert per_class[k].mean() == pytest.approx(single.stats[0], abs=1e-12), evaluation.category_names[k]


def test_per_class_table_lists_the_best_and_worst_ten_above_twenty_classes():
    table = {f"class{i:02d}": {"AP": i / 30, "AP50": i / 25} for i in range(25)}
    text = format_per_class(table)
    assert "class24" in text and "class15" in text and "class14" not in text and "class10" not in text
    assert "class09" in text and "class00" in text and "5 classes between" in text
    assert text.index("class24") < text.index("class00")  # best first
    short = format_per_class({"a": {"AP": 0.5, "AP50": -1.0}})
    assert "50.00" in short and short.splitlines()[-1].endswith("-")


def test_plots_are_written_and_a_failing_picture_does_not_raise(tmp_path, caplog):
    path, truth = _ground_truth(tmp_path)
    box = run_coco_evaluation(path, DETECTIONS)
    matrix = coco_confusion_matrix(truth, DETECTIONS, [1, 2], box.category_ids)
    evaluation = Evaluation(box.metrics, box_precision=box.precision, class_names=box.category_names, confusion=matrix)
    written = write_plots(tmp_path / "plots", evaluation)
    assert sorted(p.name for p in written) == [
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "pr_curves_iou50-95.png",
        "pr_curves_iou50.png",
    ]
    assert all(Image.open(p).size[0] > 100 for p in written)
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    assert write_plots(blocked, evaluation) == []
    assert "could not draw" in caplog.text
    log = [{"step": 10, "lr": 0.1, "heatmap": 2.0}, {"step": 20, "lr": 0.1, "heatmap": 1.0}]
    history = [{"epoch": 1, "step": 20, "metrics": {"AP": 0.1, "AP50": 0.2}}]
    assert write_training_curves(tmp_path / "curves", log, history)
    assert write_training_curves(blocked, log, history) is False


def test_many_classes_stay_drawable(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"class number {i}" for i in range(80)]
    precision = np.sort(rng.uniform(0, 1, (10, 101, 80, 4, 3)), axis=1)[:, ::-1]
    confusion = rng.poisson(0.3, (81, 81)) + np.diag(rng.poisson(20, 81))
    evaluation = Evaluation({"AP": 0.5}, box_precision=precision, class_names=names, confusion=confusion)
    assert len(write_plots(tmp_path, evaluation)) == 4


def test_a_run_folder_holds_the_plots_and_per_class_tables(tiny_shapes, tmp_path, capsys):
    config = tiny_config(tiny_shapes, tmp_path / "run", epochs=1)
    Trainer(config).train()
    out = capsys.readouterr().out
    assert "box AP per class" in out and "triangle" in out and "class-agnostic box AP" in out
    plots = tmp_path / "run" / "plots"
    names = {p.name for p in plots.iterdir()}
    assert {"training_curves.png", "pr_curves_iou50.png", "confusion_matrix.png"} <= names, names
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["per_class"]["boxes"]) == {"circle", "triangle", "square"}
    assert set(metrics["history"][-1]["per_class"]["boxes"]["circle"]) == {"AP", "AP50"}
    assert metrics["history"][-1]["class_agnostic"]["AP"] >= 0

    main(
        [
            "eval",
            "--weights",
            str(tmp_path / "run"),
            "--plots",
            str(tmp_path / "eval_plots"),
            "--confusion-threshold",
            "0.1",
        ]
    )
    assert "box AP per class" in capsys.readouterr().out
    assert (tmp_path / "eval_plots" / "confusion_matrix_normalized.png").is_file()


def test_per_joint_keypoint_ap_isolates_the_joint_that_is_off(tiny_shapes):
    truth = json.loads(tiny_shapes.val_json.read_text())
    results = []
    for annotation in truth["annotations"]:
        joints = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
        joints[2, 0] += 0.5 * np.sqrt(annotation["area"])  # joint 2 far off: its OKS alone is about 4e-6
        joints[:, 2] = 1
        results.append(
            {"image_id": annotation["image_id"], "category_id": annotation["category_id"], "score": 1.0}
            | {"keypoints": joints.ravel().tolist()}
        )
    names = ["top", "right", "bottom", "left"]
    table = per_joint_ap(tiny_shapes.val_json, results, names, keypoint_sigmas(4))
    assert table["bottom"] == {"AP": 0.0, "AP50": 0.0}
    for name in ("top", "right", "left"):
        assert table[name] == pytest.approx({"AP": 1.0, "AP50": 1.0}), name
