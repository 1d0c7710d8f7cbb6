"""``pointdet voc2coco`` and ``pointdet split``: VOC image sets as COCO files, and splits carved from one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pointdet.cli import main
from pointdet.data.coco import CocoDataset
from pointdet.data.splits import SplitError, split_coco
from pointdet.data.voc import VOCError, voc_to_coco
from tests.conftest import shared_data

VOC_OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def _voc(root: Path, images: dict[str, list[tuple]], sets: dict[str, list[str]]) -> Path:
    """A VOC folder: ``images`` maps an id to its objects ``(name, x1, y1, x2, y2, difficult)``."""
    for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        Image.new("RGB", (64, 48)).save(root / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(
            VOC_OBJECT.format(name=n, x1=x1, y1=y1, x2=x2, y2=y2, difficult=d) for n, x1, y1, x2, y2, d in objects
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>64</width><height>48</height>"
            f"<depth>3</depth></size>{body}</annotation>"
        )
    for name, ids in sets.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_boxes_become_zero_based_coco_boxes_and_difficult_objects_are_ignored(tmp_path):
    root = _voc(
        tmp_path / "voc",
        {
            "a": [("dog", 1, 1, 10, 20, 0), ("cat", 5, 6, 30, 40, 1)],
            "b": [("cat", 3, 3, 3, 9, 0), ("cat", 5, 1, 3, 9, 0)],
        },
        {"train": ["a"], "test": ["b"]},
    )
    datasets, left_out = voc_to_coco(root, ["train", "test"])
    train = datasets["train"]
    assert (
        [c["name"] for c in train["categories"]]
        == ["cat", "dog"]
        == [c["name"] for c in datasets["test"]["categories"]]
    )
    dog, cat = train["annotations"]
    # VOC pixels 1..10 are ten pixels: corners 0 and 10
    assert dog["bbox"] == [0.0, 0.0, 10.0, 20.0] and dog["area"] == 200.0 and dog["category_id"] == 2
    assert dog["iscrowd"] == 0 and cat["iscrowd"] == 1
    (one_pixel,) = datasets["test"]["annotations"]  # VOC column 3 alone is one pixel wide: kept
    assert one_pixel["bbox"] == [2.0, 2.0, 1.0, 7.0]
    assert left_out == ["b.jpg object 1 (cat): empty box [4.0, 0.0, 3.0, 9.0]"]
    with pytest.raises(VOCError, match=r"classes \['dog'\] are not among the classes given"):
        voc_to_coco(root, ["train"], classes=["cat"])
    with pytest.raises(VOCError, match=r"nope.txt: no such image set"):
        voc_to_coco(root, ["nope"])
    (root / "Annotations" / "b.xml").write_text("<annotation><filename>b.jpg</filename></annotation>")
    with pytest.raises(VOCError, match=r"b.xml: no <size/width>"):
        voc_to_coco(root, ["test"])


def test_voc2coco_files_load_as_a_pointdet_dataset(tmp_path, capsys):
    root = _voc(
        tmp_path / "voc", {"a": [("dog", 1, 1, 10, 20, 0)], "b": [("dog", 9, 1, 2, 5, 0)]}, {"train": ["a", "b"]}
    )
    main(["voc2coco", str(root), "--sets", "train", "--out", str(tmp_path / "coco")])
    captured = capsys.readouterr()
    assert "voc2coco: left out b.jpg object 0 (dog): empty box" in captured.err
    assert "instances_train.json: 2 images, 1 objects (dog)" in captured.out
    dataset = CocoDataset(tmp_path / "coco" / "instances_train.json", root / "JPEGImages")
    assert dataset.class_names == ["dog"] and len(dataset.records) == 2


def test_split_keeps_images_whole_and_is_seeded():
    source = json.loads((shared_data("coco_train_mini") / "annotations" / "instances_train.json").read_text())
    parts = split_coco(source, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, classes=["person", "dog"])
    ids = [{image["id"] for image in part["images"]} for part in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    kept = {c["id"] for c in parts["train"]["categories"]}
    assert {c["name"] for c in parts["train"]["categories"]} == {"person", "dog"}
    holding = {a["image_id"] for a in source["annotations"] if a["category_id"] in kept}
    assert set().union(*ids) == holding  # exactly the photos with a person or a dog
    for part, image_ids in zip(parts.values(), ids, strict=True):
        assert all(a["image_id"] in image_ids and a["category_id"] in kept for a in part["annotations"])
    train, val = round(0.6 * len(holding)), round(0.2 * len(holding))
    assert [len(i) for i in ids] == [train, val, len(holding) - train - val]
    assert split_coco(source, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, classes=["person", "dog"]) == parts
    assert (
        split_coco(source, {"train": 0.6, "val": 0.4}, seed=1)["val"]["images"]
        != split_coco(source, {"train": 0.6, "val": 0.4}, seed=0)["val"]["images"]
    )
    with pytest.raises(SplitError, match="must be positive and sum to 1"):
        split_coco(source, {"train": 0.6, "val": 0.6})
    with pytest.raises(SplitError, match=r"classes \['unicorn'\] are not in the file"):
        split_coco(source, {"train": 1.0}, classes=["unicorn"])


def test_split_command_writes_one_file_per_part(tmp_path, capsys):
    source = shared_data("coco_train_mini") / "annotations" / "instances_train.json"
    main(["split", str(source), "--parts", "train=0.75,val=0.25", "--out", str(tmp_path)])
    written = {path.name: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    assert set(written) == {"instances_train.json", "instances_val.json"}
    assert len(written["instances_train.json"]["images"]) + len(written["instances_val.json"]["images"]) == 215
    assert "instances_val.json: 54 images" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["split", str(source), "--parts", "train", "--out", str(tmp_path)])
    assert "argument --parts: 'train' is not NAME=FRACTION" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(SystemExit, match=r"error: .*bad.json: not a COCO file"):
        main(["split", str(tmp_path / "bad.json"), "--out", str(tmp_path)])
