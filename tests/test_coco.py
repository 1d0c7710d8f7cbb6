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
    with pytest.raises(DatasetError, match=r"field 'bbox' must be four numbers \[x, y, w, h\]"):
        CocoDataset(_write(tmp_path, document), tiny_shapes.train_images)


def test_degenerate_boxes_are_counted_skips(tmp_path, tiny_shapes, document, caplog):
    total = len(document["annotations"])
    document["annotations"][0]["bbox"] = [1, 2, 0, 5]
    document["annotations"][1]["bbox"] = [1, 2, float("nan"), 5]
    path = tmp_path / "skips.json"
    path.write_text(json.dumps(document).replace("NaN", "NaN"))
    dataset = CocoDataset(path, tiny_shapes.train_images)
    assert dataset.skipped == {"bbox with non-positive size": 1, "bbox not finite (NaN, infinite or beyond float32)": 1}
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


def test_crowd_annotations_become_ignore_boxes_and_polygons_load_on_request(tmp_path, tiny_shapes, document):
    first = document["annotations"][0]
    crowd = {**first, "id": 1000, "iscrowd": 1, "bbox": [1.0, 2.0, 10.0, 20.0]}
    rle = {**document["annotations"][1], "segmentation": {"size": [64, 64], "counts": [0, 4096]}}
    document["annotations"][1] = rle
    document["annotations"].append(crowd)
    path = _write(tmp_path, document, "crowd.json")
    dataset = CocoDataset(path, tiny_shapes.train_images, with_polygons=True)
    assert not dataset.skipped  # crowd regions are no longer skipped
    index = next(i for i, r in enumerate(dataset.records) if r.image_id == first["image_id"])
    instances = dataset.instances(index, 64, 64)
    assert instances.ignore_boxes.tolist() == [[1.0, 2.0, 11.0, 22.0]]
    assert len(instances.polygons) == len(instances) and instances.polygons[0][0].shape[1] == 2
    assert instances.polygons[0][0].flatten().tolist() == pytest.approx(first["segmentation"][0])
    rle_index = next(i for i, r in enumerate(dataset.records) if r.image_id == rle["image_id"])
    rle_position = [a["id"] for a in document["annotations"] if a["image_id"] == rle["image_id"]].index(rle["id"])
    assert dataset.instances(rle_index, 64, 64).polygons[rle_position] == []
    assert CocoDataset(path, tiny_shapes.train_images).instances(index, 64, 64).polygons is None
    document["annotations"][0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0]]  # refused on load, masks or not
    with pytest.raises(DatasetError, match=r"odd.json annotations\[0\] \(id=1\): field 'segmentation' has a polygon"):
        CocoDataset(_write(tmp_path, document, "odd.json"), tiny_shapes.train_images)


def test_real_coco_train_mini_polygons_and_crowd_regions():
    root = shared_data("coco_train_mini")
    annotation_file = root / "annotations" / "instances_train.json"
    annotations = json.loads(annotation_file.read_text())["annotations"]
    crowds = [a for a in annotations if a.get("iscrowd", 0)]
    polygons = [a for a in annotations if not a.get("iscrowd", 0) and isinstance(a["segmentation"], list)]
    assert len(crowds) > 0 and len(polygons) > 0
    dataset = CocoDataset(annotation_file, root / "images", with_polygons=True)
    loaded_polygons = loaded_parts = loaded_vertices = ignore_boxes = 0
    for index, record in enumerate(dataset.records):
        instances = dataset.instances(index, record.height, record.width)
        assert len(instances.polygons) == len(instances)
        loaded_polygons += sum(1 for parts in instances.polygons if parts)
        loaded_parts += sum(len(parts) for parts in instances.polygons)
        loaded_vertices += sum(len(part) for parts in instances.polygons for part in parts)
        ignore_boxes += len(instances.ignore_boxes)
    assert loaded_polygons == len(polygons)
    assert loaded_parts == sum(len(a["segmentation"]) for a in polygons)
    assert loaded_vertices == sum(len(part) // 2 for a in polygons for part in a["segmentation"])
    assert ignore_boxes == len(crowds)


def test_real_coco_train_mini_test_geometries_record_their_scale():
    from pointdet.configs.schema import DataConfig
    from pointdet.data.dataset import TransformedDataset
    from pointdet.engine.data import select_eval_transforms

    root = shared_data("coco_train_mini")
    annotation_file = root / "annotations" / "instances_train.json"
    crowd_image = next(a["image_id"] for a in json.loads(annotation_file.read_text())["annotations"] if a["iscrowd"])
    dataset = CocoDataset(annotation_file, root / "images", with_polygons=True)
    index = next(i for i, r in enumerate(dataset.records) if r.image_id == crowd_image)
    record = dataset.records[index]
    raw = dataset.instances(index, record.height, record.width)
    original = TransformedDataset(dataset, select_eval_transforms(DataConfig(test_resize="original")))[index]
    assert original.scale == 1.0 and original.image.shape[-2:] == (record.height, record.width)
    assert original.orig_size == (record.height, record.width)
    keep_ratio = DataConfig(test_resize="keep_ratio", test_min_size=600, max_size=1000)
    resized = TransformedDataset(dataset, select_eval_transforms(keep_ratio))[index]
    factor = min(600 / min(record.height, record.width), 1000 / max(record.height, record.width))
    assert resized.scale == factor
    assert resized.image.shape[-2:] == (int(record.height * factor + 0.5), int(record.width * factor + 0.5))
    assert len(resized.instances.ignore_boxes) >= 1 and len(resized.instances.polygons) == len(resized.instances)
    assert torch.allclose(resized.instances.ignore_boxes, raw.ignore_boxes * factor, atol=1.0)  # per-axis rounding
