"""COCO-format reader with validation: boxes, crowd regions, polygon/RLE masks, polygons and keypoints.

Every file (training, validation, test) is checked by the same rules (``data.coco_checks``) when it is opened,
before any training: structural problems raise ``DatasetError`` naming the file, the record and the field (a
missing field, a non-numeric id or size, a repeated image, annotation or category id or category name, an unknown
category or image, a ``file_name`` that leaves the images folder, a ``bbox`` that is not four numbers, keypoints of
the wrong length or not numbers, a skeleton that is not pairs of keypoint numbers, an ``iscrowd`` other than 0 / 1,
a missing or negative ``area``, a polygon of odd length or an RLE whose runs do not cover its image). Every image
file's header is read when the set is opened (no decoding): files that are missing, not images, cut off (PNG) or of
another size than the record's ``width``/``height`` are listed in one error, or, with ``skip_bad_images``, left out
with their annotations and reported. Boxes that cannot be trained on (non-positive size, NaN, infinite or beyond
float32, entirely outside the image) are skipped, counted in ``skipped`` and reported once as a warning. Crowd
annotations (``iscrowd=1``) are not objects: their boxes become the image's ``ignore_boxes``.

``ground_truth`` is what COCO evaluation scores against: the file with the left-out images and the skipped
annotations removed, so a set is scored on exactly what it trains on.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from tqdm import tqdm

from pointdet.data.coco_checks import (
    box_skip_reason,
    check_categories,
    check_keypoints,
    check_scoring_fields,
    check_segmentation,
    integer,
    list_of,
    read_json,
    require,
)
from pointdet.data.images import ImageReadError, image_size
from pointdet.errors import DatasetError
from pointdet.structures import Instances

logger = logging.getLogger(__name__)

LISTED_PROBLEMS = 10  # bad image files named one per line before the rest are only counted
PROGRESS_FROM = 2000  # image headers checked with a progress bar from this many on


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
        ground_truth: the COCO document that evaluation scores against: the kept images and their usable
            annotations (objects and crowd regions), ``iscrowd`` as 0 / 1 and, when the categories define
            keypoints, every annotation with ``keypoints`` and ``num_keypoints`` (unlabelled when absent).
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
        data = read_json(self.annotation_file)
        where = str(self.annotation_file)
        require(data, ("images", "annotations", "categories"), where)
        self.skipped: Counter[str] = Counter()
        self.left_out: list[str] = []
        categories = list_of(data, "categories", where)
        self._read_categories(categories)
        self.records, scored = self._read_records(list_of(data, "images", where), list_of(data, "annotations", where))
        self.ground_truth = {"images": scored[0], "annotations": scored[1], "categories": categories}
        if self.skipped:
            kind = "skipped annotations (left out of training and scoring)"
            logger.warning("%s: %s: %s", self.annotation_file, kind, dict(self.skipped))
        if not self.num_objects:
            logger.warning(
                "%s: no annotation to train on or to score (%d images, %d annotations in the file)",
                self.annotation_file,
                len(self.records),
                len(data["annotations"]),
            )

    @property
    def num_objects(self) -> int:
        """The usable non-crowd annotations of all records."""
        return sum(len(record.boxes) for record in self.records)

    def require_objects(self) -> None:
        """Refuse a set with nothing to learn from (no annotations, or every one skipped or a crowd region).

        Raises:
            DatasetError: naming the file and the counts.
        """
        if not self.num_objects:
            skipped = f"; skipped: {dict(self.skipped)}" if self.skipped else ""
            raise DatasetError(
                f"{self.annotation_file}: no annotation to train on ({len(self.records)} images, 0 usable "
                f"objects{skipped})"
            )

    def _read_categories(self, categories: list[dict]) -> None:
        where = f"{self.annotation_file}"
        check_categories(categories, where)
        categories = sorted(categories, key=lambda c: int(c["id"]))
        self.category_ids = [int(c["id"]) for c in categories]
        self.class_names = [c["name"] for c in categories]
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids)}
        keypoint_lists = {tuple(c["keypoints"]) for c in categories if c.get("keypoints")}
        if len(keypoint_lists) > 1:
            raise DatasetError(f"{where}: categories define different keypoint lists; one shared list is supported")
        self.keypoint_names = list(keypoint_lists.pop()) if keypoint_lists else []
        self.flip_pairs = flip_pairs_from_names(self.keypoint_names)
        skeletons = [c["skeleton"] for c in categories if c.get("skeleton")]
        self.skeleton = [(a - 1, b - 1) for a, b in skeletons[0]] if skeletons else []

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

    def _read_images(self, images: list[dict]) -> dict[int, tuple[int, dict, Path, int, int]]:
        """id -> (position, record, path, height, width) of every image whose file can be used."""
        where = str(self.annotation_file)
        image_info: dict[int, tuple[int, dict, Path, int, int]] = {}
        for i, image in enumerate(images):
            record = f"{where} images[{i}] (id={image.get('id') if isinstance(image, dict) else None})"
            require(image, ("id", "file_name", "width", "height"), record)
            image_id = integer(image, "id", record)
            if image_id in image_info:
                raise DatasetError(f"{record}: field 'id' = {image_id} repeats images[{image_info[image_id][0]}]")
            width = integer(image, "width", record, positive=True)
            height = integer(image, "height", record, positive=True)
            image_info[image_id] = (i, image, self._image_path(image["file_name"], record), height, width)
        self._left_out_ids = self._check_image_files(image_info)
        return {image_id: info for image_id, info in image_info.items() if image_id not in self._left_out_ids}

    def _read_records(
        self, images: list[dict], annotations: list[dict]
    ) -> tuple[list[ImageRecord], tuple[list[dict], list[dict]]]:
        """The records of the usable images, and the images and annotations that evaluation scores."""
        image_info = self._read_images(images)
        by_image: dict[int, list[dict]] = {image_id: [] for image_id in image_info}
        crowd_by_image: dict[int, list[dict]] = {image_id: [] for image_id in image_info}
        scored: list[dict] = []
        num_keypoints = len(self.keypoint_names)
        first_id: dict[int, int] = {}
        for i, ann in enumerate(annotations):
            record = f"{self.annotation_file} annotations[{i}] (id={ann.get('id') if isinstance(ann, dict) else None})"
            image_id = self._check_annotation(ann, record, image_info, num_keypoints)
            annotation_id = int(ann["id"])
            if annotation_id in first_id:
                raise DatasetError(
                    f"{record}: field 'id' = {annotation_id} repeats annotations[{first_id[annotation_id]}]; COCO "
                    "evaluation keeps one annotation per id"
                )
            first_id[annotation_id] = i
            if image_id in self._left_out_ids:
                self.skipped["annotation of a left-out image"] += 1
                continue
            _, _, _, height, width = image_info[image_id]
            reason = box_skip_reason(ann["bbox"], height, width, record)
            if reason is not None:
                self.skipped[reason] += 1
                continue
            (crowd_by_image if ann.get("iscrowd", 0) else by_image)[image_id].append(ann)
            scored.append(_as_scored(ann, num_keypoints))
        records = [
            self._make_record(image_info[image_id], anns, crowd_by_image[image_id], num_keypoints)
            for image_id, anns in by_image.items()
        ]
        return records, ([info[1] for info in image_info.values()], scored)

    def _check_annotation(self, ann: object, record: str, image_info: dict[int, tuple], num_keypoints: int) -> int:
        """Check one annotation by the rules of ``data.coco_checks``; its ``image_id``."""
        require(ann, ("id", "image_id", "category_id", "bbox", "area"), record)
        integer(ann, "id", record)
        image_id = integer(ann, "image_id", record)
        if image_id not in image_info and image_id not in self._left_out_ids:
            raise DatasetError(f"{record}: field 'image_id' = {ann['image_id']} names no image in 'images'")
        if integer(ann, "category_id", record) not in self._label_of:
            raise DatasetError(f"{record}: field 'category_id' = {ann['category_id']} is an unknown category")
        check_scoring_fields(ann, record)
        check_keypoints(ann, num_keypoints, record)
        if image_id in image_info:
            _, _, _, height, width = image_info[image_id]
            check_segmentation(ann.get("segmentation"), height, width, record)
        return image_id

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


def _as_scored(ann: dict, num_keypoints: int) -> dict:
    """An annotation as COCO evaluation reads it: ``iscrowd`` 0 / 1 and, in a file with ``num_keypoints``
    keypoints, ``keypoints`` (all unlabelled when absent, as in training) and ``num_keypoints`` (the labelled ones,
    ``v > 0``, when absent). The annotation itself when nothing changes."""
    changes: dict = {}
    if "iscrowd" in ann and type(ann["iscrowd"]) is not int:
        changes["iscrowd"] = int(ann["iscrowd"])
    if num_keypoints:
        keypoints = ann.get("keypoints")
        if keypoints is None:
            changes["keypoints"] = keypoints = [0] * (3 * num_keypoints)
        if "num_keypoints" not in ann:
            changes["num_keypoints"] = sum(v > 0 for v in keypoints[2::3])
    return {**ann, **changes} if changes else ann


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
