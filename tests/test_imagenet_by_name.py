"""``model.backbone_weights=imagenet`` for ResNets and DLA-34: the standard file from torch's cache. Tests never
download: they seed the cache with locally built files, and replace the download by a failure."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from pointdet.configs import PRESETS, CenterNetConfig, get_preset
from pointdet.models.backbones.weights import WeightsError, imagenet_url
from pointdet.models.build import build_model

MANIFESTS = Path(__file__).parent / "data" / "official_centernet"


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """An empty torch cache; any download attempt fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(f"no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_resnet_imagenet_weights_come_from_the_cached_torchvision_file(torch_cache):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, torch_cache / "resnet18-f37072fd.pth")  # torchvision's IMAGENET1K_V1 file name
    model = build_model(CenterNetConfig(backbone="resnet18", backbone_weights="imagenet"), 3)
    assert torch.equal(model.backbone.stem[0].weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_dla34_imagenet_weights_come_from_the_cached_official_file(torch_cache):
    tensors = json.loads((MANIFESTS / "dla34_det.json").read_text())["tensors"]
    state = {
        name.removeprefix("base."): torch.rand(shape) for name, shape in tensors.items() if name.startswith("base.")
    }
    torch.save(state, torch_cache / "dla34-ba72cf86.pth")
    model = build_model(CenterNetConfig(backbone="dla34", backbone_weights="imagenet"), 3)
    assert torch.equal(model.backbone.level5.root.conv.weight, state["level5.root.conv.weight"])


@pytest.mark.parametrize(("backbone", "file"), [("resnet50", "resnet50-0676ba61.pth"), ("dla34", "dla34-ba72cf86.pth")])
def test_offline_with_an_empty_cache_says_which_file_to_place_where(torch_cache, backbone, file):
    with pytest.raises(WeightsError) as error:
        build_model(CenterNetConfig(backbone=backbone, backbone_weights="imagenet"), 3)
    message = str(error.value)
    assert f"place {file} (from " in message and f"at {torch_cache / file}" in message
    assert "model.backbone_weights=null" in message


PAPER_IMAGENET_PRESETS = [
    "centernet_r18", "centernet_r50", "centernet_r101", "centernet_dla34", "centernet_dla34_2x",
    "centernet_pose_dla34", "centernet_pose_r18", "centernet_3d_dla34", "reppoints_r50_fpn", "reppoints_v2_r50_fpn",
    "reppoints_v2_r50_fpn_2x_ms", "lsnet_r50_fpn", "lsnet_r50_fpn_2x_ms", "lsnet_cpv_r50_fpn",
]  # fmt: skip


def test_paper_presets_start_from_imagenet_as_their_papers_and_the_others_from_scratch():
    """CenterNet ResNet / DLA-34, RepPoints and LSNet ResNet-50 start from ImageNet; the hourglass presets (their
    papers train from scratch) and those on generated or synthetic data do not (except the timm presets that are
    about fine-tuning ImageNet features)."""
    for name, preset in PRESETS.items():
        model = preset().model
        weights = getattr(model, "backbone_weights", None)  # the corner detectors' config has none: from scratch
        if name in PAPER_IMAGENET_PRESETS:
            assert weights == "imagenet", name
        elif "hourglass" in model.backbone or (
            name.endswith(("_shapes", "_synthetic")) and "timm" not in model.backbone
        ):
            assert weights is None, name


@pytest.mark.parametrize("name", PAPER_IMAGENET_PRESETS)
def test_offline_every_imagenet_preset_says_which_file_to_place_where(torch_cache, name):
    model = get_preset(name).model
    file = imagenet_url(model.backbone).rsplit("/", 1)[-1]
    with pytest.raises(WeightsError) as error:
        build_model(model, 3, num_joints=4 if model.task == "pose" else 0)
    assert f"place {file} (from " in str(error.value) and f"at {torch_cache / file}" in str(error.value)
