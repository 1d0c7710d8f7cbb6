"""``model.cls_weight``: the class loss of RepPoints v1 / v2, Dense RepPoints v2 and the FCOS peer scaled by it, every
other term untouched, and the official weight 1 by default (its range: tests/test_configs.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pointdet.configs import (
    DenseRepPointsV2Config,
    RepPointsConfig,
    RepPointsV2Config,
    apply_overrides,
    get_preset,
)
from pointdet.configs.schema import FCOSConfig
from pointdet.models.build import build_model
from pointdet.structures import Instances

SMALL = {"backbone": "resnet18", "channels": 32, "frozen_stages": 0, "frozen_bn": False}
FAMILIES = {
    "reppoints": RepPointsConfig(**SMALL),
    "reppoints_v2": RepPointsV2Config(**SMALL),
    "dense_reppoints_v2": DenseRepPointsV2Config(
        **SMALL, num_points=81, num_score_groups=25, stacked_mask_convs=1, stacked_convs=1
    ),
    "fcos": FCOSConfig(**SMALL),
}


def _batch() -> tuple[torch.Tensor, list[Instances]]:
    """Two 96 x 128 images: three objects of two classes (with masks for Dense RepPoints v2) and an empty one."""
    torch.manual_seed(3)
    images = torch.randint(0, 256, (2, 3, 96, 128), dtype=torch.uint8)
    boxes = torch.tensor([[8.0, 10.0, 60.0, 70.0], [70.0, 20.0, 120.0, 60.0], [30.0, 50.0, 50.0, 90.0]])
    masks = torch.zeros(3, 96, 128, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y0:y1, x0:x1] = 1
    return images, [
        Instances(boxes, torch.tensor([0, 2, 2]), torch.zeros(3, 0, 3), masks),
        Instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 0, 3), masks[:0]),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_cls_weight_scales_the_class_loss_alone(family):
    images, instances = _batch()
    losses = {}
    for weight in (1.0, 2.5):
        torch.manual_seed(0)  # the same initial network for both weights
        model = build_model(replace(FAMILIES[family], cls_weight=weight), num_classes=3, with_backbone_weights=False)
        losses[weight] = model.loss(images, instances)
    assert set(losses[1.0]) == set(losses[2.5]) and losses[1.0]["loss_cls"] > 0
    torch.testing.assert_close(losses[2.5]["loss_cls"], 2.5 * losses[1.0]["loss_cls"])
    for name in set(losses[1.0]) - {"loss_cls"}:
        torch.testing.assert_close(losses[2.5][name], losses[1.0][name], msg=name)


def test_cls_weight_is_the_official_one_by_default_and_an_override():
    for config in FAMILIES.values():
        assert config.cls_weight == 1.0
    for preset in ("reppoints_v2_effl0_raccoon", "reppoints_effl0_raccoon", "fcos_effl0_raccoon"):
        assert apply_overrides(get_preset(preset), ["model.cls_weight=2"]).model.cls_weight == 2.0
