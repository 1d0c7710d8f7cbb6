"""CPM R-CNN end to end: overfitting four images, the presets, eval-time decode options, CLI train / eval / predict /
load, and the ONNX export refusal."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pointdet.configs import ConfigError, apply_eval_overrides, get_preset
from pointdet.configs.schema import CPMRCNNConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset, collate
from pointdet.data.shapes import generate_shapes
from pointdet.data.transforms import eval_transforms
from pointdet.decoders.grid import CPMPostprocess
from pointdet.engine.inference import predict_images, to_original_pixels
from pointdet.evaluation import detections_to_coco, evaluate_coco
from pointdet.models.build import build_model
from pointdet.models.roi_heads.cpm import CPMRoIHeads
from pointdet.models.two_stage import TwoStageDetector

from .helpers import fit


@pytest.mark.slow  # 120 steps of a narrowed cpm_rcnn_shapes: tens of minutes on a contended 2-core CPU
def test_cpm_rcnn_overfits_four_shapes_images(tmp_path):
    torch.manual_seed(0)
    shapes = generate_shapes(tmp_path, num_train=4, num_val=1, image_size=128, seed=0)
    coco = CocoDataset(shapes.train_json, shapes.train_images)
    batch = collate([TransformedDataset(coco, eval_transforms(128))[i] for i in range(4)])
    narrow = {"point_channels": 8, "max_grid_rois": 16, "roi_batch": 64, "rpn_train_rois": 100, "rpn_test_rois": 100}
    model = build_model(replace(get_preset("cpm_rcnn_shapes").model, **narrow), num_classes=3)
    history = fit(model, batch, steps=120, lr=1e-3, drop_after=100)
    assert history[-1] < 0.2 * history[0], history[::10]
    model.eval()
    detections = to_original_pixels(predict_images(model, batch.images), batch.scales, batch.orig_sizes)
    metrics = evaluate_coco(shapes.train_json, detections_to_coco(detections, batch.image_ids, coco.category_ids))
    assert metrics["AP"] >= 0.95, metrics


def test_presets_build_cpm_and_grid_rcnn_with_the_recipes_settings():
    cpm, grid, cpu = (get_preset(n) for n in ("cpm_rcnn_r50_fpn", "grid_rcnn_r50_fpn", "cpm_rcnn_shapes"))
    assert isinstance(cpm.model, CPMRCNNConfig) and cpm.model.backbone == "resnet50" and cpm.model.norm == "none"
    assert (cpm.model.mapping_ratios, cpm.model.stage_ious, cpm.model.stage_weights) == (
        (2.0, 1.5, 1.25),
        (0.5, 0.6, 0.7),
        (1.0, 0.5, 0.25),
    )
    assert (cpm.model.score_threshold, cpm.model.nms_iou, cpm.model.max_grid_rois, cpm.model.gamma) == (
        0.03,
        0.3,
        96,
        0.8,
    )
    assert (cpm.optim.optimizer, cpm.optim.lr, cpm.optim.base_batch, cpm.optim.weight_decay) == ("sgd", 0.02, 16, 4e-5)
    assert (cpm.optim.epochs, cpm.optim.lr_steps, cpm.optim.warmup_iters, cpm.optim.warmup_ratio) == (
        24,
        (16, 22),
        500,
        0.1,
    )
    assert not (grid.model.cascade_mapping or grid.model.iou_scoring or grid.model.rescoring)
    model = build_model(cpu.model, num_classes=3, with_backbone_weights=False)
    assert isinstance(model, TwoStageDetector) and isinstance(model.roi_heads, CPMRoIHeads)
    assert len(model.roi_heads.grids) == 3 and [s.name for s in model.feature_shapes] == ["p2", "p3", "p4", "p5", "p6"]


def test_decode_options_switch_at_eval_and_architecture_keys_do_not():
    config = get_preset("cpm_rcnn_shapes")
    changed = apply_eval_overrides(config, ["model.gamma=1.0", "model.nms_iou=0.5", "model.score_threshold=0.1"])
    postprocess = build_model(changed.model, 3, with_backbone_weights=False).postprocess
    assert postprocess == CPMPostprocess(score_threshold=0.1, nms_iou=0.5, max_grid_rois=32, gamma=1.0)
    with pytest.raises(ConfigError, match="model.rescoring: fixed by the checkpoint"):
        apply_eval_overrides(config, ["model.rescoring=false"])


def test_cli_cpm_rcnn_train_eval_predict_and_load(tiny_shapes, tmp_path, capsys):
    import pointdet

    from .helpers import cli_train_eval_predict

    run, image = cli_train_eval_predict("cpm_rcnn_shapes", tiny_shapes, tmp_path, capsys, "model.gamma=1.0")
    predictor = pointdet.load(run, device="cpu")
    assert isinstance(predictor.model, TwoStageDetector)
    predictor.model.postprocess = CPMPostprocess(score_threshold=0.0)
    (detections,) = predictor.predict(image)
    assert detections.boxes.shape[1:] == (4,) and 0 < len(detections) <= 100


def test_export_refuses_cpm_rcnn_naming_the_roi_stage(tmp_path):
    from pointdet.export import export_onnx

    model = build_model(get_preset("cpm_rcnn_shapes").model, 3, with_backbone_weights=False)
    with pytest.raises(ValueError, match="has an RoI stage"):
        export_onnx(model, tmp_path / "m.onnx", 64, 64)
