"""RepPoints v2 end to end: overfitting four images (with and without joint inference), the presets and their
config family, eval-time switching of joint inference, predict / load, and the ONNX export."""

from __future__ import annotations

import pytest
import torch

from pointdet.configs import ConfigError, RepPointsV2Config, apply_eval_overrides, apply_overrides, get_preset
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset, collate
from pointdet.data.shapes import generate_shapes
from pointdet.data.transforms import eval_transforms
from pointdet.decoders.reppoints_v2 import RepPointsV2Postprocess
from pointdet.engine.inference import predict_images, to_original_pixels
from pointdet.evaluation import detections_to_coco, evaluate_coco
from pointdet.models.build import build_model
from pointdet.models.heads.reppoints_v2 import RepPointsV2Head

from .helpers import fit

SMALL = RepPointsV2Config(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False)


@pytest.mark.slow  # 300 steps: about 1.5 minutes on an idle 2-core CPU, far longer on a shared one
def test_reppoints_v2_overfits_four_shapes_images_with_and_without_joint_inference(tmp_path):
    torch.manual_seed(0)
    shapes = generate_shapes(tmp_path, num_train=4, num_val=1, image_size=128, seed=0)
    coco = CocoDataset(shapes.train_json, shapes.train_images)
    batch = collate([TransformedDataset(coco, eval_transforms(128))[i] for i in range(4)])
    model = build_model(SMALL, num_classes=3)
    history = fit(model, batch, steps=300, lr=1e-3, drop_after=250)
    assert history[-1] < 0.2 * history[0], history[::10]
    model.eval()
    for joint in (True, False):
        model.postprocess.joint_inference = joint
        detections = to_original_pixels(predict_images(model, batch.images), batch.scales, batch.orig_sizes)
        metrics = evaluate_coco(shapes.train_json, detections_to_coco(detections, batch.image_ids, coco.category_ids))
        assert metrics["AP"] >= 0.95, (joint, metrics)


def test_presets_build_the_v2_family_with_the_recipes_settings():
    one_x, two_x, cpu = (
        get_preset(n) for n in ("reppoints_v2_r50_fpn", "reppoints_v2_r50_fpn_2x_ms", "reppoints_v2_shapes")
    )
    for config in (one_x, two_x, cpu):
        model = config.model
        assert isinstance(model, RepPointsV2Config) and model.method == "reppoints_v2"
        assert (model.transform, model.box_loss, model.refine_assigner, model.nms_iou) == (
            "corner_minmax",
            "giou",
            "atss",
            0.6,
        )
        assert (model.heatmap_weight, model.corner_offset_weight, model.foreground_weight) == (0.25, 1.0, 0.1)
        assert model.joint_inference
    assert one_x.optim.epochs == 12 and one_x.optim.lr_steps == (8, 11) and one_x.model.backbone == "resnet50"
    assert two_x.optim.epochs == 24 and two_x.optim.lr_steps == (16, 22) and two_x.data.min_size == (480, 960)
    shapes_job = get_preset("reppoints_lite0_shapes")
    assert cpu.model.backbone == shapes_job.model.backbone and cpu.model.channels == shapes_job.model.channels
    assert cpu.data == shapes_job.data and cpu.optim == shapes_job.optim
    model = build_model(cpu.model, num_classes=3, with_backbone_weights=False)
    assert isinstance(model.head, RepPointsV2Head) and isinstance(model.postprocess, RepPointsV2Postprocess)
    assert model.postprocess.nms_iou == 0.6 and model.postprocess.transform == "corner_minmax"


def test_joint_inference_switches_at_eval_and_architecture_keys_do_not():
    config = get_preset("reppoints_v2_shapes")
    off = apply_eval_overrides(config, ["model.joint_inference=false", "model.nms_iou=0.5"])
    assert not off.model.joint_inference and off.model.nms_iou == 0.5
    assert not build_model(off.model, 3, with_backbone_weights=False).postprocess.joint_inference
    with pytest.raises(ConfigError, match="model.foreground_weight: fixed by the checkpoint"):
        apply_eval_overrides(config, ["model.foreground_weight=1.0"])
    with pytest.raises(ConfigError, match="foreground_weight"):
        apply_overrides(config, ["model.foreground_weight=-1"])
    switched = apply_overrides(
        get_preset("reppoints_shapes"), ["model.method=reppoints_v2", "model.foreground_weight=1"]
    )
    assert isinstance(switched.model, RepPointsV2Config) and switched.model.foreground_weight == 1.0
    with pytest.raises(ConfigError, match="'model.joint_inference' for method=reppoints"):
        apply_overrides(get_preset("reppoints_shapes"), ["model.joint_inference=false"])


def test_cli_reppoints_v2_train_eval_without_joint_inference_predict_and_load(tiny_shapes, tmp_path, capsys):
    import pointdet

    from .helpers import cli_train_eval_predict

    run, image = cli_train_eval_predict(
        "reppoints_v2_shapes", tiny_shapes, tmp_path, capsys, "model.joint_inference=false"
    )
    predictor = pointdet.load(run, device="cpu")
    assert isinstance(predictor.model.head, RepPointsV2Head) and predictor.model.postprocess.joint_inference
    predictor.model.postprocess.score_threshold = 0.0
    (detections,) = predictor.predict(image, flip=True)
    assert detections.boxes.shape[1:] == (4,) and 0 < len(detections) <= 100


def test_export_refuses_reppoints_v2_naming_the_corner_pooling(tmp_path):
    from pointdet.export import export_onnx

    model = build_model(SMALL, 3, with_backbone_weights=False)
    with pytest.raises(ValueError, match=r"corner pooling .*torch\.cummax, which has no ONNX operator"):
        export_onnx(model, tmp_path / "m.onnx", 64, 64)
