"""Linear probe: how well does a trained detector's feature map tell the classes apart at each object's centre?

    python benchmarks/class_probe.py RUN [RUN ...] --train-json T.json --train-images DIR \
        --val-json V.json --val-images DIR [--read head|neck|backbone:K]

For every object of both sets, the feature vector at its box centre (bilinear) is read from a trained model (a run
folder or checkpoint): ``head``, the input of the class output layer (what the classifier sees; RepPoints v1 / v2,
the FCOS peer, CenterNet), ``neck``, the maps the head reads, or ``backbone:K``, the backbone's K-th map. On a
pyramid the object's level is the FCOS one (longer side up to 8 strides of the first level, doubling per level);
a single map is read as it is. A class-balanced linear classifier (L2, LBFGS) is fit on the training objects and
scored on the val ones: the balanced accuracy and each class's recall say how much of the class is in the features,
whatever the head then makes of it. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
from datetime import date

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdet.api import Predictor, load
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset


def class_output_layer(head: nn.Module) -> nn.Module:
    """The layer that turns features into class logits: RepPoints v1 / v2 (``cls_out``), torchvision's FCOS head
    (``cls_logits``), CenterNet (the heatmap branch's last conv)."""
    for candidate in (getattr(head, "points", head), head):
        if hasattr(candidate, "cls_out"):
            return candidate.cls_out
    if hasattr(head, "heatmap"):
        return head.heatmap[-1]
    if hasattr(head, "head") and hasattr(head.head, "classification_head"):
        return head.head.classification_head.cls_logits
    raise ValueError(f"{type(head).__name__}: no known class output layer (RepPoints v1 / v2, FCOS, CenterNet)")


def feature_maps(model: nn.Module, images: Tensor, read: str) -> list[Tensor]:
    """(1, 3, H, W) uint8 -> the maps of a ``Detector`` that ``read`` names, each (1, D, H_l, W_l)."""
    x = model.preprocess(images)
    if read == "neck":
        return model.features(x)
    if read.startswith("backbone:"):
        return [model.backbone(x)[int(read.split(":")[1])]]
    maps: list[Tensor] = []
    hook = class_output_layer(model.head).register_forward_pre_hook(lambda _, inputs: maps.append(inputs[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return maps


def level_of(box: Tensor, first_stride: float, num_levels: int) -> int:
    """FCOS's level for a (4,) xyxy box: the longer side up to ``8 * first_stride``, doubling per level."""
    side, limit, level = float((box[2:] - box[:2]).max()), 8 * first_stride, 0
    while side > limit and level < num_levels - 1:
        limit, level = 2 * limit, level + 1
    return level


@torch.no_grad()
def centre_features(predictor: Predictor, coco: CocoDataset, read: str) -> tuple[Tensor, Tensor]:
    """(N, D) features at the N object centres of ``coco`` and their (N,) labels."""
    dataset = TransformedDataset(coco, predictor.transform)
    features, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        images = sample.image[None]
        maps = feature_maps(predictor.model, images, read)
        strides = [images.shape[-1] / fmap.shape[-1] for fmap in maps]
        for box, label in zip(sample.instances.boxes, sample.instances.labels, strict=True):
            level = level_of(box, strides[0], len(maps))  # 0 on a single map
            fmap = maps[level]
            centre = (box[:2] + box[2:]) / 2 / strides[level] - 0.5  # in cells
            size = fmap.new_tensor([fmap.shape[-1] - 1, fmap.shape[-2] - 1]).clamp(min=1)
            grid = (centre / size * 2 - 1).view(1, 1, 1, 2).to(fmap.dtype)
            features.append(F.grid_sample(fmap, grid, align_corners=True)[0, :, 0, 0])
            labels.append(int(label))
    return torch.stack(features), torch.tensor(labels)


def fit_probe(train_x: Tensor, train_y: Tensor, num_classes: int, l2: float = 1e-3, seed: int = 0) -> nn.Linear:
    """A class-balanced linear classifier on standardised (N, D) features (the standardisation folded in)."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    x = (train_x - mean) / std
    probe = nn.Linear(x.shape[1], num_classes)
    counts = torch.bincount(train_y, minlength=num_classes).clamp(min=1).float()
    weight = num_classes * (1 / counts) / (1 / counts).sum()
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=300)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x), train_y, weight=weight) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        probe.bias -= (probe.weight * (mean / std)).sum(1)
        probe.weight /= std
    return probe


def recalls(predicted: Tensor, truth: Tensor, num_classes: int) -> list[float]:
    """Per-class recall (NaN for a class absent from ``truth``)."""
    return [float((predicted[truth == c] == c).float().mean()) for c in range(num_classes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders or checkpoints")
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--train-images", required=True)
    parser.add_argument("--val-json", required=True)
    parser.add_argument("--val-images", required=True)
    parser.add_argument("--read", default="head", help="head, neck or backbone:K (default: head)")
    args = parser.parse_args()
    train = CocoDataset(args.train_json, args.train_images)
    val = CocoDataset(args.val_json, args.val_images)
    for run in args.runs:
        predictor = load(run, device="cpu", compile=False)
        train_x, train_y = centre_features(predictor, train, args.read)
        val_x, val_y = centre_features(predictor, val, args.read)
        probe = fit_probe(train_x, train_y, len(train.class_names))
        with torch.no_grad():
            per_class = recalls(probe(val_x).argmax(1), val_y, len(train.class_names))
        present = [r for r in per_class if r == r]
        print(json.dumps({
            "run": run, "read": args.read, "dim": train_x.shape[1], "objects": [len(train_y), len(val_y)],
            "balanced_accuracy": round(sum(present) / len(present), 3),
            "recall": {name: round(r, 2) for name, r in zip(train.class_names, per_class, strict=True)},
            "date": date.today().isoformat(),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
