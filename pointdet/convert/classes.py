"""The class lists of the official model zoos' data sets, in the order of their heatmap channels.

COCO: the 80 categories and their ids in the annotation files (CenterNet ``datasets/dataset/coco.py``); Pascal VOC:
20 categories, ids 1-20 (``pascal.py``); KITTI: CenterNet's 3D classes (``kitti.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pointdet.data.coco import flip_pairs_from_names
from pointdet.errors import PointdetError

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
COCO_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91),
)  # fmt: skip
VOC_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
KITTI_NAMES = ("Pedestrian", "Car", "Cyclist")
COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
# The limbs CenterNet draws (``coco_hp.py`` ``edges``), 0-based.
COCO_SKELETON = (
    (0, 1), (0, 2), (1, 3), (2, 4), (4, 6), (3, 5), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (6, 12), (5, 11),
    (11, 12), (12, 14), (14, 16), (11, 13), (13, 15),
)  # fmt: skip


class ClassList(NamedTuple):
    """Class names in heatmap-channel order and the category id of each."""

    names: list[str]
    category_ids: list[int]


NAMED = {
    "coco": ClassList(list(COCO_NAMES), list(COCO_IDS)),
    "voc": ClassList(list(VOC_NAMES), list(range(1, len(VOC_NAMES) + 1))),
    "kitti": ClassList(list(KITTI_NAMES), list(range(1, len(KITTI_NAMES) + 1))),
    "person": ClassList(["person"], [1]),
}


class KeypointLayout(NamedTuple):
    """Keypoint names, left/right index pairs swapped by a horizontal flip, and 0-based limbs to draw."""

    names: list[str]
    flip_pairs: list[tuple[int, int]]
    skeleton: list[tuple[int, int]]


def keypoint_layout(task: str) -> KeypointLayout:
    """COCO's 17 person keypoints for ``pose``, none otherwise."""
    if task != "pose":
        return KeypointLayout([], [], [])
    return KeypointLayout(list(COCO_KEYPOINTS), flip_pairs_from_names(list(COCO_KEYPOINTS)), list(COCO_SKELETON))


def class_list(spec: str) -> ClassList:
    """``coco``, ``voc``, ``kitti``, ``person``, or a text file of names, one a line (ids 1..C in that order).

    Raises:
        PointdetError: neither a known name nor a readable file with at least one name.
    """
    if spec in NAMED:
        return NAMED[spec]
    path = Path(spec)
    if not path.is_file():
        raise PointdetError(f"--classes {spec}: neither one of {', '.join(NAMED)} nor a file of class names")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise PointdetError(f"--classes {spec}: the file names no class (one name a line)")
    return ClassList(names, list(range(1, len(names) + 1)))
