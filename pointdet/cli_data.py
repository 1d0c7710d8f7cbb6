"""Data-set commands of the command line: ``pointdet voc2coco`` and ``pointdet split``.

``voc2coco`` turns Pascal VOC image sets into COCO files that ``data.train_json`` / ``data.val_json`` take;
``split`` carves a validation split (and a test split, or a subset of classes) out of one COCO file, so that a recipe
is tuned on photos it is not finally scored on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SECTIONS = ("images", "annotations", "categories")


def _write(out: Path, datasets: dict[str, dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, dataset in datasets.items():
        path = out / f"instances_{name}.json"
        path.write_text(json.dumps(dataset))
        classes = ", ".join(category["name"] for category in dataset["categories"])
        print(f"wrote {path}: {len(dataset['images'])} images, {len(dataset['annotations'])} objects ({classes})")


def cmd_voc2coco(args: argparse.Namespace) -> None:
    from pointdet.data.voc import voc_to_coco

    classes = args.classes.split(",") if args.classes else None
    datasets, left_out = voc_to_coco(args.root, args.sets.split(","), classes)
    for line in left_out:
        print(f"voc2coco: left out {line}", file=sys.stderr)
    _write(Path(args.out), datasets)
    print(f"images: data.train_images={Path(args.root) / 'JPEGImages'} (and the same for data.val_images)")


def _fractions(text: str) -> dict[str, float]:
    """``train=0.6,val=0.2,test=0.2`` -> ordered ``{name: fraction}``."""
    parts = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            parts[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=FRACTION (e.g. train=0.8)") from None
    return parts


def cmd_split(args: argparse.Namespace) -> None:
    from pointdet.data.splits import SplitError, split_coco

    try:
        dataset = json.loads(Path(args.json).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SplitError(f"{args.json}: cannot be read as JSON ({error})") from None
    if not isinstance(dataset, dict) or not all(isinstance(dataset.get(key), list) for key in SECTIONS):
        raise SplitError(f"{args.json}: not a COCO file (needs lists {', '.join(SECTIONS)})")
    classes = args.classes.split(",") if args.classes else None
    _write(Path(args.out), split_coco(dataset, args.parts, args.seed, classes))


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """``voc2coco`` and ``split`` on the command line's sub-parsers."""
    voc = sub.add_parser("voc2coco", help="Pascal VOC image sets -> COCO files (instances_<set>.json)")
    voc.add_argument("root", help="VOC folder with Annotations/, ImageSets/Main/ and JPEGImages/")
    voc.add_argument("--sets", default="train,val,test", help="image sets to convert (default: train,val,test)")
    voc.add_argument("--classes", default=None, help="class names in id order (default: every name found, sorted)")
    voc.add_argument("--out", required=True, help="folder for the COCO files")
    voc.set_defaults(func=cmd_voc2coco)

    split = sub.add_parser("split", help="carve train / val (/ test) splits or a class subset out of one COCO file")
    split.add_argument("json", help="COCO annotation file")
    split.add_argument(
        "--parts",
        type=_fractions,
        default={"train": 0.8, "val": 0.2},
        help="NAME=FRACTION,... summing to 1 (default: train=0.8,val=0.2)",
    )
    split.add_argument("--classes", default=None, help="keep only these categories, e.g. person,dog (default: all)")
    split.add_argument("--seed", type=int, default=0, help="seed of the image shuffle (default: 0)")
    split.add_argument("--out", required=True, help="folder for instances_<NAME>.json")
    split.set_defaults(func=cmd_split)
