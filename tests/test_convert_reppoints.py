"""``pointdet convert --from reppointsv2``: the official RepPoints v2 and Dense RepPoints v2 checkpoints, built from
manifests of the official state dicts (tests/data/official_reppointsv2/: names and shapes of the networks of
Scalsol/RepPointsV2's configs) with random values, convert one-to-one, load strictly and compute what the official
networks compute (tests/official_reppoints_reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

import pointdet
from pointdet.cli import main
from pointdet.configs import config_from_checkpoint
from pointdet.convert import ConversionError
from pointdet.convert.common import COUNTER, pointdet_state
from pointdet.convert.reppoints import (
    METHODS,
    convert_reppoints,
    converted_reppoints_config,
    infer_backbone,
    infer_method,
    points_y_first,
)
from pointdet.engine.checkpoint import load_checkpoint
from pointdet.models.build import build_model
from tests.helpers import random_state
from tests.official_reppoints_reference import dense_level, dense_point_scores, official_fpn, reppoints_v2_level

MANIFESTS = Path(__file__).parent / "data" / "official_reppointsv2"
NETWORKS = [path.stem for path in sorted(MANIFESTS.glob("*.json"))]
# Random maps of the five levels, the heads' input in the arithmetic tests (the dense head samples with
# align_corners: two cells a side at least).
LEVEL_SIZES = [(8, 12), (4, 6), (2, 3), (2, 2), (2, 2)]


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_state(json.loads((MANIFESTS / f"{name}.json").read_text())["tensors"], seed)


def converted(name: str, official: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """pointdet's network of the official one, as ``pointdet convert`` builds it, and the converted state."""
    without_counters = {key: value for key, value in official.items() if not key.endswith(COUNTER)}
    method = infer_method(without_counters)
    backbone, dcn = infer_backbone(without_counters)
    config = converted_reppoints_config(method, without_counters, backbone, dcn)
    model = build_model(config.model, 80, 0, [], with_backbone_weights=False).eval()
    if method == "dense_reppoints_v2":
        without_counters = points_y_first(without_counters)
    state = pointdet_state(without_counters, METHODS[method], model, name)
    return model, state


@pytest.mark.parametrize("name", NETWORKS)
def test_every_official_tensor_but_the_batchnorm_counters_lands_once(name):
    official = official_state(name)
    model, state = converted(name, official)
    assert state.keys() == model.state_dict().keys()
    counters = [key for key in official if key.endswith(COUNTER)]
    assert counters and all(key.startswith("backbone.") for key in counters)  # the ResNet's BN, never computed with
    sources = {id(tensor): key for key, tensor in official.items()}
    landed = [sources[id(tensor)] for tensor in state.values() if id(tensor) in sources]
    outputs = ("init_out.weight", "init_out.bias", "refine_out.weight", "refine_out.bias")
    swapped = [name for name in state if name.endswith(outputs) and id(state[name]) not in sources]
    assert len(set(landed)) == len(landed) == len(official) - len(counters) - len(swapped)
    assert len(swapped) == (4 if name.startswith("dense") else 0)  # the dense head's (dx, dy) rows, swapped
    dcn = "dconv" in name
    assert any(key.endswith("conv2.offset_mask.weight") for key in state) == dcn


def test_the_backbone_lands_where_torchvision_resnet_reads_the_same_names():
    """mmdetection's ResNet-50 names are torchvision's: C2-C5 of the converted backbone equal torchvision's ResNet
    loaded with the official tensors by name."""
    official = official_state("reppoints_v2_r50_fpn_giou", seed=1)
    model, state = converted("reppoints_v2_r50_fpn_giou", official)
    model.load_state_dict(state)
    reference = resnet50().eval()
    own = {key.removeprefix("backbone."): value for key, value in official.items() if key.startswith("backbone.")}
    reference.load_state_dict(own, strict=False)
    image = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        expected = []
        for layer in (reference.layer1, reference.layer2, reference.layer3, reference.layer4):
            x = layer(x)
            expected.append(x)
        features = model.backbone(image)
        for ours, theirs in zip(features, expected, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.neck(features), official_fpn(official, expected[1:]), rtol=1e-4, atol=1e-4)


def _levels(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 256, h, w, generator=generator, dtype=torch.float64) for h, w in LEVEL_SIZES]


def test_reppoints_v2_head_computes_the_official_maps():
    """Every raw map of every level, in float64, against the official arithmetic on the official names."""
    official = {key: value.double() for key, value in official_state("reppoints_v2_r50_fpn_giou", seed=3).items()}
    model, state = converted("reppoints_v2_r50_fpn_giou", official)
    model.double().load_state_dict(state)
    with torch.no_grad():
        for x in _levels(4):
            (logits, init_yx, refine_yx), (score, offset, foreground) = model.head.forward_level(x)
            expected = reppoints_v2_level(official, x)
            ours = {"cls": logits, "pts_init": init_yx, "pts_refine": refine_yx, "hem_score": score,
                    "hem_offset": offset, "sem_score": foreground}  # fmt: skip
            for field, value in ours.items():
                torch.testing.assert_close(value, expected[field], rtol=0, atol=1e-9)
        assert expected["pts_refine"].abs().mean() > 0.1  # points off the grid: the DCN samples between cells


def _xy(maps: torch.Tensor) -> torch.Tensor:
    b, c, h, w = maps.shape
    return maps.view(b, c // 2, 2, h, w).flip(2).reshape(b, c, h, w)


def test_dense_reppoints_v2_head_computes_the_official_maps_and_point_scores():
    """The dense head's maps (points compared in the official (dx, dy) order) and its per-point mask scores, in
    float64, against the official arithmetic: the transposed grid, the P3-only embedding of the mask features and
    the level-normalised score sampling of the official code."""
    official = {key: value.double() for key, value in official_state("dense_reppoints_v2_r50_fpn_giou", 5).items()}
    model, state = converted("dense_reppoints_v2_r50_fpn_giou", official)
    model.double().load_state_dict(state)
    features = _levels(6)
    with torch.no_grad():
        outputs = model.head(features)
        expected = [dense_level(official, x) for x in features]
        for x, reference in zip(features, expected, strict=True):
            logits, init_yx, refine_yx, _, cont_score, cont_offset, foreground, _ = model.head.forward_level(x)
            ours = {"cls": logits, "pts_init": _xy(init_yx), "pts_refine": _xy(refine_yx), "cont_score": cont_score,
                    "cont_offset": cont_offset, "sem_score": foreground}  # fmt: skip
            for field, value in ours.items():
                torch.testing.assert_close(value, reference[field], rtol=0, atol=1e-9)
        scores = dense_point_scores(official, features, expected)
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in scores], dim=1)
        torch.testing.assert_close(outputs.point_scores, flat, rtol=0, atol=1e-9)
        assert flat.std() > 0.05


@pytest.mark.parametrize("name", ["reppoints_v2_r50_fpn_giou", "dense_reppoints_v2_r50_fpn_giou"])
def test_convert_writes_a_run_that_loads_and_predicts(tmp_path, name):
    official = official_state(name, seed=7)
    torch.save({"meta": {"epoch": 12}, "state_dict": official, "optimizer": {}}, tmp_path / "official.pth")
    main(["convert", str(tmp_path / "official.pth"), "--from", "reppointsv2", "--out", str(tmp_path / "run")])
    predictor = pointdet.load(tmp_path / "run", device="cpu")  # load_state_dict(strict=True) inside
    assert predictor.class_names[0] == "person" and predictor.category_ids[-1] == 90
    torch.testing.assert_close(predictor.model.pixel_mean.flatten() / 255, torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(predictor.model.pixel_std.flatten() / 255, torch.tensor([0.229, 0.224, 0.225]))
    model_config = config_from_checkpoint(load_checkpoint(tmp_path / "run" / "last.pt")).model
    if name.startswith("dense"):
        assert (model_config.mask_fusion, model_config.score_sampling, model_config.point_grid) == (
            "finest", "level", "column_major")  # fmt: skip
        assert (model_config.num_points, model_config.num_groups, model_config.num_score_groups) == (729, 9, 121)
    else:
        assert model_config.transform == "exact_minmax" and model_config.joint_inference
    image = torch.randint(0, 256, (3, 100, 140), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    (detections,) = predictor.predict([image])
    assert torch.isfinite(detections.boxes).all()


def test_missing_unknown_and_reshaped_tensors_are_listed_in_one_message(tmp_path):
    official = official_state("reppoints_v2_r50_fpn_giou")
    del official["bbox_head.hem_br.p_gn1.bias"], official["neck.fpn_convs.4.conv.weight"]
    official["bbox_head.hem_br.p_bn1.weight"] = torch.zeros(256)
    official["bbox_head.reppoints_pts_init_out.weight"] = torch.zeros(50, 256, 1, 1)
    torch.save({"meta": {}, "state_dict": official}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as error:
        convert_reppoints(tmp_path / "bad.pth", tmp_path / "run")
    message = str(error.value)
    for text in ("head.corners.pools.1.merge.1.bias", "neck.pyramid.extra_blocks.p7.0.weight",
                 "bbox_head.hem_br.p_bn1.weight",
                 "bbox_head.reppoints_pts_init_out.weight (50, 256, 1, 1) -> head.points.init_out.weight "
                 "(18, 256, 1, 1)"):  # fmt: skip
        assert text in message
    assert not (tmp_path / "run").exists()


def test_other_networks_and_contradicting_options_are_refused(tmp_path):
    official = official_state("reppoints_v2_r50_fpn_giou")
    torch.save({"state_dict": official}, tmp_path / "r50.pth")
    with pytest.raises(ConversionError, match="--arch resnet101, but the file holds a resnet50 network"):
        convert_reppoints(tmp_path / "r50.pth", tmp_path / "run", arch="resnet101")
    with pytest.raises(ConversionError, match="80 classes, --classes voc names 20"):
        convert_reppoints(tmp_path / "r50.pth", tmp_path / "run", classes="voc")
    grouped = dict(official, **{"backbone.layer1.0.conv2.weight": torch.zeros(256, 4, 3, 3)})
    torch.save({"state_dict": grouped}, tmp_path / "x101.pth")
    with pytest.raises(ConversionError, match="ResNeXt is not supported"):
        convert_reppoints(tmp_path / "x101.pth", tmp_path / "run")
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not a RepPoints v2 or Dense RepPoints v2 checkpoint"):
        convert_reppoints(tmp_path / "other.pth", tmp_path / "run")
    assert not (tmp_path / "run").exists()
