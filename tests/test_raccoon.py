"""The raccoon photos shipped with pointdet: the files, ``data.dataset=raccoon``, and a short real-photo fine-tune
of the ``centernet_effl0_raccoon`` preset whose test AP50 must stay above a measured floor."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pointdet.configs import DataConfig, apply_overrides, get_preset
from pointdet.data.coco import CocoDataset
from pointdet.data.raccoon import MAX_SIDE, ROOT, raccoon_files
from pointdet.engine.data import resolve_data_paths
from pointdet.engine.trainer import Trainer

from .conftest import SHARED_DATA


def _document(split: str) -> dict:
    return json.loads((ROOT / "annotations" / f"instances_{split}.json").read_text())


def test_shipped_raccoon_photos_load_with_their_licence():
    files = raccoon_files()
    train, test = CocoDataset(files.train_json, files.train_images), CocoDataset(files.val_json, files.val_images)
    assert (len(train), len(test)) == (160, 40)
    assert train.class_names == test.class_names == ["raccoon"]
    assert not {r.image_id for r in train.records} & {r.image_id for r in test.records}
    assert "MIT License" in (ROOT / "LICENSE").read_text() and "Dat Tran" in (ROOT / "LICENSE").read_text()
    assert "datitran/raccoon_dataset" in (ROOT / "README.txt").read_text()


@pytest.mark.parametrize("split", ["train", "test"])
def test_shipped_raccoon_boxes_lie_inside_their_photos(split):
    document = _document(split)
    images = {image["id"]: image for image in document["images"]}
    for image in images.values():
        with Image.open(ROOT / "images" / image["file_name"]) as photo:
            assert photo.size == (image["width"], image["height"]), image
        assert max(photo.size) <= MAX_SIDE, image
    assert len(document["annotations"]) == {"train": 173, "test": 44}[split]
    for annotation in document["annotations"]:
        x, y, w, h = annotation["bbox"]
        image = images[annotation["image_id"]]
        assert w > 10 and h > 10, annotation
        assert x >= 0 and y >= 0 and x + w <= image["width"] + 1e-6 and y + h <= image["height"] + 1e-6, annotation
        assert annotation["area"] == pytest.approx(w * h, abs=0.05)


@pytest.mark.parametrize("split", ["train", "test"])
def test_shipped_raccoon_boxes_are_the_originals_scaled(split):
    source = SHARED_DATA / "raccoon"
    if not source.exists():
        pytest.skip(f"{source} is absent (the full-size originals are only beside the project checkout)")
    original = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
    shipped = _document(split)
    old = {image["id"]: image for image in original["images"]}
    new = {image["id"]: image for image in shipped["images"]}
    assert {i: image["file_name"] for i, image in old.items()} == {i: image["file_name"] for i, image in new.items()}
    for image_id, image in new.items():
        width, height = old[image_id]["width"], old[image_id]["height"]
        expected = min(1.0, MAX_SIDE / max(width, height))
        assert (image["width"], image["height"]) == (round(width * expected), round(height * expected))
    assert len(original["annotations"]) == len(shipped["annotations"])
    for before, after in zip(original["annotations"], shipped["annotations"], strict=True):
        assert (before["id"], before["image_id"]) == (after["id"], after["image_id"])
        sx = new[after["image_id"]]["width"] / old[after["image_id"]]["width"]
        sy = new[after["image_id"]]["height"] / old[after["image_id"]]["height"]
        x, y, w, h = before["bbox"]
        assert after["bbox"] == pytest.approx([x * sx, y * sy, w * sx, h * sy], abs=0.006), (before, after)


def test_data_dataset_raccoon_resolves_to_the_shipped_files_unless_files_are_given(tmp_path):
    paths = resolve_data_paths(DataConfig(dataset="raccoon"))
    files = raccoon_files()
    assert (paths.train_json, paths.val_json, paths.train_images) == (files.train_json, files.val_json, ROOT / "images")
    mine = DataConfig(dataset="raccoon", train_json=str(tmp_path / "a.json"), train_images=str(tmp_path))
    assert resolve_data_paths(mine).train_json == tmp_path / "a.json"
    config = apply_overrides(get_preset("centernet_dla34_shapes"), ["data.dataset=raccoon"])
    assert config.data.dataset == "raccoon"


# Measured with this test's settings on the 2-core CPU (2026-12-06, torch 2.14.1, fp32, seed 0, 2 min 50 s, the
# preset with its up-sampler skips): test AP50 0.537, AP 0.252 (flip test; 0.555 / 0.243 without the skips). The
# floor sits well under that and far above what an untrained or broken detector gives on these photos (AP50 ~0),
# so a regression in targets, loss or decoding on real photos fails CI.
REAL_PHOTO_AP50_FLOOR = 0.3


def test_centernet_lite0_learns_real_photos_in_a_short_fine_tune(tmp_path):
    config = apply_overrides(
        get_preset("centernet_effl0_raccoon"),
        [
            "optim.epochs=6",
            "eval.every=6",
            "num_visualizations=0",
            f"run_dir={tmp_path / 'run'}",
        ],
    )
    metrics = Trainer(config).train()
    assert metrics["AP50"] >= REAL_PHOTO_AP50_FLOOR, metrics
