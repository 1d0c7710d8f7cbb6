"""The rules a COCO annotation file follows, field by field; a broken rule raises ``DatasetError`` naming the file,
the record and the field.

The same rules hold for every file pointdet reads (training, validation, test), so a file that trains also
scores: COCOeval needs each annotation's unique ``id`` and its ``area``, reads any true ``iscrowd`` as an ignore
region (the string ``"0"`` included) and keys its per-class table by category name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pointdet.errors import DatasetError

FLOAT32_MAX = float(np.finfo(np.float32).max)  # coordinates are trained on as float32: beyond this they are inf
SCORING_FIELDS = {
    "id": "a unique integer per annotation",
    "area": "the object's area in pixels; w * h of its box when it has no mask",
}


def read_json(path: Path) -> dict:
    """The top-level object of a COCO file.

    Raises:
        DatasetError: the file is missing, unreadable, not JSON, nested too deeply, or not an object.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: annotation file not found") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from error
    except RecursionError as error:
        raise DatasetError(f"{path}: its JSON is nested too deeply to be a COCO annotation file") from error
    except OSError as error:  # a folder, a file without read permission
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error})") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level must be an object with images/annotations/categories")
    return data


def require(record: object, fields: tuple[str, ...], where: str) -> None:
    """``record`` is an object holding every one of ``fields``."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object with fields {list(fields)}, got {str(record)[:60]!r}")
    for field in fields:
        if field not in record:
            why = f" ({SCORING_FIELDS[field]}; COCO evaluation needs it)" if field in SCORING_FIELDS else ""
            raise DatasetError(f"{where}: missing field '{field}'{why}")


def is_number(value: object) -> bool:
    """An int or float that JSON gave (``true`` / ``false`` are not numbers)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(record: dict, field: str, where: str, positive: bool = False) -> int:
    """``record[field]`` as an int (integral floats such as 640.0 accepted)."""
    value = record[field]
    if not is_number(value) or not float(value).is_integer():
        raise DatasetError(f"{where}: field '{field}' must be an integer, got {value!r}")
    if positive and value <= 0:
        raise DatasetError(f"{where}: field '{field}' must be positive, got {value!r}")
    return int(value)


def list_of(data: dict, key: str, where: str) -> list:
    if not isinstance(data[key], list):
        raise DatasetError(f"{where}: field '{key}' must be a list, got {type(data[key]).__name__}")
    return data[key]


def check_categories(categories: list, where: str) -> None:
    """Each category has an integer ``id`` and a non-empty string ``name``, both unique in the file, and, when
    given, ``keypoints`` (distinct names) and a ``skeleton`` of ``[a, b]`` pairs of keypoint numbers (1-based)."""
    first_id: dict[int, int] = {}
    first_name: dict[str, int] = {}
    for i, category in enumerate(categories):
        record = f"{where} categories[{i}]"
        require(category, ("id", "name"), record)
        category_id = integer(category, "id", record)
        record = f"{record} (id={category_id})"
        if category_id in first_id:
            raise DatasetError(f"{record}: field 'id' = {category_id} repeats categories[{first_id[category_id]}]")
        name = category["name"]
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{record}: field 'name' must be a non-empty string, got {name!r}")
        if name in first_name:
            raise DatasetError(
                f"{record}: field 'name' = {name!r} repeats categories[{first_name[name]}]; categories are told apart "
                "by name (the per-class tables, matching a model's classes), so each needs its own"
            )
        first_id[category_id], first_name[name] = i, i
        keypoints = category.get("keypoints") or []
        if not isinstance(keypoints, list) or not all(isinstance(k, str) and k for k in keypoints):
            raise DatasetError(f"{record}: field 'keypoints' must be a list of keypoint names, got {keypoints!r}")
        if len(set(keypoints)) != len(keypoints):
            raise DatasetError(f"{record}: field 'keypoints' names a keypoint twice: {keypoints}")
        _check_skeleton(category.get("skeleton") or [], len(keypoints), record)


def _check_skeleton(skeleton: object, num_keypoints: int, record: str) -> None:
    def is_pair(limb: object) -> bool:
        return (
            isinstance(limb, list) and len(limb) == 2 and all(type(k) is int and 1 <= k <= num_keypoints for k in limb)
        )

    if not isinstance(skeleton, list) or not all(is_pair(limb) for limb in skeleton):
        raise DatasetError(
            f"{record}: field 'skeleton' must be a list of [a, b] pairs of keypoint numbers 1..{num_keypoints} "
            f"(1-based, into its 'keypoints'), got {str(skeleton)[:80]}"
        )


def check_scoring_fields(ann: dict, record: str) -> None:
    """The fields COCOeval reads besides the box: ``area`` a number >= 0, ``iscrowd`` (if given) 0 or 1."""
    area = ann["area"]
    if not is_number(area) or not math.isfinite(area) or area < 0:
        raise DatasetError(f"{record}: field 'area' must be a number >= 0, got {area!r}")
    crowd = ann.get("iscrowd", 0)
    if not (isinstance(crowd, int | float) and crowd in (0, 1)):
        raise DatasetError(
            f"{record}: field 'iscrowd' must be 0 (an object) or 1 (a crowd region), got {crowd!r}"
            + (" (a string: COCO evaluation would read any non-empty string as 1)" if isinstance(crowd, str) else "")
        )


def check_keypoints(ann: dict, num_keypoints: int, record: str) -> None:
    """``keypoints`` (if given) is ``3 * num_keypoints`` finite numbers ``x, y, v``; ``num_keypoints`` (if given) an
    integer >= 0."""
    keypoints = ann.get("keypoints")
    if keypoints is not None:
        if not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints:
            count = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
            raise DatasetError(
                f"{record}: field 'keypoints' has {count} values, expected {3 * num_keypoints} "
                f"({num_keypoints} keypoints x 3)"
            )
        bad = [i for i, v in enumerate(keypoints) if not (is_number(v) and math.isfinite(v))]
        if bad:
            first = f"value {bad[0]} is {keypoints[bad[0]]!r}"
            raise DatasetError(f"{record}: field 'keypoints' must hold finite numbers (x, y, v); {first}")
    if "num_keypoints" in ann:
        count = integer(ann, "num_keypoints", record)
        if count < 0:
            raise DatasetError(f"{record}: field 'num_keypoints' must be >= 0, got {count}")


def box_skip_reason(bbox: object, height: int, width: int, record: str) -> str | None:
    """Why a box cannot be trained on (it is then skipped and counted, in training and scoring alike), or None.

    Raises:
        DatasetError: ``bbox`` is not a list of four numbers ``[x, y, w, h]``.
    """
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        raise DatasetError(f"{record}: field 'bbox' must be four numbers [x, y, w, h], got {str(bbox)[:80]}")
    x, y, w, h = bbox
    corners = (x, y, x + w, y + h)
    if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in corners):
        return "bbox not finite (NaN, infinite or beyond float32)"
    if w <= 0 or h <= 0:
        return "bbox with non-positive size"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "bbox entirely outside its image"
    return None


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
