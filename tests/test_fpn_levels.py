"""``model.fpn_levels=p2-p6``: the one-stage FPN families (RepPoints v1 / v2, LSNet, the FCOS peer) on strides 4-64,
where a box of a few pixels lands on the stride-4 level instead of being squeezed onto P3."""

from __future__ import annotations

import pytest
import torch

from pointdet.configs import apply_overrides, get_preset
from pointdet.configs.schema import FCOSConfig, LSNetConfig, RepPointsConfig, RepPointsV2Config
from pointdet.errors import ConfigError
from pointdet.models.build import build_model
from pointdet.structures import Instances
from pointdet.targets.assigners import point_assign

FAMILIES = [RepPointsConfig, RepPointsV2Config, LSNetConfig, FCOSConfig]


def _batch() -> tuple[torch.Tensor, list[Instances]]:
    """Two 64 x 96 images; the second object of the first is 8 x 7 px (P2's size: 4 px x 2**1)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    instances = [
        Instances(torch.tensor([[10.0, 20.0, 60.0, 60.0], [60.0, 5.0, 68.0, 12.0]]), torch.tensor([1, 2]),
                  torch.zeros(2, 0, 3)),
        Instances(torch.tensor([[30.0, 30.0, 50.0, 44.0]]), torch.tensor([0]), torch.zeros(1, 0, 3)),
    ]  # fmt: skip
    return images, instances


@pytest.mark.parametrize("config_class", FAMILIES, ids=lambda c: c.__name__)
def test_p2_p6_trains_every_head_parameter_and_predicts(config_class):
    torch.manual_seed(0)
    model = build_model(
        config_class(backbone="resnet18", channels=32, fpn_levels="p2-p6"), 3, with_backbone_weights=False
    )
    assert [shape.stride for shape in model.neck.feature_shapes] == [4, 8, 16, 32, 64]
    images, instances = _batch()
    losses = model.loss(images, instances)
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    untouched = [name for name, p in model.head.named_parameters() if p.requires_grad and p.grad is None]
    assert not untouched, untouched
    model.eval()
    with torch.no_grad():
        detections = model.predict(images)
    assert len(detections) == 2
    for found in detections:
        assert found.boxes.shape[1] == 4 and len(found.boxes) == len(found.scores) == len(found.labels)


def test_a_box_of_a_few_pixels_takes_a_stride_4_point_on_p2_p6_and_a_stride_8_one_on_p3_p7():
    gt = torch.tensor([[60.0, 5.0, 68.0, 12.0]])  # 8 x 7 px: level trunc(log2(~1.9)) = 0, clamped to the finest

    def assigned_stride(strides: list[int]) -> int:
        points, point_strides = [], []
        for stride in strides:
            ys, xs = torch.meshgrid(torch.arange(0, 128, stride), torch.arange(0, 160, stride), indexing="ij")
            points.append(torch.stack([xs.flatten(), ys.flatten()], 1).float())
            point_strides.append(torch.full((xs.numel(),), float(stride)))
        point_strides = torch.cat(point_strides)
        assignment = point_assign(torch.cat(points), point_strides, gt)
        (positive,) = (assignment == 0).nonzero(as_tuple=True)
        return int(point_strides[positive].item())

    assert assigned_stride([4, 8, 16, 32, 64]) == 4
    assert assigned_stride([8, 16, 32, 64, 128]) == 8


def test_p3_p7_stays_the_default_and_cpm_rcnn_keeps_p2_p6():
    assert RepPointsV2Config().fpn_levels == "p3-p7"
    assert get_preset("reppoints_v2_effl0_raccoon").model.fpn_levels == "p3-p7"
    assert get_preset("cpm_rcnn_shapes").model.fpn_levels == "p2-p6"
    with pytest.raises(ConfigError, match=r"model.fpn_levels: 'p3-p7' is not one of \['p2-p6'\]"):
        apply_overrides(get_preset("cpm_rcnn_shapes"), ["model.fpn_levels=p3-p7"])
    with pytest.raises(ConfigError, match=r"model.fpn_levels: 'p4-p8' is not one of"):
        apply_overrides(get_preset("reppoints_v2_effl0_raccoon"), ["model.fpn_levels=p4-p8"])
