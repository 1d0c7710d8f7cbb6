"""``pointdet convert --from cpm | mmdet``: CPM R-CNN's release and mmdetection's Grid R-CNN, built from manifests
of the official state dicts (tests/data/official_cpm/, official_mmdet/: names and shapes of the official networks
built from their own source) with random values, convert one-to-one, load strictly, and compute what the official
networks compute (tests/official_two_stage_reference.py): backbone, FPN, RPN, classifier, every grid branch with
its point fusion, the ISM and the RSM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pointdet
from pointdet.cli import main
from pointdet.convert import ConversionError
from pointdet.convert.grid import convert_grid
from tests import official_two_stage_reference as ref
from tests.helpers import random_state

DATA = Path(__file__).parent / "data"
MANIFESTS = {
    "cpm": ("official_cpm/cpm_rcnn_r50_fpn_2x.json", "model"),
    "mmdet": ("official_mmdet/grid_rcnn_r50_fpn_gn-head_2x.json", "state_dict"),
}
PET_ROI = "Grid_Cascade_RCNN."


def official_state(framework: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the manifest's shapes, scaled so that activations keep a signal through the network
    (weights ~ N(0, 1 / fan_in); BN variances and norm weights positive)."""
    state = random_state(json.loads((DATA / MANIFESTS[framework][0]).read_text())["tensors"], seed)
    generator = torch.Generator().manual_seed(seed + 100)
    for name, tensor in state.items():
        if tensor.dim() > 1:
            fan_in = tensor[0].numel()
            state[name] = torch.randn(tensor.shape, generator=generator) / fan_in**0.5
        elif name.endswith(("running_var", ".weight")):  # 1-D weights are the norms' scales
            state[name] = torch.rand(tensor.shape, generator=generator) + 0.5
        elif tensor.is_floating_point():
            state[name] = torch.randn(tensor.shape, generator=generator) * 0.1
    return state


def converted(tmp_path: Path, framework: str, seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    official = official_state(framework, seed)
    torch.save({MANIFESTS[framework][1]: official, "optimizer": {}}, tmp_path / "official.pth")
    main(["convert", str(tmp_path / "official.pth"), "--from", framework, "--out", str(tmp_path / "run")])
    predictor = pointdet.load(tmp_path / "run", device="cpu")  # load_state_dict(strict=True) inside
    return official, predictor


def official_features(state: dict[str, torch.Tensor], framework: str, x: torch.Tensor) -> list[torch.Tensor]:
    if framework == "cpm":
        body = ref.resnet(state, "Conv_Body.", x.flip(1), stride_in_1x1=True)  # the release reads BGR
        laterals = ["Conv_Body_FPN.fpn_in.2", "Conv_Body_FPN.fpn_in.1", "Conv_Body_FPN.fpn_in.0", "Conv_Body_FPN.p5_in"]
        outputs = [name.replace("_in", "_out") for name in laterals]
    else:
        body = ref.resnet(state, "backbone.", x, stride_in_1x1=False)
        laterals = [f"neck.lateral_convs.{i}.conv" for i in range(4)]
        outputs = [f"neck.fpn_convs.{i}.conv" for i in range(4)]
    return ref.fpn(state, laterals, outputs, body)


def check_official_test_path_choices(model: torch.nn.Module, framework: str) -> None:
    """The converted config carries what the official test path does (``pointdet.convert.grid``)."""
    backbone, heads = model.backbone, model.roi_heads
    assert not model.postprocess.clip_boxes
    if framework == "cpm":
        assert backbone.layer2[0].conv1.stride == (2, 2) and backbone.layer2[0].conv2.stride == (1, 1)
        assert len(heads.grids) == 3 and heads.grids[0].first_order is None  # FUSED_ON: False
        assert heads.grid_pool.level_rule == "detectron" and not heads.grid_pool.aligned
        assert heads.iou_scorer is not None and heads.rescorer is not None
        torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor([122.7717, 115.9465, 102.9801]))
    else:
        assert backbone.layer2[0].conv2.stride == (2, 2)
        assert len(heads.grids) == 1 and heads.grids[0].first_order is not None
        assert heads.grid_pool.level_rule == "mmdet" and heads.grid_pool.aligned
        assert heads.grid_pool.sampling_ratio == 0 and model.postprocess.max_grid_rois == 100


@pytest.mark.parametrize("framework", ["cpm", "mmdet"])
def test_official_grid_networks_convert_load_and_compute_the_official_arithmetic(tmp_path, framework):
    official, predictor = converted(tmp_path, framework)
    model = predictor.model.eval()
    counters = sum(name.endswith("num_batches_tracked") for name in official)
    anchors = sum(name.startswith("RPN.anchor_generator.") for name in official)
    fusion = sum("order_trans." in name for name in official)  # 24 edges x 4 tensors x 2 orders -> 8 tensors
    expected = len(official) - counters - anchors - fusion + (8 if fusion else 0)
    assert len(model.state_dict()) == expected  # each of the others lands once
    assert len(predictor.class_names) == 80 and predictor.class_names[0] == "person"
    check_official_test_path_choices(model, framework)

    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))  # RGB, normalised
    proposals = torch.tensor([[4.0, 6, 40, 50], [10, 2, 90, 60], [30, 20, 50, 34], [0, 0, 95, 63]])
    heads, sizes = model.roi_heads, [(64, 96)]
    with torch.no_grad():
        expected = official_features(official, framework, x)
        features = model.features(x)
        for ours, theirs in zip(features, expected, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        assert expected[0].abs().mean() > 1e-2  # the random weights keep a signal to compare
        rpn = model(x)
        rpn_names = {
            "cpm": ("RPN.head.conv", "RPN.head.cls_logits", "RPN.head.bbox_pred"),
            "mmdet": ("rpn_head.rpn_conv", "rpn_head.rpn_cls", "rpn_head.rpn_reg"),
        }[framework]
        for level, feature in enumerate(expected):
            objectness, deltas = ref.rpn_head(official, rpn_names, feature)
            torch.testing.assert_close(rpn.objectness[level], objectness, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(rpn.deltas[level], deltas, rtol=1e-4, atol=1e-4)
        # RoI heads on the same pooled features (the poolers' own rules are tested in tests/test_cpm_rcnn.py).
        pooled_7 = heads.classifier_pool(features, [proposals], sizes)
        pooled_14 = heads.grid_pool(features, [proposals], sizes)
        logits = heads.classifier(pooled_7)
        if framework == "cpm":
            names = tuple(f"{PET_ROI}{part}" for part in ("Head_cls.fc6", "Head_cls.fc7", "Output_cls.cls_score"))
            torch.testing.assert_close(logits, ref.two_fc(official, names, pooled_7), rtol=1e-4, atol=1e-4)
            names = tuple(n.replace("_cls", "_rescore") for n in names)
            rescored = ref.two_fc(official, names, pooled_7)
            torch.testing.assert_close(heads.rescorer(pooled_7), rescored, rtol=1e-4, atol=1e-4)
            for stage, grid in enumerate(heads.grids):
                convs = [(f"{PET_ROI}Head_grid_{stage}.convs.{k}.0", f"{PET_ROI}Head_grid_{stage}.convs.{k}.1")
                         for k in range(8)]  # fmt: skip
                x_grid = ref.grid_convs(official, convs, pooled_14)
                up = tuple(f"{PET_ROI}Output_grid_{stage}.{n}" for n in ("deconv_1", "norm1", "deconv_2"))
                outputs = grid(pooled_14)  # the release has no point fusion: heatmaps from the features
                torch.testing.assert_close(outputs.fused, ref.grid_heatmaps(official, up, x_grid), rtol=1e-4, atol=1e-4)
            iou = tuple(f"{PET_ROI}Output_grid_2.{n}" for n in ("iou_fc1", "iou_fc2", "iou_pred"))
            ism = ref.two_fc(official, iou, x_grid)
            torch.testing.assert_close(heads.iou_scorer(outputs.features), ism, rtol=1e-4, atol=1e-4)
        else:
            names = ("roi_head.bbox_head.shared_fcs.0", "roi_head.bbox_head.shared_fcs.1", "roi_head.bbox_head.fc_cls")
            theirs = ref.two_fc(official, names, pooled_7)  # background last
            torch.testing.assert_close(logits, torch.cat([theirs[:, -1:], theirs[:, :-1]], 1), rtol=1e-4, atol=1e-4)
            convs = [(f"roi_head.grid_head.convs.{k}.conv", f"roi_head.grid_head.convs.{k}.gn") for k in range(8)]
            x_grid = ref.fuse(official, "roi_head.grid_head.", ref.grid_convs(official, convs, pooled_14))
            up = tuple(f"roi_head.grid_head.{n}" for n in ("deconv1", "norm1", "deconv2"))
            fused = heads.grids[0](pooled_14).fused
            torch.testing.assert_close(fused, ref.grid_heatmaps(official, up, x_grid), rtol=1e-4, atol=1e-4)
    image = torch.randint(0, 256, (3, 70, 100), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    (detections,) = predictor.predict([image])
    assert torch.isfinite(detections.boxes).all()


def test_unknown_missing_and_foreign_files_are_refused_with_every_name_listed(tmp_path):
    official = official_state("mmdet")
    del official["roi_head.grid_head.forder_trans.4.2.0.weight"]  # one edge: that fusion set stays unmerged
    official["roi_head.grid_head.extra.weight"] = torch.zeros(3)
    official["roi_head.grid_head.deconv2.bias"] = torch.zeros(8)
    torch.save({"state_dict": official}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as error:
        convert_grid(tmp_path / "bad.pth", tmp_path / "run", "mmdet")
    message = str(error.value)
    for text in (
        "24 official tensors with no place",  # the 23 left of the incomplete set and extra.weight
        "roi_head.grid_head.forder_trans.0.0.0.weight",  # no place while its set is incomplete
        "roi_heads.grids.0.first_order.depthwise.weight",  # missing
        "roi_head.grid_head.deconv2.bias (8,) -> roi_heads.grids.0.upsample.3.bias (9,)",
    ):
        assert text in message
    assert not (tmp_path / "run").exists()
    corner = {"backbone.hourglass_modules.0.up1.0.conv1.weight": torch.zeros(1)}
    torch.save({"state_dict": corner}, tmp_path / "corner.pth")
    with pytest.raises(ConversionError, match="not a CPM R-CNN"):
        convert_grid(tmp_path / "corner.pth", tmp_path / "run", "cpm")
    resnext = {"backbone.layer3.0.conv1.weight": torch.zeros(1), "backbone.layer1.0.conv2.weight": torch.zeros(8, 4)}
    torch.save({"state_dict": resnext}, tmp_path / "resnext.pth")
    with pytest.raises(ConversionError, match="ResNeXt"):
        convert_grid(tmp_path / "resnext.pth", tmp_path / "run", "mmdet")
