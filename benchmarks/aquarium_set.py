"""Build the Aquarium set of docs/real_photos.md: Roboflow's "Aquarium Combined" (raw-1024 export, CC BY 4.0,
Brad Dwyer / Roboflow) from its YOLO labels to COCO JSON, photos downscaled to a long side of 512 pixels.

    git clone https://github.com/sumit2011/underwater-object-detection   # the copy used: eee4be3
    python benchmarks/aquarium_set.py underwater-object-detection/dataset/aquarium_pretrain --out aquarium

Writes ``aquarium/images/<photo>.jpg`` and ``aquarium/instances_{train,val,test}.json`` (the export's own splits;
category ids 1-7 in the export's order; image ids in file-name order; zero-size boxes dropped, empty photos kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

CLASSES = ("fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray")
SPLITS = {"train": "train", "val": "valid", "test": "test"}
LONG_SIDE = 512


def yolo_boxes(label_file: Path, width: int, height: int) -> list[tuple[int, list[float]]]:
    """(class index, [x, y, w, h] in pixels of a ``width x height`` photo) per line; zero-size boxes dropped."""
    boxes = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 5:
            raise ValueError(f"{label_file}:{number}: expected 'class cx cy w h', got {line!r}")
        index, cx, cy, w, h = int(fields[0]), *map(float, fields[1:])
        if not 0 <= index < len(CLASSES):
            raise ValueError(f"{label_file}:{number}: class {index} is not one of 0-{len(CLASSES) - 1}")
        x0, y0 = max(cx - w / 2, 0.0) * width, max(cy - h / 2, 0.0) * height
        x1, y1 = min(cx + w / 2, 1.0) * width, min(cy + h / 2, 1.0) * height
        if x1 > x0 and y1 > y0:
            boxes.append((index, [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]))
    return boxes


def convert_split(export: Path, split: str, images_out: Path) -> dict:
    """One split as a COCO dict; its photos written, downscaled, into ``images_out``."""
    folder = export / SPLITS[split]
    images, annotations = [], []
    for image_id, photo in enumerate(sorted((folder / "images").glob("*.jpg")), start=1):
        with Image.open(photo) as original:
            scale = LONG_SIDE / max(original.size)
            size = (round(original.width * scale), round(original.height * scale))
            original.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(images_out / photo.name, quality=95)
        images.append({"id": image_id, "file_name": photo.name, "width": size[0], "height": size[1]})
        for index, box in yolo_boxes(folder / "labels" / f"{photo.stem}.txt", *size):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": index + 1,
                    "bbox": box,
                    "area": round(box[2] * box[3], 2),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="the export's folder, holding train/, valid/ and test/")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    images_out = args.out / "images"
    images_out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        coco = convert_split(args.export, split, images_out)
        (args.out / f"instances_{split}.json").write_text(json.dumps(coco))
        counts = {name: 0 for name in CLASSES}
        for annotation in coco["annotations"]:
            counts[CLASSES[annotation["category_id"] - 1]] += 1
        print(f"{split}: {len(coco['images'])} photos, " + ", ".join(f"{n} {name}" for name, n in counts.items()))


if __name__ == "__main__":
    main()
