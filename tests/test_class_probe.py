"""benchmarks/class_probe.py: the linear probe separates separable classes and not shuffled ones, finds each family's
class output layer, and reads one feature vector per object of a real COCO file through a trained checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointdet.api import load
from pointdet.configs.schema import CenterNetConfig, FCOSConfig, RepPointsConfig, RepPointsV2Config
from pointdet.data.coco import CocoDataset
from pointdet.models.build import build_model
from tests.helpers import untrained_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "class_probe.py"
sys.path.insert(0, str(SCRIPT.parent))
import class_probe  # noqa: E402


def blobs(counts: list[int], dim: int = 8, spread: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around well-apart centres, ``counts[c]`` points of class c, offset and scaled unevenly per
    dimension (the probe standardises)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(counts), dim) * 3
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return x * torch.linspace(0.1, 50, dim) + 7, labels


def test_probe_separates_separable_classes_despite_imbalance():
    train_x, train_y = blobs([200, 20, 10])
    val_x, val_y = blobs([50, 10, 10], seed=1)
    probe = class_probe.fit_probe(train_x, train_y, 3)
    assert class_probe.recalls(probe(val_x).argmax(1), val_y, 3) == [1.0, 1.0, 1.0]


def test_probe_is_near_chance_on_shuffled_labels():
    train_x, train_y = blobs([100, 100, 100, 100])
    val_x, val_y = blobs([100, 100, 100, 100], seed=1)
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    probe = class_probe.fit_probe(train_x, shuffled, 4)
    balanced = sum(class_probe.recalls(probe(val_x).argmax(1), val_y, 4)) / 4
    assert balanced < 0.45  # chance is 0.25; the true labels give 1.0


def test_recall_is_nan_for_an_absent_class():
    recall = class_probe.recalls(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)
    assert recall[:2] == [0.5, 1.0] and recall[2] != recall[2]


@pytest.mark.parametrize(
    "config",
    [
        RepPointsV2Config(backbone="resnet18", channels=64, cls_branch="dense"),
        RepPointsConfig(backbone="resnet18", channels=64),
        FCOSConfig(backbone="resnet18", channels=64),
        CenterNetConfig(backbone="resnet18"),
    ],
    ids=["reppoints_v2", "reppoints", "fcos", "centernet"],
)
def test_class_output_layer_gives_the_class_logits(config):
    model = build_model(config, 5, with_backbone_weights=False)
    assert class_probe.class_output_layer(model.head).out_channels == 5


def test_level_of_follows_fcos_ranges():
    boxes = torch.tensor([[0.0, 0.0, 64.0, 10.0], [0.0, 0.0, 65.0, 10.0], [0.0, 0.0, 10.0, 2000.0]])
    assert [class_probe.level_of(box, 8, 5) for box in boxes] == [0, 1, 4]
    assert class_probe.level_of(boxes[1], 4, 5) == 2  # a P2-P6 pyramid: 32, 64, 128, ...


def test_script_reads_one_vector_per_object(tiny_shapes, tmp_path):
    checkpoint = untrained_checkpoint(tiny_shapes, tmp_path / "untrained.pt")
    data = [
        "--train-json", str(tiny_shapes.train_json), "--train-images", str(tiny_shapes.train_images),
        "--val-json", str(tiny_shapes.val_json), "--val-images", str(tiny_shapes.val_images),
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(checkpoint), *data], check=True, capture_output=True, text=True
    )
    line = json.loads(done.stdout.strip().splitlines()[-1])
    counts = [
        len(json.loads(Path(f).read_text())["annotations"]) for f in (tiny_shapes.train_json, tiny_shapes.val_json)
    ]
    assert line["objects"] == counts and line["read"] == "head"
    assert 0.0 <= line["balanced_accuracy"] <= 1.0 and set(line["recall"]) == {"circle", "triangle", "square"}


@pytest.mark.parametrize("read", ["neck", "backbone:2"])
def test_neck_and_backbone_reads(tiny_shapes, tmp_path, read):
    predictor = load(untrained_checkpoint(tiny_shapes, tmp_path / "untrained.pt"), device="cpu", compile=False)
    model = predictor.model
    channels = (model.feature_shapes[0] if read == "neck" else model.backbone.feature_shapes[2]).channels
    coco = CocoDataset(tiny_shapes.val_json, tiny_shapes.val_images)
    features, labels = class_probe.centre_features(predictor, coco, read)
    assert features.shape == (coco.num_objects, channels) and len(labels) == coco.num_objects
    assert torch.isfinite(features).all()
