"""The ResNeXt and Res2Net backbones (LSNet's X-101-64x4d and R2-101 models) against torchvision's and timm's
networks, and the grouped DCNv2 of ResNeXt's "-DCN" stages (its sampler against torchvision's: tests/test_ops.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnext50_32x4d

from pointdet.models.backbones.res2net import Res2Net
from pointdet.models.backbones.resnet import ResNet
from pointdet.ops.dcn import ModulatedDeformConv2d

DCN_C3_C5 = (False, True, True, True)


def randomise_batch_norms(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


def test_a_grouped_dcn_starts_as_half_the_grouped_conv():
    layer = ModulatedDeformConv2d(8, 8, bias=False, groups=4)
    assert layer.weight.shape == (8, 2, 3, 3)
    x = torch.randn(1, 8, 7, 6)
    expected = 0.5 * nn.functional.conv2d(x, layer.weight, padding=1, groups=4)
    torch.testing.assert_close(layer(x), expected)


def test_resnext_is_torchvisions_with_its_names_and_values():
    """``ResNet(groups, width_per_group)`` builds torchvision's ResNeXt (here 50 32x4d, the 101 64x4d alike):
    torchvision's weights load by name and the maps equal its layers' outputs."""
    reference = resnext50_32x4d(weights=None).eval()
    randomise_batch_norms(reference, 0)
    model = ResNet(50, groups=32, width_per_group=4).eval()
    own = {name.replace("stem.0.", "conv1.").replace("stem.1.", "bn1."): name for name in model.state_dict()}
    model.load_state_dict({own[name]: tensor for name, tensor in reference.state_dict().items() if name in own})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = model(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        for layer, got in zip(
            (reference.layer1, reference.layer2, reference.layer3, reference.layer4), maps, strict=True
        ):
            y = layer(y)
            torch.testing.assert_close(got, y)
    deformable = ResNet(50, groups=32, width_per_group=4, dcn_stages=DCN_C3_C5)
    assert deformable.layer3[0].conv2.weight.shape == (512, 16, 3, 3)


def test_res2net_equals_timms_res2net50d_with_mmdetections_first_block():
    """mmdetection's Res2Net-v1d (pointdet's) is timm's ``res2net50d`` (deep stem, average-pool shortcuts) except that
    timm also average-pools the last split of layer1's first block, which does not stride (mmdetection pools only
    in a block that strides); with that pool removed the two compute the same maps from the same weights."""
    timm = pytest.importorskip("timm")
    reference = timm.create_model("res2net50d", pretrained=False).eval()
    randomise_batch_norms(reference, 1)
    reference.layer1[0].pool = None
    model = Res2Net(50).eval()
    stem = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.", "conv1.4.": "stem.4.",
            "conv1.6.": "stem.6.", "bn1.": "stem.7."}  # fmt: skip
    state = {}
    for name, tensor in reference.state_dict().items():
        prefix = next((p for p in stem if name.startswith(p)), None)
        state[stem[prefix] + name.removeprefix(prefix) if prefix else name] = tensor
    model.load_state_dict({name: state[name] for name in model.state_dict()})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = reference.maxpool(reference.act1(reference.bn1(reference.conv1(x))))
        for layer, got in zip(
            (reference.layer1, reference.layer2, reference.layer3, reference.layer4), model(x), strict=True
        ):
            y = layer(y)
            torch.testing.assert_close(got, y)
    assert [shape.channels for shape in model.feature_shapes] == [256, 512, 1024, 2048]


def test_res2net_dcn_stages_frozen_stages_and_weights_by_name():
    model = Res2Net(50, dcn_stages=DCN_C3_C5, frozen_stages=1, norm="frozen_bn")
    assert isinstance(model.layer2[0].convs[0], ModulatedDeformConv2d)
    assert isinstance(model.layer1[0].convs[0], nn.Conv2d)
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    with pytest.raises(ValueError, match="torchvision has no Res2Net"):
        Res2Net(50, weights="imagenet")
