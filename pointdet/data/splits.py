"""Carve splits out of one COCO annotation file: a validation split to tune on beside the training split, and
optionally a test split scored once at the end; or a subset of its classes.

Images are shuffled with a seeded generator and cut in order; each image keeps all its annotations. With
``classes``, only those categories are kept (with their ids), only the images that hold at least one of their
objects, and only those objects: the other objects in those photos become unlabelled background, for every
detector alike.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pointdet.errors import PointdetError


class SplitError(PointdetError):
    """Split fractions or class names that do not fit the file; the message says which."""


def split_coco(
    dataset: dict, fractions: dict[str, float], seed: int = 0, classes: Sequence[str] | None = None
) -> dict[str, dict]:
    """``{name: COCO dict}``, one per entry of ``fractions`` (which sum to 1), the images shuffled by ``seed``.

    Raises:
        SplitError: fractions that are not positive or do not sum to 1, a split that would be empty, or a class
            name the file does not have.
    """
    if any(value <= 0 for value in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise SplitError(f"split fractions {fractions} must be positive and sum to 1")
    categories = dataset["categories"]
    if classes is not None:
        names = {category["name"] for category in categories}
        missing = [name for name in classes if name not in names]
        if missing:
            raise SplitError(f"classes {missing} are not in the file (it has {sorted(names)})")
        categories = [category for category in categories if category["name"] in set(classes)]
    kept_ids = {category["id"] for category in categories}
    annotations = [ann for ann in dataset["annotations"] if ann["category_id"] in kept_ids]
    with_objects = {ann["image_id"] for ann in annotations}
    images = [image for image in dataset["images"] if classes is None or image["id"] in with_objects]
    order = sorted(images, key=lambda image: image["id"])
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    for position, (name, fraction) in enumerate(fractions.items()):
        end = len(order) if position == len(fractions) - 1 else start + round(fraction * len(order))
        chosen = order[start:end]
        if not chosen:
            raise SplitError(f"split {name!r} ({fraction:g} of {len(order)} images) would be empty")
        ids = {image["id"] for image in chosen}
        splits[name] = {
            **{key: value for key, value in dataset.items() if key not in ("images", "annotations", "categories")},
            "images": sorted(chosen, key=lambda image: image["id"]),
            "annotations": [ann for ann in annotations if ann["image_id"] in ids],
            "categories": categories,
        }
        start = end
    return splits
