"""A validation or test file is checked by the training file's rules before any training, and scored (by pycocotools,
for real) on exactly what the set trains on: perfect detections score AP 100.

Each refused case also shows, with pycocotools on the raw file, the wrong score it would have given.
"""

import copy
import json
import logging

import pytest
from pycocotools import mask as mask_utils

from pointdet.cli import main
from pointdet.data.coco import CocoDataset
from pointdet.errors import DatasetError
from pointdet.evaluation import run_coco_evaluation


@pytest.fixture()
def document(tiny_shapes):
    """The tiny shapes validation file (8 images of 64 px) as a dict to break."""
    return json.loads(tiny_shapes.val_json.read_text())


def _write(tmp_path, document, name="val.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def _perfect_boxes(annotations) -> list[dict]:
    """A detection with score 1 on every box of ``annotations`` (crowd regions are not objects)."""
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in annotations
        if not a.get("iscrowd")
    ]


def _box_ap(ground_truth, results) -> float:
    return run_coco_evaluation(ground_truth, results).metrics["AP"]


def test_skipped_boxes_are_left_out_of_scoring(tmp_path, tiny_shapes, document, caplog):
    annotations = document["annotations"]
    annotations[0]["bbox"][2] = 0.0  # no width
    annotations[1]["bbox"][:2] = [70.0, 70.0]  # entirely outside the 64 px image
    annotations[2]["bbox"][3] = 1e39  # infinite once in float32
    path = _write(tmp_path, document)
    with caplog.at_level(logging.WARNING):
        dataset = CocoDataset(path, tiny_shapes.val_images)
    assert dataset.skipped == {
        "bbox with non-positive size": 1,
        "bbox entirely outside its image": 1,
        "bbox not finite (NaN, infinite or beyond float32)": 1,
    }
    assert "left out of training and scoring" in caplog.text
    trained_on = dataset.ground_truth["annotations"]
    assert len(trained_on) == len(annotations) - 3 == dataset.num_objects
    perfect = _perfect_boxes(trained_on)
    assert _box_ap(dataset.ground_truth, perfect) == pytest.approx(1.0)
    # the raw file counts the three skipped boxes as missed objects
    assert _box_ap(path, perfect) < 0.9


def test_crowd_regions_are_scored_as_ignore_regions(tmp_path, tiny_shapes, document):
    crowd = document["annotations"][0]
    crowd["iscrowd"] = 1
    dataset = CocoDataset(_write(tmp_path, document), tiny_shapes.val_images)
    assert crowd in dataset.ground_truth["annotations"]
    results = _perfect_boxes(document["annotations"])
    on_crowd = {"image_id": crowd["image_id"], "category_id": crowd["category_id"], "bbox": crowd["bbox"], "score": 1.0}
    assert _box_ap(dataset.ground_truth, [*results, on_crowd]) == pytest.approx(1.0)  # ignored, not a false positive


def test_keypoints_score_without_num_keypoints_or_keypoints(tmp_path, tiny_shapes, document):
    for annotation in document["annotations"]:
        del annotation["num_keypoints"]
    unlabelled = document["annotations"][0]
    del unlabelled["keypoints"]
    path = _write(tmp_path, document)
    dataset = CocoDataset(path, tiny_shapes.val_images)
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"], "score": 1.0}
        for a in document["annotations"]
        if "keypoints" in a
    ]
    sigmas = [0.05] * 4
    metrics = run_coco_evaluation(dataset.ground_truth, perfect, iou_type="keypoints", keypoint_sigmas=sigmas).metrics
    assert metrics["AP"] == pytest.approx(1.0)
    scored = {a["id"]: a for a in dataset.ground_truth["annotations"]}
    assert scored[unlabelled["id"]]["num_keypoints"] == 0 and scored[2]["num_keypoints"] == 4
    assert "num_keypoints" not in document["annotations"][1]  # the file's records are not changed
    with pytest.raises(KeyError):  # what pycocotools does with the raw file
        run_coco_evaluation(path, perfect, iou_type="keypoints", keypoint_sigmas=sigmas)


def test_evaluation_leaves_the_ground_truth_as_it_was(tmp_path, tiny_shapes, document):
    dataset = CocoDataset(_write(tmp_path, document), tiny_shapes.val_images)
    before = copy.deepcopy(dataset.ground_truth)
    masks = []
    for annotation in document["annotations"]:
        rle = mask_utils.merge(mask_utils.frPyObjects(annotation["segmentation"], 64, 64))
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
        masks.append({**_perfect_boxes([annotation])[0], "segmentation": segmentation})
    assert run_coco_evaluation(dataset.ground_truth, masks, iou_type="segm").metrics["AP"] == pytest.approx(1.0)
    assert dataset.ground_truth == before


# ------------------------------------------------------------------------------------------ refused files


def test_duplicate_annotation_ids_are_refused(tmp_path, tiny_shapes, document):
    for annotation in document["annotations"]:
        annotation["id"] = 1
    path = _write(tmp_path, document)
    assert _box_ap(path, _perfect_boxes(document["annotations"])) < 0.1  # pycocotools keeps one box per id
    with pytest.raises(
        DatasetError, match=r"val.json annotations\[1\] \(id=1\): field 'id' = 1 repeats annotations\[0\]"
    ):
        CocoDataset(path, tiny_shapes.val_images)


def test_iscrowd_as_a_string_is_refused(tmp_path, tiny_shapes, document):
    for annotation in document["annotations"]:
        annotation["iscrowd"] = "0"
    path = _write(tmp_path, document)
    assert _box_ap(path, _perfect_boxes(document["annotations"])) <= 0  # every object an ignore region: no AP
    with pytest.raises(
        DatasetError, match=r"annotations\[0\] \(id=1\): field 'iscrowd' must be 0 .* got '0' \(a string"
    ):
        CocoDataset(path, tiny_shapes.val_images)


@pytest.mark.parametrize("field", ["area", "id"])
def test_fields_that_scoring_reads_are_required(tmp_path, tiny_shapes, document, field):
    del document["annotations"][3][field]
    path = _write(tmp_path, document)
    with pytest.raises(KeyError):  # pycocotools, at the first evaluation
        _box_ap(path, _perfect_boxes(document["annotations"]))
    with pytest.raises(DatasetError, match=rf"val.json annotations\[3\] \(id=.*\): missing field '{field}' \("):
        CocoDataset(path, tiny_shapes.val_images)


@pytest.mark.parametrize(
    ("where", "field", "value", "message"),
    [
        ("annotations", "area", -5.0, r"annotations\[1\] \(id=2\): field 'area' must be a number >= 0, got -5.0"),
        ("annotations", "iscrowd", 2, r"annotations\[1\] \(id=2\): field 'iscrowd' must be 0 .* got 2$"),
        ("annotations", "bbox", ["1", 2, 3, 4], r"annotations\[1\] \(id=2\): field 'bbox' must be four numbers"),
        ("annotations", "bbox", [1, 2, None, 4], r"annotations\[1\] \(id=2\): field 'bbox' must be four numbers"),
        ("annotations", "keypoints", ["1"] * 12, r"annotations\[1\] \(id=2\): field 'keypoints' must hold finite "),
        ("annotations", "num_keypoints", -1, r"annotations\[1\] \(id=2\): field 'num_keypoints' must be >= 0"),
        ("categories", "name", 7, r"categories\[1\] \(id=2\): field 'name' must be a non-empty string, got 7"),
        ("categories", "name", "circle", r"categories\[1\] \(id=2\): field 'name' = 'circle' repeats categories\[0\]"),
        ("categories", "skeleton", [[1]], r"categories\[1\] \(id=2\): field 'skeleton' must be a list of \[a, b\]"),
        (
            "categories",
            "skeleton",
            [[1, 5]],
            r"categories\[1\] \(id=2\): field 'skeleton' .* 1..4 .*, got \[\[1, 5\]\]",
        ),
        ("categories", "keypoints", [1, 2, 3, 4], r"categories\[1\] \(id=2\): field 'keypoints' must be a list of"),
        ("categories", "id", 1, r"categories\[1\] \(id=1\): field 'id' = 1 repeats categories\[0\]"),
    ],
)
def test_bad_fields_are_refused_naming_file_record_and_field(
    tmp_path, tiny_shapes, document, where, field, value, message
):
    document[where][1][field] = value
    with pytest.raises(DatasetError, match=rf"val.json {message}"):
        CocoDataset(_write(tmp_path, document), tiny_shapes.val_images)


def test_json_nested_too_deeply_is_refused(tmp_path, tiny_shapes):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="deep.json: its JSON is nested too deeply"):
        CocoDataset(path, tiny_shapes.val_images)


def test_a_file_without_annotations_warns_and_is_not_trained_on(tmp_path, tiny_shapes, document, caplog):
    document["annotations"] = []
    path = _write(tmp_path, document)
    with caplog.at_level(logging.WARNING):
        dataset = CocoDataset(path, tiny_shapes.val_images)
    assert "no annotation to train on or to score (8 images, 0 annotations in the file)" in caplog.text
    with pytest.raises(DatasetError, match=r"val.json: no annotation to train on \(8 images, 0 usable objects\)"):
        dataset.require_objects()


def _train(tmp_path, tiny_shapes, train_json, val_json):
    overrides = [
        f"data.train_json={train_json}",
        f"data.train_images={tiny_shapes.val_images}",
        f"data.val_json={val_json}",
        f"data.val_images={tiny_shapes.val_images}",
        "data.input_size=64",
        "data.num_workers=0",
        "device=cpu",
        f"out_dir={tmp_path / 'runs'}",
    ]
    with pytest.raises(SystemExit) as caught:
        main(["train", "centernet_r18", "model.backbone_weights=null", *overrides])
    assert not list((tmp_path / "runs").rglob("*.pt"))  # stopped before any training
    return str(caught.value.code)


def test_training_refuses_a_broken_validation_file_before_it_starts(tmp_path, tiny_shapes, document):
    good = _write(tmp_path, document, "train.json")
    document["annotations"][4]["iscrowd"] = "1"
    message = _train(tmp_path, tiny_shapes, good, _write(tmp_path, document))
    assert message.startswith("error: ") and "val.json annotations[4]" in message and "'iscrowd'" in message
    assert len(message.splitlines()) == 1


def test_training_refuses_a_training_file_without_objects(tmp_path, tiny_shapes, document):
    good = _write(tmp_path, document)
    for annotation in document["annotations"]:
        annotation["bbox"][2] = 0.0
    message = _train(tmp_path, tiny_shapes, _write(tmp_path, document, "train.json"), good)
    assert message.startswith("error: ") and "train.json: no annotation to train on" in message
    assert "'bbox with non-positive size': " in message
