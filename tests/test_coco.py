import copy
import json

import numpy as np
import pytest
import torch

from pointdet.data.coco import CocoDataset, DatasetError, flip_pairs_from_names
from pointdet.data.shapes import generate_shapes

from .conftest import shared_data


def _write(tmp_path, document, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


@pytest.fixture()
def document(tiny_shapes):
    return json.loads(tiny_shapes.train_json.read_text())


def test_shapes_load_with_masks_and_keypoints(tiny_shapes):
    dataset = CocoDataset(tiny_shapes.train_json, tiny_shapes.train_images, with_masks=True)
    assert dataset.class_names == ["circle", "triangle", "square"]
    assert dataset.keypoint_names == ["top", "right", "bottom", "left"]
    assert dataset.flip_pairs == [(3, 1)]
    instances = dataset.instances(0, 64, 64)
    assert instances.keypoints.shape[1:] == (4, 3) and instances.masks.shape[1:] == (64, 64)
    for box, mask in zip(instances.boxes, instances.masks, strict=True):  # masks agree with boxes
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.min().item() - box[0].item()) <= 1.5 and abs(ys.max().item() + 1 - box[3].item()) <= 1.5


def test_shapes_generation_is_deterministic(tmp_path):
    first = generate_shapes(tmp_path / "a", 3, 2, 48, seed=5)
    second = generate_shapes(tmp_path / "b", 3, 2, 48, seed=5)
    assert first.train_json.read_bytes() == second.train_json.read_bytes()
    assert (first.train_images / "000001.png").read_bytes() == (second.train_images / "000001.png").read_bytes()


def test_missing_image_file(tmp_path, tiny_shapes, document):
    document["images"][1]["file_name"] = "nowhere.png"
    with pytest.raises(DatasetError, match=r"images\[1\] id=2 file_name='nowhere.png'"):
        CocoDataset(_write(tmp_path, document), tiny_shapes.train_images)


def test_unknown_category(tmp_path, tiny_shapes, document):
    document["annotations"][2]["category_id"] = 99
    with pytest.raises(
        DatasetError, match=r"bad.json annotations\[2\] \(id=3\): field 'category_id' = 99 is an unknown"
    ):
        CocoDataset(_write(tmp_path, document), tiny_shapes.train_images)


def test_keypoints_of_wrong_length(tmp_path, tiny_shapes, document):
    document["annotations"][0]["keypoints"] = [1, 2, 2]
    with pytest.raises(DatasetError, match=r"annotations\[0\] \(id=1\): field 'keypoints' has 3 values, expected 12"):
        CocoDataset(_write(tmp_path, document), tiny_shapes.train_images)


def test_missing_field_and_bad_bbox(tmp_path, tiny_shapes, document):
    broken = copy.deepcopy(document)
    del broken["annotations"][1]["bbox"]
    with pytest.raises(DatasetError, match=r"annotations\[1\] \(id=2\): missing field 'bbox'"):
        CocoDataset(_write(tmp_path, broken), tiny_shapes.train_images)
    document["annotations"][1]["bbox"] = [1, 2, 3]
    with pytest.raises(DatasetError, match=r"field 'bbox' must be \[x, y, w, h\]"):
        CocoDataset(_write(tmp_path, document), tiny_shapes.train_images)


def test_degenerate_boxes_are_counted_skips(tmp_path, tiny_shapes, document, caplog):
    total = len(document["annotations"])
    document["annotations"][0]["bbox"] = [1, 2, 0, 5]
    document["annotations"][1]["bbox"] = [1, 2, float("nan"), 5]
    path = tmp_path / "skips.json"
    path.write_text(json.dumps(document).replace("NaN", "NaN"))
    dataset = CocoDataset(path, tiny_shapes.train_images)
    assert dataset.skipped == {"bbox with non-positive size": 1, "bbox not finite": 1}
    assert sum(len(r.boxes) for r in dataset.records) == total - 2
    assert "skipped annotations" in caplog.text


def test_not_json(tmp_path, tiny_shapes):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json: not valid JSON"):
        CocoDataset(path, tiny_shapes.train_images)


def test_flip_pairs_from_coco_names():
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    assert flip_pairs_from_names(names) == [(1, 2), (3, 4)]


def test_real_coco_train_mini_loads():
    root = shared_data("coco_train_mini")
    instances = CocoDataset(root / "annotations" / "instances_train.json", root / "images", with_masks=True)
    assert len(instances) == 215 and len(instances.class_names) == 80
    index = next(i for i, r in enumerate(instances.records) if len(r.boxes))
    record = instances.records[index]
    masks = instances.instances(index, record.height, record.width).masks
    assert masks.shape == (len(record.boxes), record.height, record.width) and masks.sum() > 0
    keypoints = CocoDataset(root / "annotations" / "person_keypoints_train.json", root / "images")
    assert len(keypoints.keypoint_names) == 17
    assert keypoints.flip_pairs == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
    assert any(np.any(r.keypoints[..., 2] > 0) for r in keypoints.records)


def test_real_raccoon_loads():
    root = shared_data("raccoon")
    for split in ("train", "test"):
        dataset = CocoDataset(root / "annotations" / f"instances_{split}.json", root / "images")
        assert len(dataset) > 0 and dataset.class_names == ["raccoon"]
