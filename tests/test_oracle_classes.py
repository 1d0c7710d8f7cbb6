"""benchmarks/oracle_classes.py: detections with the wrong classes score nothing as they are and everything with the
oracle's classes; copies of one box under two classes collapse to one; the script prints one JSON line per file."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "oracle_classes.py"
OBJECTS = {1: [([10, 10, 40, 30], 1), ([60, 50, 30, 40], 2)], 2: [([5, 5, 50, 50], 2)]}  # image: (xywh, class)


def _ground_truth(path: Path) -> Path:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 128, "height": 128} for i in OBJECTS]
    annotations = [
        {"id": 10 * i + n, "image_id": i, "bbox": box, "area": box[2] * box[3], "category_id": c, "iscrowd": 0}
        for i, objects in OBJECTS.items()
        for n, (box, c) in enumerate(objects)
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_swapped_classes_score_zero_as_they_are_and_full_marks_with_the_oracle(tmp_path):
    ground_truth = _ground_truth(tmp_path / "gt.json")
    swapped = [
        {"image_id": i, "bbox": box, "score": 0.9 if i == 1 else 0.8, "category_id": 3 - c}
        for i, objects in OBJECTS.items()
        for box, c in objects
    ]
    # The dog of image 1 once more under its own class, scored above the rest: with the oracle's classes its swapped
    # detection becomes a second dog on it at 0.9, ranked before image 2's dog at 0.8, unless NMS removes it.
    copies = [*swapped, {"image_id": 1, "bbox": [60, 50, 30, 40], "score": 0.95, "category_id": 2}]
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    (tmp_path / "copies.json").write_text(json.dumps(copies))
    command = [
        sys.executable,
        str(SCRIPT),
        str(ground_truth),
        str(tmp_path / "swapped.json"),
        str(tmp_path / "copies.json"),
    ]
    lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
    swapped_row, copies_row = (json.loads(line) for line in lines)
    assert swapped_row["AP"] == 0.0 and swapped_row["oracle_AP"] == 100.0 and swapped_row["class_agnostic_AP"] == 100.0
    assert copies_row["oracle_AP"] == 100.0
    assert 0.0 < copies_row["AP"] < 100.0
