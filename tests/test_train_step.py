"""The training step runs network and loss together under autocast: one bf16 CPU step per method family."""

from __future__ import annotations

import pytest
import torch

from pointdet.configs import CenterNetConfig, CornerConfig, RepPointsConfig
from pointdet.engine.train_step import TrainStep
from pointdet.models.build import build_model
from pointdet.structures import Instances

FAMILIES = {
    "centernet": (CenterNetConfig(backbone="resnet18"), 0),
    "centernet_pose": (CenterNetConfig(backbone="resnet18", task="pose"), 2),
    "centripetalnet_masks": (CornerConfig(backbone="hourglass_small", mask_head=True), 0),
    "cornernet": (CornerConfig(method="cornernet", backbone="hourglass_small"), 0),
    "reppoints": (RepPointsConfig(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False), 0),
}
# Images 64 px square, except for FPN models: there 64 px makes P6 and P7 1x1 maps, and oneDNN's bf16 weight
# gradient of a stride-2, padding-1 3x3 conv over a 1x1 input is sometimes non-finite (about 1 call in 500 on
# torch 2.14.1, AVX512; fine with mkldnn disabled or in float32). 160 px keeps every level at 2x2 or more.
IMAGE_SIZE = {"reppoints": 160}


def _instances(joints: int) -> list[Instances]:
    boxes = torch.tensor([[8.0, 10.0, 40.0, 44.0], [30.0, 6.0, 60.0, 30.0]])
    keypoints = torch.tensor([[[12.0, 12.0, 2.0], [36.0, 40.0, 2.0]], [[34.0, 8.0, 2.0], [55.0, 28.0, 2.0]]])
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 10:44, 8:40] = masks[1, 6:30, 30:60] = 1
    one = Instances(boxes, torch.tensor([0, 1]), keypoints[:, :joints], masks=masks)
    return [one, one[1:]]


@pytest.mark.parametrize("family", FAMILIES)
def test_one_bf16_autocast_step_on_the_cpu(family):
    torch.manual_seed(0)
    config, joints = FAMILIES[family]
    model = build_model(config, num_classes=2, num_joints=joints, flip_pairs=[(0, 1)] if joints else [])
    step = TrainStep(model, torch.bfloat16)
    size = IMAGE_SIZE.get(family, 64)
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    losses = step(images, _instances(joints))
    assert all(value.dtype == torch.float32 for value in losses.values()), losses  # losses in full precision
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
    reference = TrainStep(model, None)(images, _instances(joints))
    assert set(reference) == set(losses)


def test_roi_boxes_stay_float32_under_autocast():
    """The mask head pools in float32: bf16 would round RoI coordinates by several pixels at these sizes."""
    torch.manual_seed(0)
    model = build_model(CornerConfig(backbone="hourglass_small", mask_head=True), num_classes=2)
    features = [torch.randn(1, 64, 256, 256)]
    boxes = [torch.tensor([[513.0, 257.0, 1021.0, 769.0]])]
    with torch.no_grad():
        plain = model.roi_heads(features, boxes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.roi_heads(features, boxes)
    torch.testing.assert_close(mixed.float(), plain, atol=0.05, rtol=0.05)


def test_cosine_schedule_after_the_warm_up():
    from dataclasses import replace

    from pointdet.configs import get_preset
    from pointdet.engine.trainer import learning_rate

    config = get_preset("centernet_dla34_shapes")
    optim = replace(config.optim, lr=1e-3, base_batch=8, batch_size=8, epochs=10, schedule="cosine", warmup_iters=100)
    config = replace(config, optim=optim)
    assert learning_rate(config, 0, 100) == pytest.approx(1e-4)  # warm-up from 0.1 x lr
    assert learning_rate(config, 100, 100) == pytest.approx(1e-3)  # warm-up done, cosine at its top
    assert learning_rate(config, 100 + 450, 100) == pytest.approx(5e-4)  # half-way through the 900 cosine steps
    assert learning_rate(config, 1000, 100) == pytest.approx(0.0, abs=1e-12)


def test_sgd_recipe_warm_up_and_frozen_parameters():
    from dataclasses import replace

    from pointdet.configs import get_preset
    from pointdet.engine.trainer import build_optimizer, learning_rate

    config = get_preset("reppoints_r50_fpn")  # SGD 0.01 at batch 16, 500 warm-up steps from 0.001 x lr
    config = replace(config, optim=replace(config.optim, batch_size=16))
    assert learning_rate(config, 0, 1000) == pytest.approx(1e-5)
    assert learning_rate(config, 250, 1000) == pytest.approx(0.01 * (0.001 + 0.999 * 0.5))
    assert learning_rate(config, 500, 1000) == pytest.approx(0.01)
    assert learning_rate(config, 8 * 1000, 1000) == pytest.approx(1e-3)  # after the drop at epoch 8
    assert learning_rate(config, 11 * 1000, 1000) == pytest.approx(1e-4)
    model = build_model(replace(config.model, backbone="resnet18", channels=64), num_classes=2)
    optimizer = build_optimizer(model, config.optim)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["weight_decay"] == 1e-4
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    frozen = [p for p in model.backbone.stem.parameters()] + [p for p in model.backbone.layer1.parameters()]
    assert frozen and not any(id(p) in optimized for p in frozen)  # stem + stage 1 frozen by the recipe
    assert all(id(p) in optimized for p in model.head.parameters())
