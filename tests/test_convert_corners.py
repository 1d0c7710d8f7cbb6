"""``pointdet convert --from centripetalnet | mmdet``: the corner detectors' official checkpoints, built from
manifests of the official state dicts (tests/data/official_centripetalnet/, official_mmdet/: names and shapes read
off the official definitions) with random values, convert one-to-one, load strictly and compute what the official
networks compute (tests/official_reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pointdet
from pointdet.cli import main
from pointdet.convert import ConversionError, convert_corners
from pointdet.ops.corner_pool import corner_pool
from tests.helpers import random_state
from tests.official_reference import (
    deform_reference,
    mmdet_corner_head,
    mmdet_hourglass,
    official_hourglass,
    release_corner_head,
    scan_pool,
)

DATA = Path(__file__).parent / "data"
# (framework, manifest, method) of each official network.
NETWORKS = {
    "centripetalnet_release": ("centripetalnet", "official_centripetalnet/centripetalnet_mask_hg104.json"),
    "mmdet_cornernet": ("mmdet", "official_mmdet/cornernet_hg104.json"),
    "mmdet_centripetalnet": ("mmdet", "official_mmdet/centripetalnet_hg104.json"),
}
MASK_BRANCH = ("bbox_head.convs.", "bbox_head.mid_convs.", "bbox_head.conv_logits.", "bbox_head.mid_conv_logits.")


def official_state(network: str, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_state(json.loads((DATA / NETWORKS[network][1]).read_text())["tensors"], seed)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_official_corner_networks_convert_load_and_compute_the_official_arithmetic(tmp_path, network):
    """Every official tensor lands once (the release's dense mask branch aside), the converted run loads strictly
    with ``pointdet.load``, and both stacks' maps equal the official network's on the same image (BGR for the
    release, which reads OpenCV's order; RGB for mmdetection)."""
    framework = NETWORKS[network][0]
    official = official_state(network, seed=1)
    torch.save({"meta": {"epoch": 210}, "state_dict": official, "optimizer": {}}, tmp_path / "official.pth")
    main(["convert", str(tmp_path / "official.pth"), "--from", framework, "--out", str(tmp_path / "run")])
    predictor = pointdet.load(tmp_path / "run", device="cpu")  # load_state_dict(strict=True) inside
    model = predictor.model.eval()
    assert len(model.state_dict()) == len(official) - sum(key.startswith(MASK_BRANCH) for key in official)
    assert predictor.class_names[0] == "person" and len(predictor.class_names) == 80
    rules = {"centripetalnet": ("official", "official", 0.7), "mmdet": ("code", "paper", 0.5)}[framework]
    decoder = predictor.model.postprocess  # the pairing rule of the file's own code
    assert (decoder.pair_score, decoder.central_region, decoder.soft_nms_sigma) == rules
    torch.testing.assert_close(model.pixel_mean.flatten() / 255, torch.tensor([0.485, 0.456, 0.406]))

    rgb = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = model.backbone(rgb)
        if framework == "centripetalnet":
            expected = official_hourglass(official, rgb.flip(1), prefix="backbone.", modules="hg_modules")
            head = release_corner_head
        else:
            expected, head = mmdet_hourglass(official, rgb), mmdet_corner_head
        for feature, reference in zip(features, expected, strict=True):
            torch.testing.assert_close(feature, reference, rtol=1e-4, atol=1e-4)
        for stack in (0, 1):
            for corner in ("tl", "br"):
                maps = model.head.stacks[stack][corner](features[stack])
                reference = head(official, expected[stack], stack, corner)
                assert maps.keys() == reference.keys()
                for name, value in maps.items():
                    torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-4)
        outputs = model.head(features)  # eval: the last stack, as the official test reads
        torch.testing.assert_close(outputs.tl_heat[:, 0], head(official, expected[1], 1, "tl")["heat"])
    assert features[-1].abs().mean() > 1e-2  # the random weights keep a signal to compare
    image = torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    (detections,) = predictor.predict([image])
    assert torch.isfinite(detections.boxes).all()


@pytest.mark.parametrize("direction", ["top", "left", "bottom", "right"])
def test_corner_pools_scan_as_the_compiled_official_pools(direction):
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(corner_pool(x, direction), scan_pool(x, direction), rtol=0, atol=0)


def test_feature_adaption_is_the_official_dcnv1_on_offsets_from_the_detached_guiding_shift():
    """pointdet's cross-star DCN against a direct bilinear-sampling loop of DCNv1 (mmdetection v1 ``DeformConv``,
    mmcv ``DeformConv2d``: no bias, no modulation), offsets = 1x1 conv (no bias) of the guiding shift."""
    from pointdet.models.heads.corner import CrossStarDeformConv

    torch.manual_seed(5)
    adaption = CrossStarDeformConv(4)
    with torch.no_grad():
        adaption.offset.weight.mul_(10)  # offsets of a few pixels, some outside the map
    pooled, guiding = torch.randn(1, 4, 6, 7), torch.randn(1, 2, 6, 7)
    offsets = torch.nn.functional.conv2d(guiding, adaption.offset.weight)
    assert offsets.abs().max() > 2
    with torch.no_grad():
        torch.testing.assert_close(
            adaption(pooled, guiding), deform_reference(pooled, offsets, None, adaption.weight), rtol=1e-5, atol=1e-5
        )


def test_unknown_missing_and_foreign_files_are_refused_with_every_name_listed(tmp_path):
    official = official_state("mmdet_centripetalnet")
    del official["bbox_head.tl_feat_adaption.1.weight"]
    official["bbox_head.tl_feat_adaption.0.bias"] = torch.zeros(256)
    official["bbox_head.tl_heat.1.1.conv.weight"] = torch.zeros(3, 256, 1, 1)
    torch.save({"meta": {}, "state_dict": official}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as error:
        convert_corners(tmp_path / "bad.pth", tmp_path / "run", "mmdet")
    message = str(error.value)
    reshaped = "bbox_head.tl_heat.1.1.conv.weight (3, 256, 1, 1) -> head.stacks.1.tl.heat.2.weight (80, 256, 1, 1)"
    for text in ("head.stacks.1.tl.adaption.weight", "bbox_head.tl_feat_adaption.0.bias", reshaped):
        assert text in message
    assert not (tmp_path / "run").exists()
    release = {key: torch.zeros(1) for key in ("backbone.pre.0.conv.weight", "bbox_head.tl_off_c.0.conv.weight")}
    torch.save({"state_dict": release}, tmp_path / "release.pth")
    with pytest.raises(ConversionError, match="not an mmdetection CornerNet or CentripetalNet checkpoint"):
        convert_corners(tmp_path / "release.pth", tmp_path / "run", "mmdet")
    with pytest.raises(ConversionError, match="--arch hourglass52, but the file holds a hourglass104"):
        convert_corners(tmp_path / "bad.pth", tmp_path / "run", "mmdet", arch="hourglass52")
