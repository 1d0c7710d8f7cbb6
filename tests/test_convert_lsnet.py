"""``pointdet convert --from lsnet``: official LSNet / LSNet-CPV checkpoints, built from manifests of the official state
dicts (tests/data/official_lsnet/: the names and shapes of Duankaiwen/LSNet's networks of eight configs) with random
values, convert one-to-one into the right places, load strictly and run; conversions that cannot work are refused
with one message. That the converted networks compute what the official ones compute was checked offline against
the official networks built from their own source (float64, every raw head output); here the pieces that differ from
pointdet's defaults are checked against the official arithmetic as read from the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

import pointdet
from pointdet.cli import main
from pointdet.configs import LSNetConfig
from pointdet.convert import ConversionError, convert_lsnet
from pointdet.convert.common import pointdet_state
from pointdet.convert.lsnet import plan_conversion, set_aside
from pointdet.engine.checkpoint import model_state
from pointdet.models.build import build_model
from pointdet.models.heads.lsnet_layers import LandmarkFeatureConv, pyramid_levels
from tests.helpers import random_state

DATA = Path(__file__).parent / "data" / "official_lsnet"
# manifest -> (official task, CPV, backbone, backbone DCN, classes)
NETWORKS = {
    "lsnet_bbox_r50": ("bbox", False, "resnet50", False, 80),
    "lsnet_bbox_x101_dcn": ("bbox", False, "resnext101_64x4d", True, 80),
    "lsnet_segm_r50": ("segm", False, "resnet50", False, 80),
    "lsnet_segm_r2_101_dcn": ("segm", False, "res2net101_v1d", True, 80),
    "lsnet_pose_bbox_r50": ("pose_bbox", False, "resnet50", False, 1),
    "lsnet_pose_kbox_x101_dcn": ("pose_kbox", False, "resnext101_64x4d", True, 1),
    "lsnet_bbox_cpv_x101_dcn": ("bbox", True, "resnext101_64x4d", True, 80),
    "lsnet_bbox_cpv_r2_101_dcn": ("bbox", True, "res2net101_v1d", True, 80),
}
# Official name -> pointdet name, written out by hand from the two definitions (one per kind of renaming).
PLACES = {
    "backbone.layer4.2.conv3.weight": "backbone.layer4.2.conv3.weight",
    "neck.lateral_convs.2.conv.weight": "neck.pyramid.inner_blocks.2.0.weight",
    "neck.lateral_convs.0.gn.bias": "neck.pyramid.inner_blocks.0.1.bias",
    "neck.fpn_convs.1.gn.weight": "neck.pyramid.layer_blocks.1.1.weight",
    "neck.fpn_convs.3.conv.weight": "neck.pyramid.extra_blocks.p6.0.weight",
    "neck.fpn_convs.4.gn.bias": "neck.pyramid.extra_blocks.p7.1.bias",
    "bbox_head.cls_convs.0.conv.weight": "head.cls_tower.0.weight",
    "bbox_head.cls_convs.1.conv.bias": "head.cls_tower.3.bias",
    "bbox_head.cls_convs.2.conv.conv_offset.weight": "head.cls_tower.6.offset_mask.weight",
    "bbox_head.cls_convs.2.bn.weight": "head.cls_tower.7.weight",
    "bbox_head.pts_cls_conv.weight": "head.cls_refine.dcn_weight",
    "bbox_head.cls_af_dcn_conv.0.weight": "head.cls_refine.fuse.weight",
    "bbox_head.cls_feat_conv.bias": "head.cls_refine.level_conv.bias",
    "bbox_head.cls_GN.weight": "head.cls_refine.norm.weight",
    "bbox_head.pts_cls_out.bias": "head.cls_refine.out.bias",
}
LANDMARK_BRANCH = {"bbox": "bbox", "segm": "segm", "pose_bbox": "pose", "pose_kbox": "pose"}
BACKBONE_PLACES = {
    "resnet50": {
        "backbone.conv1.weight": "backbone.stem.0.weight",
        "backbone.bn1.running_var": "backbone.stem.1.running_var",
    },
    "resnext101_64x4d": {
        "backbone.conv1.weight": "backbone.stem.0.weight",
        "backbone.layer3.22.conv2.conv_offset.bias": "backbone.layer3.22.conv2.offset_mask.bias",
        "backbone.layer2.0.conv2.weight": "backbone.layer2.0.conv2.weight",
    },
    "res2net101_v1d": {
        "backbone.stem.6.weight": "backbone.stem.6.weight",
        "backbone.layer2.0.convs.2.conv_offset.weight": "backbone.layer2.0.convs.2.offset_mask.weight",
        "backbone.layer1.0.downsample.2.running_mean": "backbone.layer1.0.downsample.2.running_mean",
    },
}  # fmt: skip


def manifest_tensors(manifest: str) -> dict[str, list[int]]:
    return json.loads((DATA / f"{manifest}.json").read_text())["tensors"]


def official_file(path: Path, manifest: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """An mmcv checkpoint of the manifest's names and shapes with random values; returns its state dict."""
    state = random_state(manifest_tensors(manifest), seed)
    torch.save({"meta": {"mmdet_version": "2.1.0", "epoch": 24}, "state_dict": state, "optimizer": {}}, path)
    return state


def shapes_only_file(path: Path, state: dict[str, list[int]] | dict[str, torch.Tensor]) -> None:
    """An mmcv checkpoint of tensors without values (meta tensors): enough for a conversion that must be refused."""
    meta = {name: torch.empty(list(shape) if isinstance(shape, list) else shape.shape, device="meta")
            for name, shape in state.items()}  # fmt: skip
    torch.save({"meta": {}, "state_dict": meta}, path)


def expected_places(manifest: str) -> dict[str, str]:
    task, cpv, backbone, _, _ = NETWORKS[manifest]
    branch = LANDMARK_BRANCH[task]
    places = {**PLACES, **BACKBONE_PLACES[backbone]}
    places |= {
        f"bbox_head.{branch}_convs.0.conv.weight": "head.reg_tower.0.weight",
        f"bbox_head.pts_{branch}_init_conv.weight": "head.init_conv.weight",
        f"bbox_head.pts_{branch}_init_out.bias": "head.init_out.bias",
        f"bbox_head.pts_{branch}_refine_conv.weight": "head.reg_refine.dcn_weight",
        f"bbox_head.{branch}_af_dcn_conv.0.bias": "head.reg_refine.fuse.bias",
        f"bbox_head.{branch}_feat_conv.weight": "head.reg_refine.level_conv.weight",
        f"bbox_head.{branch}_GN.bias": "head.reg_refine.norm.bias",
        f"bbox_head.pts_{branch}_refine_out.weight": "head.reg_refine.out.weight",
    }
    if task == "pose_bbox":
        places |= {
            "bbox_head.bbox_convs.1.bn.bias": "head.box_branch.tower.4.bias",
            "bbox_head.pts_bbox_init_out.weight": "head.box_branch.init_out.weight",
            "bbox_head.pts_bbox_refine_conv.weight": "head.box_branch.refine.dcn_weight",
            "bbox_head.bbox_GN.weight": "head.box_branch.refine.norm.weight",
        }
    if cpv:
        places |= {
            "bbox_head.shared_convs.0.conv.conv_offset.bias": "head.shared.0.offset_mask.bias",
            "bbox_head.shared_convs.0.bn.weight": "head.shared.1.weight",
            "bbox_head.hem_tl.p1_conv1.conv.weight": "head.corners.pools.0.branches.0.0.weight",
            "bbox_head.hem_br.p2_conv1.gn.bias": "head.corners.pools.1.branches.1.1.bias",
            "bbox_head.hem_tl.p_conv1.weight": "head.corners.pools.0.merge.0.weight",
            "bbox_head.hem_br.p_gn1.weight": "head.corners.pools.1.merge.1.weight",
            "bbox_head.hem_tl.conv1.weight": "head.corners.pools.0.skip.0.weight",
            "bbox_head.hem_br.gn1.bias": "head.corners.pools.1.skip.1.bias",
            "bbox_head.hem_tl.conv2.conv.weight": "head.corners.pools.0.out.0.weight",
            "bbox_head.hem_br.conv2.gn.weight": "head.corners.pools.1.out.1.weight",
            "bbox_head.reppoints_hem_tl_score_out.bias": "head.corners.scores.0.bias",
            "bbox_head.reppoints_hem_br_offset_out.weight": "head.corners.offsets.1.weight",
            "bbox_head.reppoints_sem_out.weight": "head.foreground.score.weight",
            "bbox_head.reppoints_sem_embedding.conv.weight": "head.foreground.embedding.0.weight",
            "bbox_head.reppoints_sem_embedding.gn.bias": "head.foreground.embedding.1.bias",
        }
    return places


@pytest.mark.parametrize("manifest", list(NETWORKS))
def test_every_official_tensor_lands_once_in_its_place(manifest):
    """Each official tensor (the backbone's BatchNorm counters set aside: frozen BatchNorm has none) lands once in
    pointdet's network of the converted config, at the places written out by hand, and fills it; shapes only
    (tensors on the meta device), the renaming itself."""
    task, cpv, backbone, dcn, num_classes = NETWORKS[manifest]
    official = {name: torch.empty(shape, device="meta") for name, shape in manifest_tensors(manifest).items()}
    kept = set_aside(official)
    assert set(official) - set(kept) == {n for n in official if n.startswith("backbone.") and "num_batches" in n}
    plan = plan_conversion(kept, "official.pth")
    with torch.device("meta"):
        model = build_model(plan.config.model, num_classes, len(plan.keypoints.names), plan.keypoints.flip_pairs)
    state = pointdet_state(kept, plan.architecture, model, "official.pth")  # raises unless one-to-one
    place = {id(tensor): name for name, tensor in state.items()}
    assert len(place) == len(kept) == len(state)
    for official_name, pointdet_name in expected_places(manifest).items():
        assert place[id(official[official_name])] == pointdet_name, official_name
    config = plan.config.model
    assert (config.backbone, config.backbone_dcn, config.pyramid_scaling) == (backbone, dcn, "code")
    assert (config.corner_verification, config.foreground_verification, config.joint_inference) == (cpv, cpv, cpv)
    assert config.task == {"bbox": "detection", "segm": "segmentation"}.get(task, "pose")
    assert config.pose_box == ("keypoints" if task == "pose_kbox" else "object")
    assert len(plan.classes.names) == num_classes
    assert len(plan.keypoints.names) == (17 if task.startswith("pose") else 0)


@pytest.mark.parametrize(
    "manifest",
    ["lsnet_bbox_r50", "lsnet_pose_bbox_r50", pytest.param("lsnet_bbox_cpv_r2_101_dcn", marks=pytest.mark.slow)],
)
def test_converted_checkpoints_hold_the_official_values_load_and_predict(tmp_path, manifest):
    official = official_file(tmp_path / "official.pth", manifest, seed=3)
    main(["convert", str(tmp_path / "official.pth"), "--from", "lsnet", "--out", str(tmp_path / "run")])
    converted = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    for official_name, pointdet_name in expected_places(manifest).items():
        assert torch.equal(converted["model"][pointdet_name], official[official_name]), official_name
    assert converted["pixel_mean"] == [0.485, 0.456, 0.406]  # ImageNet, RGB (img_norm_cfg, to_rgb=True)
    assert converted["converted_from"]["framework"] == "lsnet"
    predictor = pointdet.load(tmp_path / "run", device="cpu")  # load_state_dict(strict=True) inside
    image = torch.randint(0, 256, (3, 96, 136), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    (detections,) = predictor.predict([image])
    assert torch.isfinite(detections.boxes).all()


def test_a_file_that_does_not_fit_is_refused_with_every_disagreement_and_nothing_written(tmp_path):
    tensors = manifest_tensors("lsnet_bbox_r50")
    tensors.pop("bbox_head.pts_bbox_refine_out.bias")
    tensors["bbox_head.cls_feat_conv.weight"] = [256, 128, 3, 3]
    tensors["bbox_head.extra_branch.weight"] = [3]
    shapes_only_file(tmp_path / "bad.pth", tensors)
    with pytest.raises(ConversionError) as error:
        convert_lsnet(tmp_path / "bad.pth", tmp_path / "run")
    message = str(error.value)
    assert "bbox_head.extra_branch.weight" in message and "head.reg_refine.out.bias" in message
    assert "bbox_head.cls_feat_conv.weight (256, 128, 3, 3) -> head.cls_refine.level_conv.weight" in message
    assert not (tmp_path / "run" / "last.pt").exists()


def test_files_of_other_networks_and_wrong_options_are_refused(tmp_path):
    shapes_only_file(tmp_path / "lsnet.pth", manifest_tensors("lsnet_pose_kbox_x101_dcn"))
    with pytest.raises(ConversionError, match="--arch resnet50, but the file holds a resnext101_64x4d backbone"):
        convert_lsnet(tmp_path / "lsnet.pth", tmp_path / "run", arch="resnet50")
    with pytest.raises(ConversionError, match="the classifier has 1 classes, --classes coco names 80"):
        convert_lsnet(tmp_path / "lsnet.pth", tmp_path / "run", classes="coco")
    with pytest.raises(SystemExit, match=r"read from the file and the test size is \(1333, 800\); drop --task$"):
        main(["convert", str(tmp_path / "lsnet.pth"), "--from", "lsnet", "--task", "det", "--out", str(tmp_path)])
    shapes_only_file(tmp_path / "centernet.pth", json.loads((DATA.parent / "official_centernet" / "resdcn18_det.json")
                                                            .read_text())["tensors"])  # fmt: skip
    with pytest.raises(ConversionError, match="centernet.pth: not an official LSNet head"):
        convert_lsnet(tmp_path / "centernet.pth", tmp_path / "run")


def test_lsnet_checkpoints_before_version_4_load_with_zero_tower_biases():
    model = build_model(LSNetConfig(backbone="resnet18", channels=64, stacked_convs=1), 3, with_backbone_weights=False)
    today = model.state_dict()
    biases = [name for name in today if name.startswith("head.") and name.endswith("tower.0.bias")]
    assert biases == ["head.cls_tower.0.bias", "head.reg_tower.0.bias"]
    old = {name: tensor for name, tensor in today.items() if name not in biases}
    upgraded = model_state({"model": old, "config_version": 3})
    assert set(upgraded) == set(today)
    assert all(torch.equal(upgraded[name], torch.zeros(64)) for name in biases)


def official_pyramid_features(
    features: list[torch.Tensor], level: int, offset: torch.Tensor, weight: torch.Tensor
) -> list[torch.Tensor]:
    """What the official ``forward_single2`` feeds its ``PyramidDeformConv`` with, as read from the code: for each
    level it reads it multiplies the (dy, dx) offsets in place by that level's size ratio (so they accumulate), and
    the CUDA kernel samples the level at ((h - 1 + i) * ratio_y + dy, (w - 1 + j) * ratio_x + dx). Computed with
    torchvision's ``deform_conv2d`` on absolute positions (stride 1, no padding, the map zero-padded at the
    bottom / right), independently of pointdet's sampler."""
    height, width = features[level].shape[-2:]
    offset = offset.clone()
    rows = torch.arange(height, dtype=offset.dtype).view(1, 1, height, 1)
    cols = torch.arange(width, dtype=offset.dtype).view(1, 1, 1, width)
    i = torch.arange(3, dtype=offset.dtype).repeat_interleave(3).view(1, 9, 1, 1)
    j = torch.arange(3, dtype=offset.dtype).repeat(3).view(1, 9, 1, 1)
    outputs = []
    for other in pyramid_levels(level, len(features)):
        ratio_y, ratio_x = features[other].shape[-2] / height, features[other].shape[-1] / width
        offset[:, 0::2] *= ratio_y  # the code's in-place scaling of a view of the shared offsets
        offset[:, 1::2] *= ratio_x
        want_y = (rows - 1 + i) * ratio_y + offset[:, 0::2]
        want_x = (cols - 1 + j) * ratio_x + offset[:, 1::2]
        absolute = torch.stack([want_y - rows - i, want_x - cols - j], dim=2).flatten(1, 2)
        x = features[other]
        padded = F.pad(x, (0, max(width + 2 - x.shape[-1], 0), 0, max(height + 2 - x.shape[-2], 0)))
        extent = (padded.shape[-2] - 2, padded.shape[-1] - 2)
        absolute = F.pad(absolute, (0, extent[1] - width, 0, extent[0] - height))
        outputs.append(deform_conv2d(padded, absolute, weight)[..., :height, :width])
    return outputs


@pytest.mark.parametrize("level", [0, 2, 4])
def test_code_pyramid_scaling_computes_the_official_pyramid_dcn(level):
    torch.manual_seed(0)
    sizes = [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]  # a non-square image's P3-P7
    features = [torch.randn(1, 32, h, w, dtype=torch.float64) for h, w in sizes]
    offset = torch.randn(1, 18, *sizes[level], dtype=torch.float64) * 3
    layer = LandmarkFeatureConv(32, 5, "pyramid", pyramid_scaling="code").double()
    expected = official_pyramid_features(features, level, offset, layer.dcn_weight)
    hidden = layer.level_conv(features[level]) + F.relu(layer.fuse(torch.cat(expected, dim=1)))
    torch.testing.assert_close(layer(features, level, offset), layer.out(F.relu(layer.norm(hidden))))
    paper = LandmarkFeatureConv(32, 5, "pyramid", pyramid_scaling="paper").double()
    paper.load_state_dict(layer.state_dict())
    assert not torch.allclose(paper(features, level, offset), layer(features, level, offset))
