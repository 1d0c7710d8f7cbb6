"""``model.roi_classifier``: the region classifier that re-scores RepPoints' classes (``RoIReclassifier``), its
training RoIs and loss, its re-scoring by hand, its config and an overfit of RepPoints v2 with it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pointdet.configs import ConfigError, ExperimentConfig, RepPointsV2Config, apply_overrides, get_preset
from pointdet.configs.overrides import config_from_dict, config_to_dict
from pointdet.models.build import build_model
from pointdet.models.roi_heads.reclassify import RoIReclassifier
from pointdet.structures import Detections, Instances

from .helpers import overfit_four_shapes, p3_p7_features

LEVELS = ("p3", "p4", "p5", "p6", "p7")


def _reclassifier(**kwargs) -> RoIReclassifier:
    torch.manual_seed(0)
    return RoIReclassifier(LEVELS, 32, 3, hidden=64, **kwargs)


def test_loss_is_the_cross_entropy_of_every_roi_with_its_matched_class():
    head = _reclassifier()  # 512 RoIs a quarter foreground: these few are all drawn
    features = p3_p7_features(1, 32)
    gt = Instances(torch.tensor([[8.0, 8, 40, 48], [60, 10, 100, 30]]), torch.tensor([2, 0]), torch.zeros(2, 0, 3))
    proposals = torch.tensor([[9.0, 9, 41, 46], [70, 70, 90, 90], [62, 12, 96, 30], [8, 8, 20, 20]])
    # IoU >= 0.5 with a ground truth: its class + 1; else background (0); the ground truths are appended.
    expected = torch.tensor([3, 0, 1, 0, 3, 1])
    loss = head.loss(features, [proposals], [gt])["loss_roi_cls"]
    logits = head(features, [torch.cat([proposals, gt.boxes])])
    torch.testing.assert_close(loss, F.cross_entropy(logits, expected))


def test_loss_trains_the_features_and_is_zero_without_rois():
    head = _reclassifier()
    features = [f.requires_grad_() for f in p3_p7_features(2, 32)]
    gt = Instances(torch.tensor([[8.0, 8, 40, 48]]), torch.tensor([1]), torch.zeros(1, 0, 3))
    loss = head.loss(features, [torch.tensor([[10.0, 10, 30, 30]]), torch.zeros(0, 4)], [gt, Instances.empty()])
    loss["loss_roi_cls"].backward()
    assert features[0].grad.abs().sum() > 0  # P3 holds these boxes: the loss reaches the FPN
    assert all(p.grad is not None for p in head.parameters())
    empty = head.loss(features, [torch.zeros(0, 4)], [Instances.empty()])["loss_roi_cls"]
    assert empty.item() == 0.0 and empty.requires_grad


def test_predict_scores_each_box_under_every_class_then_class_wise_nms():
    head = _reclassifier(nms_iou=0.5)
    with torch.no_grad():  # every box gets p = (background 0.19, 0.64, 0.16, 0.01): square roots 0.8, 0.4, 0.1
        head.classifier.predictor.weight.zero_()
        head.classifier.predictor.bias.copy_(torch.tensor([0.19, 0.64, 0.16, 0.01]).log())
    box, other, third = [10.0, 10, 50, 50], [60.0, 60, 90, 90], [0.0, 60, 30, 90]
    detections = Detections(
        torch.tensor([box, box, other, third]), torch.tensor([0.9, 0.5, 0.08, 0.06]), torch.tensor([0, 2, 1, 0])
    )
    (rescored,) = head.predict(p3_p7_features(1, 32), [detections])
    # score x sqrt(p): 0.9 x (0.8, 0.4, 0.1); 0.5 x sqrt(p) suppressed by the same box's better score of each class;
    # then the best of the other boxes' pairs, 0.08 x 0.8 (no threshold), up to the four detections there were.
    torch.testing.assert_close(rescored.scores, torch.tensor([0.72, 0.36, 0.09, 0.064]))
    assert rescored.labels.tolist() == [0, 1, 2, 0]
    torch.testing.assert_close(rescored.boxes, torch.tensor([box] * 3 + [other]))


def test_proposals_are_the_boxes_of_the_best_priors():
    config = RepPointsV2Config(backbone="resnet18", channels=32, roi_classifier=True)
    model = build_model(config, num_classes=3, with_backbone_weights=False).eval()
    torch.manual_seed(0)
    outputs = model(model.preprocess(torch.randint(0, 255, (2, 3, 64, 96), dtype=torch.uint8)))
    proposals = model.postprocess.proposals(outputs, num_proposals=7)
    boxes = model.postprocess.boxes(outputs, torch.tensor([[64.0, 96.0]] * 2))
    best = model.postprocess.probabilities(outputs).amax(dim=-1)
    for b, image_proposals in enumerate(proposals):
        assert image_proposals.shape == (7, 4)
        chosen = best[b].topk(7).indices
        torch.testing.assert_close(image_proposals, boxes[b, chosen])


def test_config_key_builds_the_second_stage_and_its_refusals():
    official = get_preset("reppoints_v2_r50_fpn")
    assert official.model.roi_classifier is False
    config = apply_overrides(official, ["model.roi_classifier=true", "model.roi_hidden=32", "model.roi_batch=16"])
    model = build_model(config.model, num_classes=4, with_backbone_weights=False)
    assert isinstance(model.roi_heads, RoIReclassifier)
    assert model.roi_heads.classifier.predictor.out_features == 5 and model.roi_heads.sampler.batch_size_per_image == 16
    assert build_model(official.model, num_classes=4, with_backbone_weights=False).roi_heads is None
    with pytest.raises(ConfigError, match="model.roi_classifier"):
        apply_overrides(official, ["model.roi_classifier=always"])
    with pytest.raises(ConfigError, match="no region classifier"):
        apply_overrides(get_preset("dense_reppoints_v2_shapes"), ["model.roi_classifier=true"])


def test_main_job_takes_the_region_classifier_on_multi_class_data_only():
    main_job = get_preset("reppoints_v2_effl0_raccoon")
    assert main_job.model.roi_classifier == "multi_class"
    model_config = config_from_dict(ExperimentConfig, config_to_dict(main_job)).model  # a run folder's round trip
    assert model_config == main_job.model
    with_classes = build_model(model_config, num_classes=7, with_backbone_weights=False)
    assert isinstance(with_classes.roi_heads, RoIReclassifier)
    assert build_model(model_config, num_classes=1, with_backbone_weights=False).roi_heads is None  # raccoons
    off = apply_overrides(main_job, ["model.roi_classifier=false"]).model
    assert build_model(off, num_classes=7, with_backbone_weights=False).roi_heads is None


@pytest.mark.slow  # 300 steps: about 2 minutes on an idle 2-core CPU
def test_reppoints_v2_with_the_region_classifier_overfits_four_shapes_images(tmp_path):
    config = RepPointsV2Config(
        backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False, cls_branch="dense", roi_classifier=True,
        roi_batch=64, roi_hidden=256,
    )  # fmt: skip
    history, metrics = overfit_four_shapes(config, tmp_path, steps=300)
    assert history[-1] < 0.2 * history[0], history[::10]
    assert metrics["AP"] >= 0.95, metrics  # three classes, read by the region classifier
    assert not math.isnan(history[-1])
