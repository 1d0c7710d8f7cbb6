"""The blocks where pointdet's CenterNet networks differed from the official ones compute what the official code
computes (tests/official_reference.py states it), and checkpoints written before the change still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pointdet.configs import CONFIG_VERSION, CenterNetConfig, RepPointsConfig
from pointdet.engine.checkpoint import model_state
from pointdet.models.backbones import DLA34
from pointdet.models.backbones.dla import OFFICIAL_UNUSED_PREFIXES
from pointdet.models.backbones.weights import WeightsError
from pointdet.models.build import build_model
from pointdet.ops.dcn import ModulatedDeformConv2d
from tests.official_reference import dcnv2_reference

MANIFESTS = Path(__file__).parent / "data" / "official_centernet"
PROJECTION_TENSORS = ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked")


@pytest.mark.parametrize("implementation", ["torchvision", "sampled"])
def test_dcn_layer_computes_dcnv2_of_the_official_conv_offset_mask(implementation):
    """pointdet's ``offset_mask`` conv holds DCNv2's ``conv_offset_mask`` unchanged: its first 2k channels are the
    offsets (cat(o1, o2), (dy, dx) per kernel point) and the last k the mask logits (m)."""
    generator = torch.Generator().manual_seed(0)
    layer = ModulatedDeformConv2d(3, 4, implementation=implementation).double()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        layer.offset_mask.weight.mul_(0.7)  # offsets of a few pixels: samples fall between pixels and outside
    x = torch.randn(2, 3, 6, 7, generator=generator, dtype=torch.float64)
    offset_mask = layer.offset_mask(x)
    assert offset_mask[:, :18].abs().max() > 2  # some samples leave the map
    expected = dcnv2_reference(x, offset_mask, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


def test_dla_outer_projection_of_levels_3_and_4_never_reaches_the_output():
    """The official level-3/4 trees also project their input in the outer node and hand it to the first sub-tree
    as ``residual``, which the sub-tree ignores: any residual gives the same output, so pointdet holds no such
    projection and ``pointdet convert`` drops its weights."""
    dla = DLA34().eval()
    for level in (dla.level3, dla.level4):
        assert level.project is None and level.tree1.project is not None
        x = torch.randn(1, level.tree1.tree1.conv1.in_channels, 16, 16)
        channels = level.tree1.tree1.conv1.out_channels
        with torch.no_grad():
            outputs = [level.tree1(x, torch.randn(1, channels, 8, 8)) for _ in range(2)]
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize(("backbone", "dcns"), [("dla34", 16), ("resnet18", 3)])
def test_checkpoints_before_version_3_load_with_zero_neck_dcn_biases(backbone, dcns):
    model = build_model(CenterNetConfig(backbone=backbone), 3)
    today = model.state_dict()
    biases = [
        name
        for name in today
        if name.startswith("neck.")
        and name.endswith(".bias")
        and name.removesuffix("bias") + "offset_mask.weight" in today
    ]
    assert len(biases) == dcns
    old = {name: tensor for name, tensor in today.items() if name not in biases}
    upgraded = model_state({"model": old, "config_version": 2})
    assert set(upgraded) == set(today)
    for name in biases:
        assert torch.equal(upgraded[name], torch.zeros_like(today[name])), name
    assert model_state({"model": old, "config_version": CONFIG_VERSION}).keys() == old.keys()


def test_backbone_dcns_without_bias_are_left_alone_by_the_upgrade():
    """RepPoints' ResNet-DCN backbone convs have no bias (mmdetection's), in every version."""
    model = build_model(RepPointsConfig(backbone="resnet18", backbone_dcn=True), 3, with_backbone_weights=False)
    state = model.state_dict()
    assert any(".conv2.offset_mask.weight" in name for name in state)
    assert model_state({"model": state, "config_version": 1}).keys() == state.keys()


def _official_dla34_imagenet_file(path, with_counters: bool, extra: dict | None = None) -> dict[str, torch.Tensor]:
    """The official ``dla34-ba72cf86.pth`` layout (the ``base.`` tensors of the DLA-34 CenterNet manifest, its
    ImageNet classifier included), random values."""
    tensors = json.loads((MANIFESTS / "dla34_det.json").read_text())["tensors"]
    generator = torch.Generator().manual_seed(0)
    state = {
        name.removeprefix("base."): torch.randn(shape, generator=generator)
        for name, shape in tensors.items()
        if name.startswith("base.") and (with_counters or not name.endswith("num_batches_tracked"))
    }
    state.update(extra or {})
    torch.save(state, path)
    return state


@pytest.mark.parametrize("with_counters", [True, False])
def test_official_dla34_imagenet_weights_load_strictly(tmp_path, with_counters):
    state = _official_dla34_imagenet_file(tmp_path / "dla34.pth", with_counters)
    dla = DLA34(weights=tmp_path / "dla34.pth")
    own = dla.state_dict()
    unused = {name for name in state if name.startswith(OFFICIAL_UNUSED_PREFIXES)}
    projections = [t for t in PROJECTION_TENSORS if with_counters or not t.endswith("num_batches_tracked")]
    assert unused == {"fc.weight", "fc.bias"} | {f"level{i}.project.{t}" for i in (3, 4) for t in projections}
    for name, tensor in state.items():
        if name not in unused:
            assert torch.equal(own[name], tensor.to(own[name].dtype)), name


def test_a_dla34_file_with_foreign_tensors_is_refused(tmp_path):
    _official_dla34_imagenet_file(tmp_path / "dla34.pth", True, extra={"level2.extra.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"level2\.extra\.weight"):
        DLA34(weights=tmp_path / "dla34.pth")
