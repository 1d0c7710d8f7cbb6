"""The raccoon photos shipped with pointdet: 200 real photos of one class, 160 train / 40 test.

From Dat Tran's raccoon dataset (https://github.com/datitran/raccoon_dataset, MIT licence, copied verbatim into
``raccoon_data/LICENSE``), converted from its VOC files to COCO JSON and shrunk to a long side of at most 512 px
by ``make_shipped_copy``. ``data.dataset=raccoon`` trains on it with no paths to give.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent / "raccoon_data"
"""The shipped folder: ``images/``, ``annotations/instances_{train,test}.json``, ``LICENSE``, ``README.txt``."""

MAX_SIDE = 512
SPLITS = ("train", "test")


@dataclass(frozen=True)
class RaccoonFiles:
    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path


def raccoon_files(root: Path = ROOT) -> RaccoonFiles:
    """The COCO files of the shipped photos: train on ``train``, validate on ``test``.

    Raises:
        FileNotFoundError: the folder is missing (an install without pointdet's package data).
    """
    files = RaccoonFiles(
        root / "annotations" / "instances_train.json",
        root / "images",
        root / "annotations" / "instances_test.json",
        root / "images",
    )
    missing = [str(path) for path in (files.train_json, files.val_json, files.train_images) if not path.exists()]
    if missing:
        raise FileNotFoundError(f"the shipped raccoon photos are missing ({', '.join(missing)}): reinstall pointdet")
    return files


def make_shipped_copy(source: str | Path, dest: str | Path, max_side: int = MAX_SIDE, quality: int = 85) -> None:
    """Write ``dest`` from the full-size COCO conversion ``source`` (``images/``, ``annotations/instances_*.json``,
    ``UPSTREAM_LICENSE``): how ``ROOT`` was made.

    Photos with a long side over ``max_side`` are resized (Lanczos) to it and saved as JPEG ``quality``; the
    others are copied byte for byte. Boxes, areas and sizes are scaled by each photo's own x and y factors
    (new width / old width, new height / old height).
    """
    source, dest = Path(source), Path(dest)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "annotations").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "UPSTREAM_LICENSE", dest / "LICENSE")
    for split in SPLITS:
        document = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
        factors = {}
        for image in document["images"]:
            name, width, height = image["file_name"], image["width"], image["height"]
            scale = max_side / max(width, height)
            if scale >= 1:
                shutil.copyfile(source / "images" / name, dest / "images" / name)
                factors[image["id"]] = (1.0, 1.0)
                continue
            new_width, new_height = round(width * scale), round(height * scale)
            with Image.open(source / "images" / name) as photo:
                photo.resize((new_width, new_height), Image.Resampling.LANCZOS).save(
                    dest / "images" / name, quality=quality, optimize=True
                )
            factors[image["id"]] = (new_width / width, new_height / height)
            image["width"], image["height"] = new_width, new_height
        for annotation in document["annotations"]:
            sx, sy = factors[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            annotation["bbox"] = [round(x * sx, 2), round(y * sy, 2), round(w * sx, 2), round(h * sy, 2)]
            annotation["area"] = round(annotation["bbox"][2] * annotation["bbox"][3], 2)
        document["info"] = {
            **document.get("info", {}),
            "description": f"Raccoon dataset (datitran/raccoon_dataset), VOC xml converted to COCO, long side <= "
            f"{max_side} px",
        }
        text = json.dumps(document, separators=(",", ":"))
        (dest / "annotations" / f"instances_{split}.json").write_text(text + "\n")
