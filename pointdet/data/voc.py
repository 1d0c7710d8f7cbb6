"""Pascal VOC annotations (``Annotations/*.xml`` + ``ImageSets/Main/*.txt`` + ``JPEGImages/``) as COCO dictionaries,
so that VOC-format data sets train and evaluate through pointdet's COCO path.

Boxes: VOC's ``xmin, ymin, xmax, ymax`` are 1-based pixel indices, both ends inside the object; they become the
0-based corners ``(xmin - 1, ymin - 1, xmax, ymax)`` (detectron2's VOC reader does the same), then COCO's
``[x, y, w, h]``. Objects marked ``difficult`` become ``iscrowd`` regions: neither trained on nor counted as misses,
as VOC's own evaluation ignores them. Objects whose box is empty after that are left out and reported.

The XML is read with the standard library's parser, which refuses external entities and, with the expat bundled
since Python 3.7.1 (2.4.1 and later), bounds entity expansion.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from pointdet.errors import PointdetError


class VOCError(PointdetError):
    """A VOC file that cannot be read; the message names the file and the field."""


def _text(node: ET.Element, path: str, source: Path) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise VOCError(f"{source}: no <{path}>")
    return found.text.strip()


def _number(node: ET.Element, path: str, source: Path) -> float:
    text = _text(node, path, source)
    try:
        return float(text)
    except ValueError:
        raise VOCError(f"{source}: <{path}> is {text!r}, not a number") from None


def read_voc_file(path: Path) -> tuple[dict, list[dict]]:
    """One VOC annotation file -> its image record (``file_name``, ``width``, ``height``) and its objects
    (``name``, ``box`` as 0-based xyxy, ``difficult``).

    Raises:
        VOCError: the file is not XML, or a field is missing or not a number.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise VOCError(f"{path}: cannot read the XML ({error})") from None
    image = {
        "file_name": _text(root, "filename", path),
        "width": int(_number(root, "size/width", path)),
        "height": int(_number(root, "size/height", path)),
    }
    objects = []
    for number, item in enumerate(root.findall("object")):
        where = Path(f"{path} (object {number})")
        box = [_number(item, f"bndbox/{key}", where) for key in ("xmin", "ymin", "xmax", "ymax")]
        difficult = item.find("difficult")
        objects.append(
            {
                "name": _text(item, "name", where),
                "box": [box[0] - 1, box[1] - 1, box[2], box[3]],
                "difficult": difficult is not None and (difficult.text or "0").strip() == "1",
            }
        )
    return image, objects


def voc_to_coco(
    root: str | Path, image_sets: Sequence[str], classes: Sequence[str] | None = None
) -> tuple[dict[str, dict], list[str]]:
    """COCO dictionaries of VOC image sets, with one category list for all of them.

    Args:
        root: the VOC folder holding ``Annotations``, ``ImageSets/Main`` and ``JPEGImages``.
        image_sets: names of ``ImageSets/Main/<name>.txt`` files.
        classes: category names in id order (ids 1..C); None = every name found in these sets, sorted.

    Returns:
        ``{image set: COCO dict}`` (``file_name`` relative to ``root/JPEGImages``) and one line per object left out.

    Raises:
        VOCError: a missing list or annotation file, a malformed one, or an object of a class not in ``classes``.
    """
    root = Path(root)
    records: dict[str, list[tuple[dict, list[dict]]]] = {}
    for name in image_sets:
        listing = root / "ImageSets" / "Main" / f"{name}.txt"
        if not listing.is_file():
            raise VOCError(f"{listing}: no such image set")
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        records[name] = [read_voc_file(root / "Annotations" / f"{image_id}.xml") for image_id in ids]
    found = sorted({obj["name"] for pairs in records.values() for _, objects in pairs for obj in objects})
    names = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise VOCError(f"{root}: objects of classes {unknown} are not among the classes given ({names})")
    category_ids = {name: number for number, name in enumerate(names, start=1)}
    left_out: list[str] = []
    datasets = {}
    for name, pairs in records.items():
        images, annotations = [], []
        for image_id, (image, objects) in enumerate(pairs, start=1):
            images.append({"id": image_id, **image})
            for number, obj in enumerate(objects):
                x1, y1, x2, y2 = obj["box"]
                if x2 <= x1 or y2 <= y1:
                    left_out.append(f"{image['file_name']} object {number} ({obj['name']}): empty box {obj['box']}")
                    continue
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_ids[obj["name"]],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(obj["difficult"]),
                    }
                )
        categories = [{"id": number, "name": label} for label, number in category_ids.items()]
        datasets[name] = {"images": images, "annotations": annotations, "categories": categories}
    return datasets, left_out
