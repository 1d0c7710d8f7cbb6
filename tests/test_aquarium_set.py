"""benchmarks/aquarium_set.py on a tiny export in the Roboflow YOLO layout: boxes, sizes, ids and splits."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "aquarium_set.py"


def write_photo(folder: Path, name: str, size: tuple[int, int], labels: str) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 160)).save(folder / "images" / f"{name}.jpg")
    (folder / "labels" / f"{name}.txt").write_text(labels)


def test_yolo_export_becomes_coco_at_512_pixels(tmp_path):
    export = tmp_path / "export"
    # a shark (class 4) centred at (0.5, 0.25), half the width and a quarter of the height; a zero-width fish
    write_photo(export / "train", "b", (1024, 768), "4 0.5 0.25 0.5 0.25\n0 0.3 0.3 0.0 0.1\n")
    write_photo(export / "train", "a", (768, 1024), "6 0.95 0.5 0.2 0.2\n")  # a stingray over the right edge
    write_photo(export / "valid", "c", (1024, 1024), "")  # an empty photo is kept
    write_photo(export / "test", "d", (2048, 1024), "1 0.5 0.5 1.0 1.0\n")
    out = tmp_path / "aquarium"
    subprocess.run([sys.executable, str(SCRIPT), str(export), "--out", str(out)], check=True, capture_output=True)

    train = json.loads((out / "instances_train.json").read_text())
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in train["images"]] == [
        (1, "a.jpg", 384, 512),
        (2, "b.jpg", 512, 384),
    ]
    assert [c["name"] for c in train["categories"]][4] == "shark"
    boxes = {(a["image_id"], a["category_id"]): a["bbox"] for a in train["annotations"]}
    assert boxes == {(1, 7): pytest.approx([326.4, 204.8, 57.6, 102.4]), (2, 5): pytest.approx([128, 48, 256, 96])}
    assert len(train["annotations"]) == 2  # the zero-width fish is dropped
    assert Image.open(out / "images" / "b.jpg").size == (512, 384)

    val = json.loads((out / "instances_val.json").read_text())
    assert len(val["images"]) == 1 and val["annotations"] == []
    test = json.loads((out / "instances_test.json").read_text())
    assert test["annotations"][0]["bbox"] == pytest.approx([0, 0, 512, 256])


def test_a_malformed_label_line_names_the_file_and_line(tmp_path):
    export = tmp_path / "export"
    write_photo(export / "train", "a", (100, 100), "0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n")
    for split in ("valid", "test"):
        (export / split / "images").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(export), "--out", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "a.txt:2: class 9 is not one of 0-6" in result.stderr
