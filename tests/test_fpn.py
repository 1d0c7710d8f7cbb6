"""FPN neck (METHODS.md §1.13, "FPN P3-P7"): shapes, extra levels, norm, initialisation, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pointdet.models.backbones.resnet import ResNet
from pointdet.models.necks import FPN
from pointdet.structures import FeatureShape

RESNET18_SHAPES = tuple(FeatureShape(f"c{level}", 64 * 2 ** (level - 2), 2**level) for level in range(2, 6))
RESNET50_SHAPES = tuple(FeatureShape(shape.name, 4 * shape.channels, shape.stride) for shape in RESNET18_SHAPES)


def _features(in_shapes, batch: int = 2, height: int = 64, width: int = 96, dtype=torch.float32):
    """Random backbone maps for an input of ``height`` x ``width`` (multiples of 32, as the detector pads)."""
    return [
        torch.randn(batch, shape.channels, height // shape.stride, width // shape.stride, dtype=dtype)
        for shape in in_shapes
    ]


def test_feature_shapes_match_resnet():
    assert ResNet(18).feature_shapes == RESNET18_SHAPES
    assert ResNet(50).feature_shapes == RESNET50_SHAPES


@pytest.mark.parametrize("in_shapes", [RESNET18_SHAPES, RESNET50_SHAPES], ids=["r18", "r50"])
@pytest.mark.parametrize("norm", ["none", "gn"])
def test_p3_p7_shapes_and_strides(in_shapes, norm):
    fpn = FPN(in_shapes, norm=norm)
    assert fpn.feature_shapes == tuple(FeatureShape(f"p{level}", 256, 2**level) for level in range(3, 8))
    outputs = fpn(_features(in_shapes, height=64, width=96))
    expected = [(2, 256, math.ceil(64 / shape.stride), math.ceil(96 / shape.stride)) for shape in fpn.feature_shapes]
    assert [tuple(o.shape) for o in outputs] == expected  # P3..P7: 8x12, 4x6, 2x3, 1x2, 1x1


def test_resnet18_fpn_at_odd_size_follows_the_backbone_maps():
    """The detector pads to size_divisor 32; an unpadded 61x83 input still runs (coarser maps are resized)."""
    backbone = ResNet(18)
    fpn = FPN(backbone.feature_shapes, out_channels=64)
    outputs = fpn(backbone(torch.randn(1, 3, 61, 83)))
    assert [o.shape[-2:] for o in outputs] == [(8, 11), (4, 6), (2, 3), (1, 2), (1, 1)]
    assert backbone.size_divisor == 32


def test_p6_is_conv_on_c5_and_p7_is_conv_on_p6_without_relu():
    torch.manual_seed(0)
    fpn = FPN(RESNET18_SHAPES, out_channels=32).double()
    features = _features(RESNET18_SHAPES, dtype=torch.float64)
    outputs = fpn(features)
    p6_conv, p7_conv = fpn.pyramid.extra_blocks.p6[0], fpn.pyramid.extra_blocks.p7[0]
    assert p6_conv.in_channels == 512  # C5's channels, not P5's
    p6 = F.conv2d(features[-1], p6_conv.weight, p6_conv.bias, stride=2, padding=1)
    torch.testing.assert_close(outputs[3], p6)
    p7 = F.conv2d(p6, p7_conv.weight, p7_conv.bias, stride=2, padding=1)
    torch.testing.assert_close(outputs[4], p7)
    assert (p6 < 0).any()  # so a ReLU before the P7 conv would have changed it
    assert not torch.allclose(outputs[4], F.conv2d(p6.relu(), p7_conv.weight, p7_conv.bias, stride=2, padding=1))


def test_gn_extra_levels_are_normalised_convs():
    torch.manual_seed(0)
    fpn = FPN(RESNET18_SHAPES, norm="gn").double()
    features = _features(RESNET18_SHAPES, dtype=torch.float64)
    outputs = fpn(features)
    p6_conv, p6_norm = fpn.pyramid.extra_blocks.p6
    p7_conv, p7_norm = fpn.pyramid.extra_blocks.p7
    p6 = F.group_norm(F.conv2d(features[-1], p6_conv.weight, stride=2, padding=1), 32, p6_norm.weight, p6_norm.bias)
    p7 = F.group_norm(F.conv2d(p6, p7_conv.weight, stride=2, padding=1), 32, p7_norm.weight, p7_norm.bias)
    torch.testing.assert_close(outputs[3], p6)
    torch.testing.assert_close(outputs[4], p7)


def test_extra_from_p5_convolves_p5():
    fpn = FPN(RESNET18_SHAPES, out_channels=32, extra_from="p5")
    outputs = fpn(_features(RESNET18_SHAPES))
    p6_conv = fpn.pyramid.extra_blocks.p6[0]
    assert p6_conv.in_channels == 32
    torch.testing.assert_close(outputs[3], p6_conv(outputs[2]))


def test_p2_p6_max_pools_p5():
    fpn = FPN(RESNET50_SHAPES, out_channels=64, levels=(2, 6), extra_from="p5")
    assert [(shape.name, shape.stride) for shape in fpn.feature_shapes] == [(f"p{n}", 2**n) for n in range(2, 7)]
    assert [block[0].in_channels for block in fpn.pyramid.inner_blocks] == [256, 512, 1024, 2048]
    outputs = fpn(_features(RESNET50_SHAPES, height=96, width=64))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(24, 16), (12, 8), (6, 4), (3, 2), (2, 1)]
    torch.testing.assert_close(outputs[4], F.max_pool2d(outputs[3], kernel_size=1, stride=2))


def test_norm_and_initialisation():
    gn = FPN(RESNET50_SHAPES, norm="gn")
    norms = [m for m in gn.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 8 and all(m.num_groups == 32 for m in norms)  # 3 lateral + 3 output + P6 + P7
    assert all(m.bias is None for m in gn.modules() if isinstance(m, nn.Conv2d))
    plain = FPN(RESNET50_SHAPES)
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.modules())
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8
    for conv in convs:  # mmdetection's xavier_uniform, zero bias
        assert torch.count_nonzero(conv.bias) == 0
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert 0.9 * bound < conv.weight.abs().max() <= bound


@pytest.mark.parametrize("norm", ["none", "gn"])
def test_gradient_reaches_every_parameter(norm):
    fpn = FPN(RESNET18_SHAPES, out_channels=64, norm=norm)
    features = [f.requires_grad_() for f in _features(RESNET18_SHAPES)]
    sum((o * torch.randn_like(o)).sum() for o in fpn(features)).backward()
    for name, parameter in fpn.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert features[0].grad is None  # C2 is not used by P3-P7
    assert all(f.grad.abs().sum() > 0 for f in features[1:])


def test_invalid_configurations_raise():
    with pytest.raises(ValueError, match=r"unsupported FPN levels=\(2, 6\), extra_from='c5'"):
        FPN(RESNET18_SHAPES, levels=(2, 6))
    with pytest.raises(ValueError, match="unsupported FPN levels"):
        FPN(RESNET18_SHAPES, levels=(3, 5))
    with pytest.raises(ValueError, match="norm"):
        FPN(RESNET18_SHAPES, norm="bn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"strides \[4\]"):
        FPN(RESNET18_SHAPES[1:], levels=(2, 6), extra_from="p5")
    fpn = FPN(RESNET18_SHAPES[1:])  # a backbone that returns C3..C5 only
    assert len(fpn(_features(RESNET18_SHAPES[1:]))) == 5
    with pytest.raises(ValueError, match="expects 3 backbone maps, got 4"):
        fpn(_features(RESNET18_SHAPES))
