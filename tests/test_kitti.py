"""KITTI reading and the KITTI evaluation protocol, against hand-built cases."""

import math
from dataclasses import replace

import numpy as np
import pytest

from pointdet.data.coco import DatasetError
from pointdet.data.kitti import KittiDataset, parse_label_line, read_calibration, read_label_file
from pointdet.data.synthetic3d import generate_kitti_scenes
from pointdet.evaluation.kitti import cuboid_overlaps, evaluate_kitti, format_kitti_metrics
from pointdet.structures import KittiObject

LINE = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"


def _car(box, alpha=0.5, occluded=0, truncated=0.0, kind="Car", score=1.0, location=(0.0, 1.6, 20.0), yaw=0.4):
    return KittiObject(kind, truncated, occluded, alpha, tuple(box), (1.5, 1.6, 4.0), location, yaw, score)


def test_label_line_round_trip_and_errors(tmp_path):
    obj = parse_label_line(LINE, "x")
    assert obj.type == "Car" and obj.box == (587.01, 173.33, 614.12, 200.12) and obj.dimensions == (1.65, 1.67, 3.64)
    assert obj.location == (-0.65, 1.71, 46.70) and obj.rotation_y == -1.59 and obj.score == 1.0
    assert parse_label_line(obj.to_line(), "x") == obj
    bad = tmp_path / "000001.txt"
    bad.write_text(LINE + "\n" + LINE.replace("1.65 1.67", "1.65 wide") + "\n")
    with pytest.raises(DatasetError, match=r"000001.txt line 2: field 'w' = 'wide' is not a float"):
        read_label_file(bad)
    bad.write_text("Car 0.00 0\n")
    with pytest.raises(DatasetError, match="line 1: expected 15 fields"):
        read_label_file(bad)
    calib = tmp_path / "calib.txt"
    calib.write_text("P0: 1 2 3\n")
    with pytest.raises(DatasetError, match="no 'P2:' line"):
        read_calibration(calib)
    calib.write_text("P2: 1 2 3\n")
    with pytest.raises(DatasetError, match="field 'P2' has 3 values, expected 12"):
        read_calibration(calib)


def test_synthetic_scenes_are_deterministic_and_readable(tmp_path):
    first = generate_kitti_scenes(tmp_path / "a", num_train=3, num_val=2)
    second = generate_kitti_scenes(tmp_path / "b", num_train=3, num_val=2)
    for sub in ("training/image_2/000004.png", "training/label_2/000001.txt", "training/calib/000000.txt"):
        assert (first.root / sub).read_bytes() == (second.root / sub).read_bytes(), sub
    train, val = KittiDataset(first.root, "train"), KittiDataset(first.root, "val")
    assert [r.name for r in train.records] == ["000000", "000001", "000002"] and len(val) == 2
    instances = train.instances(0, 375, 1242)
    assert instances.boxes3d.shape == (len(instances), 8) and len(instances) >= 1
    assert np.allclose(train.records[0].calibration[0, 0], 721.5377)
    with pytest.raises(DatasetError, match="split file not found"):
        KittiDataset(first.root, "test")


def test_bird_eye_and_3d_overlaps_by_hand():
    box = np.array([[1.5, 2.0, 4.0, 0.0, 1.6, 10.0, 0.0]])  # h, w, l, x, y, z, yaw: a 4 x 2 footprint
    turned = box.copy()
    turned[0, 6] = math.pi / 2  # same centre, rotated: the overlap is the central 2 x 2 square
    assert cuboid_overlaps(box, turned)[0][0, 0] == pytest.approx(4 / 12)
    shifted = box.copy()
    shifted[0, 3] = 2.0  # half a length along x
    assert cuboid_overlaps(box, shifted)[0][0, 0] == pytest.approx(4 / 12)
    lower = box.copy()
    lower[0, 4] = 1.6 + 0.75  # half the height lower: 3D IoU = (8 * 0.75) / (12 + 12 - 6)
    assert cuboid_overlaps(box, lower)[1][0, 0] == pytest.approx(6 / 18)
    assert cuboid_overlaps(box, lower)[0][0, 0] == pytest.approx(1.0)


def _scene(images=80):
    """80 images, each with an Easy car (50 px tall), a Moderate-only car (30 px) and a Hard-only car (occluded).

    The devkit samples precision where the recall crosses 0, 1/40, ..., 1 — one threshold per true positive
    at most — so a perfect score needs enough objects: 80 per difficulty gives all 41 sample points.
    """
    scene = []
    for i in range(images):
        scene.append(
            [
                _car((100, 100, 200, 150), alpha=0.5 + i / 100),
                _car((300, 100, 360, 130), alpha=-0.5, location=(5.0, 1.6, 30.0)),
                _car((400, 120, 500, 170), alpha=-1.0, occluded=2, location=(-4.0, 1.6, 15.0), yaw=-2.0),
            ]
        )
    return scene


def test_perfect_predictions_score_100_everywhere():
    truth = _scene()
    for recall_points in (11, 40):
        metrics = evaluate_kitti(truth, truth, recall_points=recall_points)
        assert len(metrics) == 12 and all(v == pytest.approx(1.0) for v in metrics.values()), metrics
    assert "Moderate" in format_kitti_metrics(metrics)


def test_known_rotation_error_gives_the_expected_aos():
    truth = _scene()
    delta = 0.6
    rotated = [[replace(o, alpha=o.alpha + delta) for o in image] for image in truth]
    metrics = evaluate_kitti(truth, rotated)
    for difficulty in ("easy", "moderate", "hard"):
        assert metrics[f"Car/2d/{difficulty}"] == pytest.approx(1.0)
        assert metrics[f"Car/aos/{difficulty}"] == pytest.approx((1 + math.cos(delta)) / 2)


def test_half_recall_follows_the_devkit_sampling():
    # 80 countable cars, 40 found. Thresholds are placed at true positives 1, 2, 4, 6, ..., 40 (where the
    # recall best approximates 0, 1/40, 2/40, ...): 21 of them, recall 0 to 1/2. Precision is 1 there and 0
    # beyond: 6 of the 11 points (0, 0.1, ..., 0.5) and 20 of the 40 points (1/40, ..., 20/40).
    truth = [[_car((100, 100, 200, 150))] for _ in range(80)]
    found = [image if i < 40 else [] for i, image in enumerate(truth)]
    assert evaluate_kitti(truth, found)["Car/2d/easy"] == pytest.approx(6 / 11)
    assert evaluate_kitti(truth, found, recall_points=40)["Car/2d/easy"] == pytest.approx(20 / 40)


def test_ignored_ground_truth_and_dontcare_cost_nothing_but_a_false_positive_does():
    truth, found, with_fp = [], [], []
    for _ in range(80):
        easy = _car((100, 100, 200, 150))
        hard_only = _car((400, 120, 500, 170), occluded=2, location=(-4.0, 1.6, 15.0))
        van = _car((600, 100, 700, 160), kind="Van", location=(8.0, 1.6, 20.0))
        dontcare = _car((800, 100, 900, 160), kind="DontCare", location=(12.0, 1.6, 20.0))
        truth.append([easy, hard_only, van, dontcare])
        detections = [replace(easy, score=0.9), replace(hard_only, score=0.95), replace(van, type="Car", score=0.8),
                      replace(dontcare, type="Car", score=0.7)]  # fmt: skip
        found.append(detections)
        with_fp.append([*detections, _car((1000, 100, 1100, 160), score=0.99, location=(15.0, 1.6, 20.0))])
    metrics = evaluate_kitti(truth, found)
    assert metrics["Car/2d/easy"] == pytest.approx(1.0) and metrics["Car/2d/moderate"] == pytest.approx(1.0)
    # One false positive above every true positive: precision 1/2 at every sampled recall.
    assert evaluate_kitti(truth, with_fp)["Car/2d/easy"] == pytest.approx(0.5)
