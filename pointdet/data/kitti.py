"""KITTI object-detection format: label and calibration files, and a dataset over the official layout.

Layout (as downloaded from the KITTI 3D object benchmark)::

    ROOT/training/image_2/000123.png   ROOT/training/label_2/000123.txt   ROOT/training/calib/000123.txt
    ROOT/ImageSets/train.txt, val.txt  (one image id per line, e.g. the 3DOP split)

Label lines have 15 fields (16 with a score in result files): type, truncated, occluded, alpha,
box (x1 y1 x2 y2, pixels), dimensions (h w l, metres), location (x y z, camera frame, bottom centre) and
rotation_y. A malformed line raises ``DatasetError`` naming the file, the line and the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointdet.data.coco import DatasetError
from pointdet.structures import Instances, KittiObject

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_FIELDS = (
    "type", "truncated", "occluded", "alpha", "x1", "y1", "x2", "y2", "h", "w", "l", "x", "y", "z", "rotation_y",
)  # fmt: skip


def _number(text: str, field: str, where: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise DatasetError(f"{where}: field '{field}' = {text!r} is not a {kind.__name__}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: field '{field}' = {text!r} is not finite")
    return value


def parse_label_line(line: str, where: str) -> KittiObject:
    """One label line -> ``KittiObject``; ``where`` names the file and line in errors."""
    parts = line.split()
    if len(parts) not in (15, 16):
        raise DatasetError(
            f"{where}: expected 15 fields ({' '.join(LABEL_FIELDS)}) or 16 with a score, got {len(parts)}"
        )
    values = [_number(text, field, where) for text, field in zip(parts[1:15], LABEL_FIELDS[1:], strict=True)]
    occluded = _number(parts[2], "occluded", where, int)
    score = _number(parts[15], "score", where) if len(parts) == 16 else 1.0
    return KittiObject(
        type=parts[0],
        truncated=values[0],
        occluded=occluded,
        alpha=values[2],
        box=tuple(values[3:7]),
        dimensions=tuple(values[7:10]),
        location=tuple(values[10:13]),
        rotation_y=values[13],
        score=score,
    )


def read_label_file(path: str | Path) -> list[KittiObject]:
    """All objects of a label (or result) file; blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found") from None
    return [parse_label_line(line, f"{path} line {n}") for n, line in enumerate(lines, 1) if line.strip()]


def write_label_file(path: str | Path, objects: Sequence[KittiObject]) -> None:
    Path(path).write_text("".join(obj.to_line() + "\n" for obj in objects))


def read_calibration(path: str | Path, key: str = "P2") -> np.ndarray:
    """The (3, 4) camera matrix ``key`` (P2, the left colour camera) of a KITTI calibration file."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: calibration file not found") from None
    for n, line in enumerate(lines, 1):
        name, _, rest = line.partition(":")
        if name.strip() == key:
            values = [_number(v, key, f"{path} line {n}") for v in rest.split()]
            if len(values) != 12:
                raise DatasetError(f"{path} line {n}: field '{key}' has {len(values)} values, expected 12 (3x4)")
            return np.asarray(values, dtype=np.float64).reshape(3, 4)
    raise DatasetError(f"{path}: no '{key}:' line")


@dataclass(frozen=True)
class KittiRecord:
    """One image of a split: its file, camera matrix and all labelled objects."""

    image_id: int
    name: str  # the zero-padded id, e.g. "000123"
    path: Path
    calibration: np.ndarray  # (3, 4) P2
    objects: list[KittiObject]


class KittiDataset:
    """Images, labels and calibrations of a KITTI split, validated on load.

    Objects whose type is in ``classes`` are trained on; every other object (DontCare, Van, ...) is kept in
    ``record.objects`` for the evaluation's ignore rules but not trained on (the reference instead paints
    ignore regions into the heatmap; not done here).

    Args:
        root: the KITTI folder (holding ``training/`` and ``ImageSets/``).
        split: a split name (``ROOT/ImageSets/<split>.txt``) or the path of an id list.
        classes: trained object types, in label order.

    Attributes:
        class_names, category_ids: the classes and their 1-based ids (for result files and checkpoints).
        keypoint_names, flip_pairs, skeleton: empty (KITTI has no keypoints); present so engines treat
            every dataset alike.
        annotation_file: the split file (named in logs).
    """

    def __init__(self, root: str | Path, split: str = "train", classes: Sequence[str] = ("Car",)) -> None:
        self.root = Path(root)
        split_file = Path(split) if Path(split).suffix == ".txt" else self.root / "ImageSets" / f"{split}.txt"
        if not split_file.is_file():
            raise DatasetError(f"{split_file}: split file not found (expected the KITTI layout under {self.root})")
        self.annotation_file = split_file
        self.class_names = list(classes)
        self.category_ids = list(range(1, len(self.class_names) + 1))
        self.keypoint_names: list[str] = []
        self.flip_pairs: list[tuple[int, int]] = []
        self.skeleton: list[tuple[int, int]] = []
        names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        self.records = [self._record(name, split_file) for name in names]

    def _record(self, name: str, split_file: Path) -> KittiRecord:
        folder = self.root / "training"
        images = [folder / "image_2" / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES]
        image = next((p for p in images if p.is_file()), None)
        if image is None:
            raise DatasetError(f"{split_file}: image '{name}' not found in {folder / 'image_2'}")
        if not name.isdigit():
            raise DatasetError(f"{split_file}: image id {name!r} is not a number")
        return KittiRecord(
            image_id=int(name),
            name=name,
            path=image,
            calibration=read_calibration(folder / "calib" / f"{name}.txt"),
            objects=read_label_file(folder / "label_2" / f"{name}.txt"),
        )

    def __len__(self) -> int:
        return len(self.records)

    def instances(self, index: int, height: int, width: int) -> Instances:
        """Trained objects of record ``index`` with their ``boxes3d`` (h, w, l, x, y, z, rotation_y, alpha)."""
        label_of = {name: label for label, name in enumerate(self.class_names)}
        objects = [obj for obj in self.records[index].objects if obj.type in label_of]
        boxes = torch.tensor([obj.box for obj in objects], dtype=torch.float32).reshape(-1, 4)
        cuboids = [(*obj.dimensions, *obj.location, obj.rotation_y, obj.alpha) for obj in objects]
        return Instances(
            boxes=boxes,
            labels=torch.tensor([label_of[obj.type] for obj in objects], dtype=torch.long),
            keypoints=torch.zeros(len(objects), 0, 3),
            boxes3d=torch.tensor(cuboids, dtype=torch.float32).reshape(-1, 8),
        )
