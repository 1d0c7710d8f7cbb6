"""COCO-format reader with validation: boxes, crowd regions, polygon/RLE masks, polygons and keypoints.

Structural problems raise ``DatasetError`` naming the file, the record and the field: a missing field, a
non-numeric id or size, a repeated image or category id, an unknown category or image, a ``file_name`` that leaves
the images folder, keypoints of the wrong length, a polygon of odd length or an RLE whose runs do not cover its
image. Every image file's header is read when the set is opened (no decoding): files that are missing, not
images, cut off (PNG) or of another size than the record's ``width``/``height`` are listed in one error, or, with
``skip_bad_images``, left out with their annotations and reported. Boxes that cannot be trained on (non-positive
size, NaN, entirely outside the image) are skipped, counted in ``skipped`` and reported once as a warning. Crowd
annotations (``iscrowd=1``) are not objects: their boxes become the image's ``ignore_boxes``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from tqdm import tqdm

from pointdet.data.images import ImageReadError, image_size
from pointdet.errors import PointdetError
from pointdet.structures import Instances

logger = logging.getLogger(__name__)

LISTED_PROBLEMS = 10  # bad image files named one per line before the rest are only counted
PROGRESS_FROM = 2000  # image headers checked with a progress bar from this many on


class DatasetError(PointdetError, ValueError):
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


def _require(record: object, fields: tuple[str, ...], where: str) -> None:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object with fields {list(fields)}, got {str(record)[:60]!r}")
    for field in fields:
        if field not in record:
            raise DatasetError(f"{where}: missing field '{field}'")


def _integer(record: dict, field: str, where: str, positive: bool = False) -> int:
    """``record[field]`` as an int (integral floats such as 640.0 accepted)."""
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise DatasetError(f"{where}: field '{field}' must be an integer, got {value!r}")
    if positive and value <= 0:
        raise DatasetError(f"{where}: field '{field}' must be positive, got {value!r}")
    return int(value)


def _list_of(data: dict, key: str, where: str) -> list:
    if not isinstance(data[key], list):
        raise DatasetError(f"{where}: field '{key}' must be a list, got {type(data[key]).__name__}")
    return data[key]


class CocoDataset:
    """Images and annotations of a COCO-format JSON file, validated on load.

    Args:
        annotation_file: path to ``instances_*.json`` / ``person_keypoints_*.json``.
        image_dir: folder that ``file_name`` is relative to.
        with_masks: decode polygon/RLE segmentations into (N, H, W) masks in ``instances``.
        with_polygons: give ``instances`` the polygons of every object (an empty list of parts for RLE-only ones).
            Off by default, as ``with_masks``: nothing trains on them yet, and each geometric transform then moves
            every vertex.
        skip_bad_images: leave out (and report) images whose file is missing, unreadable or of another size than
            the record says, with their annotations; by default they are an error listing them.

    Attributes:
        class_names: C names in contiguous label order.
        category_ids: C original COCO category ids; ``category_ids[label]`` maps back.
        keypoint_names: K names (empty when the categories define none).
        flip_pairs: left/right keypoint index pairs swapped by horizontal flips.
        skeleton: 0-based keypoint index pairs to draw as limbs (the categories' ``skeleton``, 1-based in COCO).
        skipped: counts of skipped annotations by reason.
        left_out: one line per image left out by ``skip_bad_images`` (record, file and reason).
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        with_masks: bool = False,
        with_polygons: bool = False,
        skip_bad_images: bool = False,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.with_masks, self.with_polygons, self.skip_bad_images = with_masks, with_polygons, skip_bad_images
        try:
            data = json.loads(self.annotation_file.read_text())
        except FileNotFoundError as error:
            raise DatasetError(f"{self.annotation_file}: annotation file not found") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{self.annotation_file}: not valid JSON ({error})") from error
        except OSError as error:  # a folder, a file without read permission
            raise DatasetError(f"{self.annotation_file}: cannot be read ({error.strerror or error})") from error
        if not isinstance(data, dict):
            raise DatasetError(
                f"{self.annotation_file}: top level must be an object with images/annotations/categories"
            )
        _require(data, ("images", "annotations", "categories"), str(self.annotation_file))
        self.skipped: Counter[str] = Counter()
        self.left_out: list[str] = []
        where = str(self.annotation_file)
        self._read_categories(_list_of(data, "categories", where))
        self.records = self._read_records(_list_of(data, "images", where), _list_of(data, "annotations", where))
        if self.skipped:
            logger.warning("%s: skipped annotations: %s", self.annotation_file, dict(self.skipped))

    def _read_categories(self, categories: list[dict]) -> None:
        where = f"{self.annotation_file}"
        first_of: dict[int, int] = {}
        for i, category in enumerate(categories):
            _require(category, ("id", "name"), f"{where} categories[{i}]")
            category_id = _integer(category, "id", f"{where} categories[{i}]")
            if category_id in first_of:
                raise DatasetError(
                    f"{where} categories[{i}]: field 'id' = {category_id} repeats categories[{first_of[category_id]}]"
                )
            first_of[category_id] = i
        categories = sorted(categories, key=lambda c: int(c["id"]))
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

    def _image_path(self, file_name: object, where: str) -> Path:
        """``image_dir / file_name``, refusing names that are not relative paths inside the folder."""
        if not isinstance(file_name, str) or not file_name.strip():
            raise DatasetError(f"{where}: field 'file_name' must be a non-empty string, got {file_name!r}")
        normal = os.path.normpath(file_name)
        if os.path.isabs(file_name) or normal == ".." or normal.startswith(".." + os.sep):
            raise DatasetError(
                f"{where}: field 'file_name' = {file_name!r} leaves the images folder {self.image_dir}; "
                "file names must be relative paths inside it"
            )
        return self.image_dir / file_name

    def _read_records(self, images: list[dict], annotations: list[dict]) -> list[ImageRecord]:
        where = str(self.annotation_file)
        by_image: dict[int, list[dict]] = {}
        crowd_by_image: dict[int, list[dict]] = {}
        image_info: dict[int, tuple[int, dict, Path, int, int]] = {}  # id -> (position, record, path, height, width)
        for i, image in enumerate(images):
            record = f"{where} images[{i}] (id={image.get('id') if isinstance(image, dict) else None})"
            _require(image, ("id", "file_name", "width", "height"), record)
            image_id = _integer(image, "id", record)
            if image_id in image_info:
                raise DatasetError(f"{record}: field 'id' = {image_id} repeats images[{image_info[image_id][0]}]")
            width = _integer(image, "width", record, positive=True)
            height = _integer(image, "height", record, positive=True)
            image_info[image_id] = (i, image, self._image_path(image["file_name"], record), height, width)
        left_out = self._check_image_files(image_info)
        for image_id in left_out:
            del image_info[image_id]
        for image_id in image_info:
            by_image[image_id], crowd_by_image[image_id] = [], []
        num_keypoints = len(self.keypoint_names)
        for i, ann in enumerate(annotations):
            record = f"{where} annotations[{i}] (id={ann.get('id') if isinstance(ann, dict) else None})"
            _require(ann, ("image_id", "category_id", "bbox"), record)
            image_id = _integer(ann, "image_id", record)
            if image_id in left_out:
                self.skipped["annotation of a left-out image"] += 1
                continue
            if image_id not in by_image:
                raise DatasetError(f"{record}: field 'image_id' = {ann['image_id']} names no image in 'images'")
            if _integer(ann, "category_id", record) not in self._label_of:
                raise DatasetError(f"{record}: field 'category_id' = {ann['category_id']} is an unknown category")
            keypoints = ann.get("keypoints")
            if keypoints is not None and (not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints):
                count = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
                raise DatasetError(
                    f"{record}: field 'keypoints' has {count} values, expected {3 * num_keypoints} "
                    f"({num_keypoints} keypoints x 3)"
                )
            _, _, _, height, width = image_info[image_id]
            check_segmentation(ann.get("segmentation"), height, width, record)
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise DatasetError(f"{record}: field 'bbox' must be [x, y, w, h], got {bbox!r}")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
                self.skipped["bbox not finite"] += 1
                continue
            x, y, w, h = bbox
            if w <= 0 or h <= 0:
                self.skipped["bbox with non-positive size"] += 1
                continue
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                self.skipped["bbox entirely outside its image"] += 1
                continue
            (crowd_by_image if ann.get("iscrowd", 0) else by_image)[image_id].append(ann)
        return [
            self._make_record(image_info[image_id], anns, crowd_by_image[image_id], num_keypoints)
            for image_id, anns in by_image.items()
        ]

    def _check_image_files(self, image_info: dict[int, tuple[int, dict, Path, int, int]]) -> set[int]:
        """Read every image header; return the ids of the images left out (``skip_bad_images``), else raise.

        Raises:
            DatasetError: files that are missing, not images, cut off (PNG) or of another size than their record
                says, one line each (the first ``LISTED_PROBLEMS``, then a count).
        """
        problems: dict[int, str] = {}
        entries = tqdm(
            image_info.items(),
            desc=f"checking {self.annotation_file.name} images",
            unit="image",
            disable=len(image_info) < PROGRESS_FROM,
            leave=False,
        )
        for image_id, (i, image, path, height, width) in entries:
            prefix = f"images[{i}] id={image_id} file_name={image['file_name']!r}"
            if not path.is_file():
                reason = "not a regular file" if path.exists() else f"not found under {self.image_dir}"
                problems[image_id] = f"{prefix}: {reason}"
                continue
            if path.stat().st_size == 0:
                problems[image_id] = f"{prefix}: empty file (0 bytes)"
                continue
            try:
                size = image_size(path)
            except ImageReadError as error:
                problems[image_id] = f"{prefix}: {str(error).removeprefix(f'{path}: ')}"
                continue
            if size != (height, width):
                problems[image_id] = (
                    f"{prefix}: the file is {size[1]}x{size[0]} (width x height, after its EXIF orientation) but "
                    f"the record says width={width} height={height}; its boxes would mean something else"
                )
        if not problems:
            return set()
        lines = list(problems.values())
        listed = "\n  ".join(lines[:LISTED_PROBLEMS])
        more = f"\n  ... and {len(lines) - LISTED_PROBLEMS} more" if len(lines) > LISTED_PROBLEMS else ""
        if not self.skip_bad_images:
            raise DatasetError(
                f"{self.annotation_file}: {len(lines)} image file(s) cannot be used "
                f"(data.skip_bad_images=true leaves them out):\n  {listed}{more}"
            )
        logger.warning("%s: left out %d image(s):\n  %s%s", self.annotation_file, len(lines), listed, more)
        self.left_out = lines
        return set(problems)

    def _make_record(
        self, info: tuple[int, dict, Path, int, int], anns: list[dict], crowds: list[dict], num_keypoints: int
    ) -> ImageRecord:
        _, image, path, height, width = info
        boxes = _xyxy([a["bbox"] for a in anns])
        keypoints = np.zeros((len(anns), num_keypoints, 3), dtype=np.float32)
        for j, ann in enumerate(anns):
            if ann.get("keypoints") is not None:
                keypoints[j] = np.asarray(ann["keypoints"], dtype=np.float32).reshape(num_keypoints, 3)
        return ImageRecord(
            image_id=int(image["id"]),
            path=path,
            height=height,
            width=width,
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


def check_segmentation(segmentation: object, height: int, width: int, where: str) -> None:
    """Refuse a COCO ``segmentation`` that cannot be a mask of a ``height x width`` image: polygons must be flat
    lists of numbers of even length, an RLE must be ``{"size": [height, width], "counts": ...}`` whose runs
    (a list, or COCO's compressed string) cover exactly ``height x width`` pixels. Absent or empty is fine.

    Raises:
        DatasetError: naming ``where`` and what is wrong.
    """
    if segmentation is None or (isinstance(segmentation, list | dict) and not segmentation):
        return
    field = f"{where}: field 'segmentation'"
    if isinstance(segmentation, list):
        for part in segmentation:
            if not isinstance(part, list) or not all(type(v) in (int, float) for v in part):
                raise DatasetError(f"{field} has a polygon that is not a flat list of numbers ({str(part)[:60]})")
            if len(part) % 2:
                raise DatasetError(f"{field} has a polygon of odd length {len(part)}; it must list (x, y) pairs")
        return
    if not isinstance(segmentation, dict):
        raise DatasetError(f"{field} must be a list of polygons or an RLE object, got {str(segmentation)[:60]!r}")
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if size != [height, width]:
        raise DatasetError(f"{field}: RLE 'size' = {size!r} is not the image's [height, width] = {[height, width]}")
    if isinstance(counts, str):
        runs = _rle_string_runs(counts)
        if runs is None:
            raise DatasetError(f"{field}: RLE 'counts' is not a COCO compressed RLE string ({counts[:40]!r})")
    elif isinstance(counts, list) and all(type(v) is int for v in counts):
        runs = counts
    else:
        raise DatasetError(f"{field}: RLE 'counts' must be a string or a list of integers, got {str(counts)[:40]!r}")
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise DatasetError(
            f"{field}: RLE runs cover {sum(runs)} pixels (or are negative), not the image's {height}x{width} = "
            f"{height * width}"
        )


def _rle_string_runs(text: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools ``rleFrString``), or None if it is not one."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                return None  # ends inside a number
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


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
