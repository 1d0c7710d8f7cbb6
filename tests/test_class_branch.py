"""RepPoints' class branch: the official point-guided one (``cls_branch=points``) and the dense one (``dense``),
in the v1 and v2 heads, their configs and an overfit of v2 with the dense branch."""

from __future__ import annotations

import pytest
import torch

from pointdet.configs import ConfigError, RepPointsV2Config, apply_overrides, get_preset
from pointdet.models.build import build_model
from pointdet.models.heads import RepPointsHead
from pointdet.structures import Instances

from .helpers import overfit_four_shapes, p3_p7_features


def _dense_logits(head: RepPointsHead, features: list[torch.Tensor]) -> torch.Tensor:
    """(B, P, C) the dense branch computed by hand: the class tower, then the 3x3 output conv, level after level."""
    maps = [head.cls_out(head.cls_tower(x)) for x in features]
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def test_dense_branch_is_a_deeper_tower_and_a_3x3_output_and_points_keeps_the_official_parameters():
    official = RepPointsHead(32, 3, channels=32)
    dense = RepPointsHead(32, 3, channels=32, cls_branch="dense")
    official_keys, dense_keys = set(official.state_dict()), set(dense.state_dict())
    assert {"cls_dcn_weight", "cls_out.weight"} <= official_keys and "cls_dcn_weight" not in dense_keys
    convs = [m for m in dense.cls_tower if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in dense.cls_tower if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == len(norms) == 4 and len([m for m in official.reg_tower if isinstance(m, torch.nn.Conv2d)]) == 3
    assert dense.cls_out.weight.shape == (3, 32, 3, 3) and official.cls_out.weight.shape == (3, 32, 1, 1)
    assert torch.allclose(dense.cls_out.bias, official.cls_out.bias)  # the 0.01 prior in both
    # The regression side is untouched: the same keys, the same shapes.
    assert {k: v.shape for k, v in dense.state_dict().items() if not k.startswith("cls")} == {
        k: v.shape for k, v in official.state_dict().items() if not k.startswith("cls")
    }
    with pytest.raises(ValueError, match="cls_branch"):
        RepPointsHead(32, 3, channels=32, cls_branch="dcn")
    with pytest.raises(ValueError, match="cls_norm"):
        RepPointsHead(32, 3, channels=32, cls_branch="dense", cls_norm="gn")


def test_dense_logits_read_the_location_alone_and_the_point_logits_follow_the_points():
    torch.manual_seed(0)
    features = p3_p7_features(2, 32)
    for cls_branch in ("points", "dense"):
        head = RepPointsHead(32, 3, channels=32, cls_branch=cls_branch)
        before = head(features).scores
        with torch.no_grad():  # move every init point: the point-guided DCN samples elsewhere
            head.init_out.bias.add_(1.5)
        after = head(features).scores
        if cls_branch == "dense":
            torch.testing.assert_close(before, _dense_logits(head, features))
            torch.testing.assert_close(after, before)
        else:
            assert not torch.allclose(after, before)


def test_v2_dense_branch_skips_the_verification_fusion_and_trains_every_parameter():
    config = RepPointsV2Config(backbone="resnet18", channels=32, cls_branch="dense")
    head = build_model(config, num_classes=3, with_backbone_weights=False).head
    features = p3_p7_features(2, 32)
    outputs = head(features)
    # the foreground embedding and the corner guide reach the points and the refine stage, not the classes
    torch.testing.assert_close(outputs.scores, _dense_logits(head.points, features))
    instances = [
        Instances(torch.tensor([[10.0, 6, 42, 40], [50, 20, 90, 60]]), torch.tensor([0, 2]), torch.zeros(2, 0, 3)),
        Instances.empty(),
    ]
    losses = head.loss(outputs, instances)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_cls_branch_config_key_and_its_refusals():
    main_job = get_preset("reppoints_v2_effl0_raccoon")
    for name in ("reppoints_r50_fpn", "reppoints_v2_r50_fpn"):  # the official branch
        assert get_preset(name).model.cls_branch == "points", name
    for preset in (main_job, get_preset("reppoints_effl0_raccoon")):  # chosen on three validation splits
        assert preset.model.cls_branch == "dense", preset.name
    assert apply_overrides(main_job, ["model.cls_branch=points"]).model.cls_branch == "points"
    with pytest.raises(ConfigError, match="model.cls_branch"):
        apply_overrides(main_job, ["model.cls_branch=dcn"])
    with pytest.raises(ConfigError, match="model.cls_norm=gn"):
        apply_overrides(main_job, ["model.cls_branch=dense", "model.cls_norm=gn"])
    with pytest.raises(ConfigError, match="own class branch"):
        apply_overrides(get_preset("dense_reppoints_v2_shapes"), ["model.cls_branch=dense"])


@pytest.mark.slow  # 300 steps: about 1.5 minutes on an idle 2-core CPU
def test_reppoints_v2_with_the_dense_class_branch_overfits_four_shapes_images(tmp_path):
    config = RepPointsV2Config(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False, cls_branch="dense")
    history, metrics = overfit_four_shapes(config, tmp_path, steps=300)
    assert history[-1] < 0.2 * history[0], history[::10]
    assert metrics["AP"] >= 0.95, metrics  # three classes: the boxes and the classes right
