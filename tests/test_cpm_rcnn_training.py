"""CPM R-CNN end to end: overfitting four images, the presets, eval-time decode options, CLI train / eval / predict /
load, and the ONNX export refusal."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pointdet.configs import ConfigError, apply_eval_overrides, apply_overrides, get_preset
from pointdet.configs.schema import CPMRCNNConfig, DataConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset, collate
from pointdet.data.shapes import generate_shapes
from pointdet.data.transforms import eval_transforms
from pointdet.decoders.grid import CPMPostprocess
from pointdet.engine.data import eval_loader, train_loader
from pointdet.engine.evaluate import evaluate_detector
from pointdet.engine.inference import predict_images, to_original_pixels
from pointdet.evaluation import detections_to_coco, evaluate_coco
from pointdet.models.build import build_model
from pointdet.models.roi_heads.cpm import CPMRoIHeads
from pointdet.models.two_stage import TwoStageDetector
from pointdet.structures import Instances

from .conftest import shared_data
from .helpers import fit

# The paper's Table 1 rows and Table 5's alternative mapping ratios as overrides of cpm_rcnn_shapes (the README's
# ablation commands): name -> (overrides, grid stages, ISM on, RSM on).
ABLATIONS = {
    "grid_baseline": (["model.cascade_mapping=false", "model.iou_scoring=false", "model.rescoring=false"], 1, 0, 0),
    "cmm": (["model.iou_scoring=false", "model.rescoring=false"], 3, 0, 0),
    "ism": (["model.cascade_mapping=false", "model.rescoring=false"], 1, 1, 0),
    "rsm": (["model.cascade_mapping=false", "model.iou_scoring=false"], 1, 0, 1),
    "all": ([], 3, 1, 1),
    "ratios_2_2_2": (["model.mapping_ratios=[2,2,2]"], 3, 1, 1),
}


@pytest.mark.slow  # 150 steps of cpm_rcnn_shapes on 4 images: minutes on a quiet 2-core CPU
def test_cpm_rcnn_overfits_four_shapes_images(tmp_path):
    torch.manual_seed(0)
    shapes = generate_shapes(tmp_path, num_train=4, num_val=1, image_size=128, seed=0)
    coco = CocoDataset(shapes.train_json, shapes.train_images)
    batch = collate([TransformedDataset(coco, eval_transforms(128))[i] for i in range(4)])
    model = build_model(get_preset("cpm_rcnn_shapes").model, num_classes=3)
    history = fit(model, batch, steps=150, lr=1e-3, drop_after=120)
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


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_overrides_switch_the_modules_and_train(name):
    overrides, stages, ism, rsm = ABLATIONS[name]
    config = apply_overrides(get_preset("cpm_rcnn_shapes"), overrides)
    model = build_model(config.model, num_classes=3, with_backbone_weights=False)
    heads = model.roi_heads
    assert (len(heads.grids), heads.iou_scorer is not None, heads.rescorer is not None) == (stages, ism, rsm)
    expected_ratios = {"grid_baseline": (2.0,), "ism": (2.0,), "rsm": (2.0,), "ratios_2_2_2": (2.0, 2.0, 2.0)}
    assert heads.mapping_ratios == expected_ratios.get(name, (2.0, 1.5, 1.25))
    torch.manual_seed(0)
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    instances = [Instances(torch.tensor([[8.0, 8.0, 40.0, 48.0]]), torch.tensor([1]), torch.zeros(1, 0, 3))] * 2
    losses = model.train().loss(images, instances)
    assert {f"loss_grid_{j}" for j in range(stages)} <= set(losses) and ("loss_ism" in losses) == bool(ism)
    sum(losses.values()).backward()


def test_cpm_rcnn_trains_and_evaluates_on_coco_train_mini():
    """Six steps of ``cpm_rcnn_shapes`` (80 classes, anchors 16-256) on two keep-ratio real photos at <= 256 px,
    then COCO evaluation of four photos with the flip test and soft-NMS through pycocotools."""
    root = shared_data("coco_train_mini")
    torch.manual_seed(0)
    annotations = root / "annotations" / "instances_train.json"
    train = CocoDataset(annotations, root / "images")
    data = DataConfig(
        resize="keep_ratio", min_size=(224,), max_size=256, test_resize="keep_ratio", test_min_size=224,
        color_jitter=0.0, lighting=0.0, num_workers=0,
    )  # fmt: skip
    preset = get_preset("cpm_rcnn_shapes")
    model_config = replace(preset.model, anchor_sizes=(16, 32, 64, 128, 256), soft_nms=True)
    config = replace(preset, model=model_config, data=data, optim=replace(preset.optim, batch_size=2), device="cpu")
    batch = next(iter(train_loader(train, config)[0]))
    model = build_model(model_config, len(train.class_names))
    history = fit(model, batch, steps=6)
    assert all(map(math.isfinite, history)) and history[-1] < history[0], history
    subset = torch.utils.data.Subset(eval_loader(train, data, 4, 0).dataset, range(4))
    loader = torch.utils.data.DataLoader(subset, batch_size=4, collate_fn=collate)
    metrics = evaluate_detector(model, loader, train, flip=True)
    assert {"AP", "AP50", "APs"} <= set(metrics) and 0.0 <= metrics["AP"] <= 1.0


def test_decode_options_switch_at_eval_and_architecture_keys_do_not():
    config = get_preset("cpm_rcnn_shapes")
    changed = apply_eval_overrides(
        config, ["model.gamma=1.0", "model.nms_iou=0.5", "model.score_threshold=0.1", "model.soft_nms=true"]
    )
    postprocess = build_model(changed.model, 3, with_backbone_weights=False).postprocess
    assert postprocess == CPMPostprocess(score_threshold=0.1, nms_iou=0.5, max_grid_rois=32, gamma=1.0, soft_nms=True)
    assert build_model(config.model, 3, with_backbone_weights=False).roi_heads.max_grid_rois == 8  # training
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
