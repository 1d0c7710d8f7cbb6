"""COCO-format reader with validation: boxes, crowd regions, polygon/RLE masks, polygons and keypoints.

Structural problems (a missing image file, an unknown category, keypoints of the wrong length, a missing
field) raise ``DatasetError`` naming the file, the record and the field. Boxes that cannot be trained on
(non-positive size, NaN) are skipped, counted in ``skipped`` and reported once as a warning. Crowd annotations
(``iscrowd=1``) are not objects: their boxes become the image's ``ignore_boxes``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

from pointdet.structures import Instances

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A malformed annotation file; the message names the file, the record and the field."""


@dataclass(frozen=True)
class ImageRecord:
    """One image, its usable non-crowd annotations in contiguous label space, and its crowd regions."""

    image_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32 xyxy
    labels: np.ndarray  # (N,) int64
    keypoints: np.ndarray  # (N, K, 3) float32
    segmentations: list  # N COCO segmentations (polygon lists or RLE dicts; [] when absent)
    ignore_boxes: np.ndarray  # (G, 4) float32 xyxy of the crowd annotations


def flip_pairs_from_names(names: list[str]) -> list[tuple[int, int]]:
    """Index pairs of keypoints whose names differ only by 'left' <-> 'right' (e.g. COCO's left_eye/right_eye)."""
    index = {name: i for i, name in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        if "left" in name:
            j = index.get(name.replace("left", "right"))
            if j is not None:
                pairs.append((i, j))
    return pairs


def _require(record: dict, fields: tuple[str, ...], where: str) -> None:
    for field in fields:
        if field not in record:
            raise DatasetError(f"{where}: missing field '{field}'")


class CocoDataset:
    """Images and annotations of a COCO-format JSON file, validated on load.

    Args:
        annotation_file: path to ``instances_*.json`` / ``person_keypoints_*.json``.
        image_dir: folder that ``file_name`` is relative to.
        with_masks: decode polygon/RLE segmentations into (N, H, W) masks in ``instances``.
        with_polygons: give ``instances`` the polygons of every object (an empty list of parts for RLE-only ones).
            Off by default, as ``with_masks``: nothing trains on them yet, and each geometric transform then moves
            every vertex.

    Attributes:
        class_names: C names in contiguous label order.
        category_ids: C original COCO category ids; ``category_ids[label]`` maps back.
        keypoint_names: K names (empty when the categories define none).
        flip_pairs: left/right keypoint index pairs swapped by horizontal flips.
        skeleton: 0-based keypoint index pairs to draw as limbs (the categories' ``skeleton``, 1-based in COCO).
        skipped: counts of skipped annotations by reason.
    """

    def __init__(
        self, annotation_file: str | Path, image_dir: str | Path, with_masks: bool = False, with_polygons: bool = False
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.with_masks, self.with_polygons = with_masks, with_polygons
        try:
            data = json.loads(self.annotation_file.read_text())
        except FileNotFoundError as error:
            raise DatasetError(f"{self.annotation_file}: annotation file not found") from error
        except json.JSONDecodeError as error:
            raise DatasetError(f"{self.annotation_file}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise DatasetError(
                f"{self.annotation_file}: top level must be an object with images/annotations/categories"
            )
        _require(data, ("images", "annotations", "categories"), str(self.annotation_file))
        self.skipped: Counter[str] = Counter()
        self._read_categories(data["categories"])
        self.records = self._read_records(data["images"], data["annotations"])
        if self.skipped:
            logger.warning("%s: skipped annotations: %s", self.annotation_file, dict(self.skipped))

    def _read_categories(self, categories: list[dict]) -> None:
        where = f"{self.annotation_file}"
        for i, category in enumerate(categories):
            _require(category, ("id", "name"), f"{where} categories[{i}]")
        categories = sorted(categories, key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in categories]
        self.class_names = [str(c["name"]) for c in categories]
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids)}
        keypoint_lists = {tuple(c["keypoints"]) for c in categories if c.get("keypoints")}
        if len(keypoint_lists) > 1:
            raise DatasetError(f"{where}: categories define different keypoint lists; one shared list is supported")
        self.keypoint_names = list(keypoint_lists.pop()) if keypoint_lists else []
        self.flip_pairs = flip_pairs_from_names(self.keypoint_names)
        skeletons = [c["skeleton"] for c in categories if c.get("skeleton")]
        self.skeleton = [(int(a) - 1, int(b) - 1) for a, b in skeletons[0]] if skeletons else []

    def _read_records(self, images: list[dict], annotations: list[dict]) -> list[ImageRecord]:
        where = str(self.annotation_file)
        by_image: dict[int, list[dict]] = {}
        crowd_by_image: dict[int, list[dict]] = {}
        image_info: dict[int, dict] = {}
        missing = []
        for i, image in enumerate(images):
            _require(image, ("id", "file_name", "width", "height"), f"{where} images[{i}] (id={image.get('id')})")
            image_info[int(image["id"])] = image
            by_image[int(image["id"])] = []
            crowd_by_image[int(image["id"])] = []
            if not (self.image_dir / image["file_name"]).is_file():
                missing.append(f"images[{i}] id={image['id']} file_name={image['file_name']!r}")
        if missing:
            raise DatasetError(
                f"{where}: {len(missing)} image file(s) not found under {self.image_dir}: "
                + "; ".join(missing[:5])
                + (" ..." if len(missing) > 5 else "")
            )
        num_keypoints = len(self.keypoint_names)
        for i, ann in enumerate(annotations):
            record = f"{where} annotations[{i}] (id={ann.get('id')})"
            _require(ann, ("image_id", "category_id", "bbox"), record)
            if int(ann["image_id"]) not in by_image:
                raise DatasetError(f"{record}: field 'image_id' = {ann['image_id']} names no image in 'images'")
            if int(ann["category_id"]) not in self._label_of:
                raise DatasetError(f"{record}: field 'category_id' = {ann['category_id']} is an unknown category")
            keypoints = ann.get("keypoints")
            if keypoints is not None and len(keypoints) != 3 * num_keypoints:
                raise DatasetError(
                    f"{record}: field 'keypoints' has {len(keypoints)} values, expected {3 * num_keypoints} "
                    f"({num_keypoints} keypoints x 3)"
                )
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise DatasetError(f"{record}: field 'bbox' must be [x, y, w, h], got {bbox!r}")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in bbox):
                self.skipped["bbox not finite"] += 1
                continue
            if bbox[2] <= 0 or bbox[3] <= 0:
                self.skipped["bbox with non-positive size"] += 1
                continue
            (crowd_by_image if ann.get("iscrowd", 0) else by_image)[int(ann["image_id"])].append(ann)
        return [
            self._make_record(image_info[image_id], anns, crowd_by_image[image_id], num_keypoints)
            for image_id, anns in by_image.items()
        ]

    def _make_record(self, image: dict, anns: list[dict], crowds: list[dict], num_keypoints: int) -> ImageRecord:
        boxes = _xyxy([a["bbox"] for a in anns])
        keypoints = np.zeros((len(anns), num_keypoints, 3), dtype=np.float32)
        for j, ann in enumerate(anns):
            if ann.get("keypoints") is not None:
                keypoints[j] = np.asarray(ann["keypoints"], dtype=np.float32).reshape(num_keypoints, 3)
        return ImageRecord(
            image_id=int(image["id"]),
            path=self.image_dir / image["file_name"],
            height=int(image["height"]),
            width=int(image["width"]),
            boxes=boxes,
            labels=np.array([self._label_of[int(a["category_id"])] for a in anns], dtype=np.int64),
            keypoints=keypoints,
            segmentations=[a.get("segmentation", []) for a in anns],
            ignore_boxes=_xyxy([a["bbox"] for a in crowds]),
        )

    def __len__(self) -> int:
        return len(self.records)

    def instances(self, index: int, height: int, width: int) -> Instances:
        """The ground truth of record ``index`` for an image decoded at ``(height, width)``, with the crowd regions
        as ``ignore_boxes``."""
        record = self.records[index]
        where = f"{self.annotation_file} image {record.image_id}"
        masks = decode_masks(record.segmentations, height, width, where) if self.with_masks else None
        return Instances(
            boxes=torch.from_numpy(record.boxes.copy()),
            labels=torch.from_numpy(record.labels.copy()),
            keypoints=torch.from_numpy(record.keypoints.copy()),
            masks=masks,
            polygons=read_polygons(record.segmentations, where) if self.with_polygons else None,
            ignore_boxes=torch.from_numpy(record.ignore_boxes.copy()),
        )


def _xyxy(bboxes: list[list[float]]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes -> (N, 4) float32 xyxy."""
    boxes = np.array(bboxes, dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def read_polygons(segmentations: list, where: str) -> list[list[Tensor]]:
    """COCO segmentations -> per object a list of (V, 2) float32 xy parts; RLE or absent segmentations give []."""
    polygons = []
    for j, segmentation in enumerate(segmentations):
        if not isinstance(segmentation, list):
            polygons.append([])
            continue
        for part in segmentation:
            if not isinstance(part, list) or len(part) % 2 or len(part) < 6:
                raise DatasetError(
                    f"{where}: annotation {j}: field 'segmentation' has a polygon that is not a flat list of at "
                    f"least 3 (x, y) pairs ({str(part)[:60]})"
                )
        polygons.append([torch.tensor(part, dtype=torch.float32).reshape(-1, 2) for part in segmentation])
    return polygons


def decode_masks(segmentations: list, height: int, width: int, where: str) -> Tensor:
    """COCO polygons or RLE -> (N, H, W) uint8 masks; an empty segmentation gives an empty mask."""
    masks = np.zeros((len(segmentations), height, width), dtype=np.uint8)
    for j, segmentation in enumerate(segmentations):
        if not segmentation:
            continue
        try:
            if isinstance(segmentation, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            masks[j] = mask_utils.decode(rle)
        except (TypeError, ValueError, AttributeError) as error:
            raise DatasetError(f"{where}: annotation {j}: field 'segmentation' cannot be decoded ({error})") from error
    return torch.from_numpy(masks)
