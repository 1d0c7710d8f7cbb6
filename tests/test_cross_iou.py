"""Cross-IoU loss (LSNet §3.3, App. A; METHODS.md §1.7): encodings, hand-computed values, gradients."""

import math

import pytest
import torch

from pointdet.configs import ConfigError, LSNetConfig
from pointdet.losses.cross_iou import (
    box_penalty,
    cross_components,
    cross_iou,
    cross_iou_loss,
    decode_components,
    signed_offset_l1,
    softened_targets,
)
from pointdet.models.build import build_model
from pointdet.targets.lsnet_tasks import ExtremePoints


def test_softened_targets_of_one_landmark():
    # (dx, dy) = (3, -2): up 2 and right 3 -> top 2, bottom 0.2 * 2, left 0.2 * 3, right 3.
    target = softened_targets(torch.tensor([[[3.0, -2.0]]]))
    assert target.flatten().tolist() == pytest.approx([2.0, 0.4, 0.6, 3.0])
    assert cross_components(torch.tensor([[0.0, 5.0]])).tolist() == [[0.0, 5.0, 0.0, 0.0]]


def test_decoding_recovers_the_sign_in_all_four_quadrants():
    offsets = torch.tensor([[[3.0, -2.0], [-1.5, -4.0], [-2.0, 7.0], [5.0, 1.0], [0.0, 2.0]]])
    assert torch.equal(decode_components(softened_targets(offsets)), offsets)


def test_one_landmark_hand_computed():
    target = softened_targets(torch.tensor([[[3.0, -2.0]]]))  # [2, 0.4, 0.6, 3]
    pred = torch.ones(1, 1, 4)
    # sum of minima 1 + 0.4 + 0.6 + 1 = 3, of maxima 2 + 1 + 1 + 3 = 7
    assert cross_iou(pred, target).item() == pytest.approx(3 / 7)
    assert cross_iou_loss(pred, target).item() == pytest.approx(4 / 7)


def test_two_landmarks_hand_computed_per_aggregation():
    target = softened_targets(torch.tensor([[[3.0, -2.0], [0.0, 5.0]]]))  # [2, .4, .6, 3], [1, 5, 0, 0]
    pred = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 4.0, 1.0, 0.0]]])
    # second landmark: minima 0 + 4 = 4, maxima 1 + 5 + 1 = 7
    assert cross_iou(pred, target, "bbox").item() == pytest.approx((3 + 4) / (7 + 7))
    assert cross_iou(pred, target, "vector").item() == pytest.approx((3 / 7 + 4 / 7) / 2)
    # 2 interleaved groups of 1 vector each, averaged: the same as per vector here
    assert cross_iou(pred, target, "polygon", groups=2).item() == pytest.approx((3 / 7 + 4 / 7) / 2)
    # keypoint: one ratio per vector-axis: y (1.4/3, 4/6), x (1.6/4, 0/1); the first vector invisible -> 0
    per_axis = [1.4 / 3, 1.6 / 4, 4 / 6, 0.0]
    assert cross_iou(pred, target, "keypoint").item() == pytest.approx(sum(per_axis) / 4)
    hidden = cross_iou(pred, target, "keypoint", visible=torch.zeros(1, 1)).item()
    assert hidden == pytest.approx((4 / 6 + 0.0) / 4)


def test_perfect_prediction_costs_zero_with_and_without_the_penalty():
    offsets = torch.randn(3, 5, 2) * 4
    target = softened_targets(offsets)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 2.0]]).repeat(3, 1)
    for aggregation in ("bbox", "polygon", "keypoint", "vector"):
        assert cross_iou_loss(target, target, aggregation).abs().max().item() < 1e-6
    assert cross_iou_loss(target, target, "bbox", boxes, boxes).abs().max().item() < 1e-6


def test_box_penalty_hand_computed():
    # same shape, centres 1 apart; enclosing box 3 x 2: rho² / c² = 1 / 13, no aspect term
    pred, gt = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    assert box_penalty(torch.tensor([0.5]), pred, gt).item() == pytest.approx(1 / 13, rel=1e-5)
    # same centre, square vs 2:1: v = 4/pi² (atan 2 - atan 1)², term v² / (1 - cIoU + v); c² = 4 + 4
    pred, gt = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[-1.0, 0.5, 3.0, 1.5]])
    v = 4 / math.pi**2 * (math.atan(4.0) - math.atan(1.0)) ** 2
    expected = 0 / 20 + v**2 / (1 - 0.5 + v)
    assert box_penalty(torch.tensor([0.5]), pred, gt).item() == pytest.approx(expected, rel=1e-4)


def test_wrong_side_prediction_still_gets_a_gradient():
    # The GT points right; a prediction all on the left side has zero overlap without softening, but the softened
    # target gives the left component a share, so the loss has a gradient toward the right component.
    target = softened_targets(torch.tensor([[[4.0, 0.0]]]))
    pred = torch.tensor([[[0.0, 0.0, 3.0, 0.0]]], requires_grad=True)
    cross_iou_loss(pred, target).sum().backward()
    assert pred.grad[0, 0, 3] < 0  # raising the right component lowers the loss


@pytest.mark.parametrize("aggregation", ["bbox", "polygon", "keypoint", "vector"])
def test_cross_iou_loss_gradcheck(aggregation):
    torch.manual_seed(0)
    pred = (torch.rand(3, 10, 4, dtype=torch.float64) + 0.1).requires_grad_()
    target = softened_targets(torch.randn(3, 10, 2, dtype=torch.float64) * 3)
    visible = torch.tensor([[1.0] * 9, [0.0] * 9, [1.0, 0.0] * 4 + [2.0]], dtype=torch.float64)
    pred_boxes = torch.tensor([[0.0, 0.0, 3.0, 2.0], [1.0, 1.0, 4.0, 5.0], [-2.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    pred_boxes.requires_grad_()
    gt_boxes = torch.tensor([[0.5, 0.0, 3.0, 3.0], [1.0, 0.0, 3.0, 4.0], [-1.0, -1.0, 1.0, 2.0]], dtype=torch.float64)
    if aggregation == "keypoint":
        assert torch.autograd.gradcheck(lambda p: cross_iou_loss(p, target, aggregation, visible=visible), (pred,))
    else:
        function = lambda p, b: cross_iou_loss(p, target, aggregation, b, gt_boxes, groups=3)  # noqa: E731
        assert torch.autograd.gradcheck(function, (pred, pred_boxes))


def test_vector_aggregation_with_invisible_vectors_hand_computed():
    target = softened_targets(torch.tensor([[[3.0, -2.0], [0.0, 5.0]]]))  # [2, .4, .6, 3], [1, 5, 0, 0]
    pred = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 4.0, 1.0, 0.0]]])
    # the first vector invisible counts 0, the last (the centre) is always kept; divided by the 2 ratios
    hidden = cross_iou(pred, target, "vector", visible=torch.zeros(1, 1)).item()
    assert hidden == pytest.approx((0.0 + 4 / 7) / 2)
    assert cross_iou(pred, target, "vector", visible=torch.ones(1, 1)).item() == pytest.approx((3 / 7 + 4 / 7) / 2)


def test_a_zero_offset_axis_has_no_keypoint_gradient_but_a_vector_one():
    """A keypoint straight above the anchor (dx = 0, dy = -10: target [10, 2, 0, 0]) predicted with its y components
    right and both x components 3 (the hedge between left and right): the ``keypoint`` aggregation's x ratio is
    0 / 6 = 0 whatever the x components, so they get no gradient and keep decoding 3 px off; the ``vector`` ratio
    (10 + 2) / (10 + 2 + 3 + 3) = 2 / 3 pulls each down with d loss / d p = 12 / 18² = 1 / 27."""
    target = softened_targets(torch.tensor([[[0.0, -10.0]]]))
    for aggregation, loss_value, x_gradient in (("keypoint", 0.5, 0.0), ("vector", 1 / 3, 1 / 27)):
        pred = torch.tensor([[[10.0, 2.0, 3.0, 3.0]]], dtype=torch.float64, requires_grad=True)
        loss = cross_iou_loss(pred, target.double(), aggregation)
        loss.sum().backward()
        assert loss.item() == pytest.approx(loss_value)
        assert pred.grad[0, 0, 2:].tolist() == pytest.approx([x_gradient, x_gradient])


def test_vector_aggregation_with_visibility_gradcheck():
    torch.manual_seed(0)
    pred = (torch.rand(3, 10, 4, dtype=torch.float64) + 0.1).requires_grad_()
    target = softened_targets(torch.randn(3, 10, 2, dtype=torch.float64) * 3)
    visible = torch.tensor([[1.0] * 9, [0.0] * 9, [1.0, 0.0] * 4 + [2.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: cross_iou_loss(p, target, "vector", visible=visible), (pred,))


def test_signed_offset_l1_hand_computed():
    # pred [top 1, bottom 0, left 2, right 5] holds (3, -1); GT (4, 1) softened: [.2, 1, .8, 4] holds (3.2, .8);
    # pred 0 against GT (0, 3): [.6, 3, 0, 0] holds (0, 2.4). Errors .2, 1.8, 0, 2.4 over 4 terms, scale 3.
    pred = torch.tensor([[[1.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 0.0]]])
    target = softened_targets(torch.tensor([[[4.0, 1.0], [0.0, 3.0]]]))
    assert signed_offset_l1(pred, target, torch.tensor([3.0])).item() == pytest.approx((0.2 + 1.8 + 0 + 2.4) / 4 / 3)
    # the first vector invisible counts 0, the sum still divided by all 4 per-axis terms (as the keypoint ratios)
    hidden = signed_offset_l1(pred, target, torch.tensor([3.0]), visible=torch.zeros(1, 1)).item()
    assert hidden == pytest.approx((0 + 2.4) / 4 / 3)
    # the optimum is the cross-IoU's: the softened target itself, which decodes to the GT offsets
    assert signed_offset_l1(target, target, torch.tensor([3.0])).item() == 0
    torch.testing.assert_close(decode_components(target), torch.tensor([[[4.0, 1.0], [0.0, 3.0]]]))


def test_a_wrong_side_prediction_gets_a_small_cross_iou_gradient_but_a_full_l1_one():
    """GT dx = -8 (target left 8, right 1.6) predicted confidently right (left 1, right 10): the x ratio is
    (1 + 1.6) / (8 + 10) and its gradient on the wrong-side right component only low / high² = 2.6 / 324 (over the
    2 ratios), against the L1 term's 1 / scale on both x components (over its 2 terms)."""
    offsets = torch.tensor([[[-8.0, 0.0]]], dtype=torch.float64)
    pred = torch.tensor([[[0.0, 0.0, 1.0, 10.0]]], dtype=torch.float64, requires_grad=True)
    cross_iou_loss(pred, softened_targets(offsets), "keypoint").sum().backward()
    assert pred.grad[0, 0, 3].item() == pytest.approx(2.6 / 18**2 / 2)
    pred.grad = None
    signed_offset_l1(pred, softened_targets(offsets), torch.tensor([4.0], dtype=torch.float64)).sum().backward()
    assert pred.grad[0, 0, 2:].tolist() == pytest.approx([-1 / 4 / 2, 1 / 4 / 2])


def test_signed_offset_l1_gradcheck():
    torch.manual_seed(0)
    pred = (torch.rand(3, 10, 4, dtype=torch.float64) * 5 + 0.1).requires_grad_()
    target = softened_targets(torch.randn(3, 10, 2, dtype=torch.float64) * 3)
    scale = torch.tensor([2.0, 5.0, 9.0], dtype=torch.float64)
    visible = torch.tensor([[1.0] * 9, [0.0] * 9, [1.0, 0.0] * 4 + [2.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: signed_offset_l1(p, target, scale, visible), (pred,))


def _extreme_point_sample(dtype=torch.float32):
    """One positive at the origin: GT top (1, -4), left (-3, 0), bottom (0, 2), right (5, 1), centre (1, -1)."""
    gt = torch.tensor([[[1.0, -4.0], [-3.0, 0.0], [0.0, 2.0], [5.0, 1.0], [1.0, -1.0]]], dtype=dtype)
    return gt, torch.zeros(1, 1, 2, dtype=dtype), torch.tensor([[-3.0, -4.0, 5.0, 2.0]], dtype=dtype)


def test_detection_cross_iou_forms_hand_computed():
    """Softened targets (alpha 0.2) [top, bottom, left, right]: top [4, .8, .2, 1], left [0, 0, 3, .6], bottom
    [.4, 2, 0, 0], right [.2, 1, 1, 5], centre [1, .2, .2, 1]; against a prediction of ones the per-vector sums of
    minima / maxima are 3/7, 1.6/6, 1.4/5, 3.2/8 and 2.4/4. The code's ``bbox``: one ratio 11.6 / 30; the paper's
    eq. 1 (``vector``): the mean of the 4 extreme points' ratios."""
    gt, anchors, boxes = _extreme_point_sample()
    pred = torch.ones(1, 5, 4)
    code = ExtremePoints().landmark_loss(pred, gt, anchors, boxes, box_penalty=False)
    paper = ExtremePoints("vector").landmark_loss(pred, gt, anchors, boxes, box_penalty=False)
    assert code.item() == pytest.approx(1 - 11.6 / 30)
    assert paper.item() == pytest.approx(1 - (3 / 7 + 1.6 / 6 + 1.4 / 5 + 3.2 / 8) / 4)
    perfect = softened_targets(gt)
    assert ExtremePoints("vector").landmark_loss(perfect, gt, anchors, boxes, box_penalty=True).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_the_paper_form_leaves_the_centre_vector_out_of_the_loss():
    gt, anchors, boxes = _extreme_point_sample()
    pred = torch.rand(1, 5, 4, generator=torch.Generator().manual_seed(0)).add(0.1).requires_grad_()
    ExtremePoints("vector").landmark_loss(pred, gt, anchors, boxes, box_penalty=False).sum().backward()
    assert torch.equal(pred.grad[0, 4], torch.zeros(4)) and pred.grad[0, :4].abs().sum() > 0


@pytest.mark.parametrize("box_penalty", [False, True])
def test_detection_paper_form_gradcheck(box_penalty):
    gt, anchors, boxes = _extreme_point_sample(torch.float64)
    pred = torch.rand(1, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).add(0.1)
    loss = ExtremePoints("vector").landmark_loss
    assert torch.autograd.gradcheck(lambda p: loss(p, gt, anchors, boxes, box_penalty), (pred.requires_grad_(),))


def test_the_config_selects_the_detection_form_for_detection_only():
    config = LSNetConfig(backbone="resnet18", detection_aggregation="vector", tower="conv", channels=64)
    model = build_model(config, 3, with_backbone_weights=False)
    assert model.head.task == ExtremePoints("vector")
    assert LSNetConfig().detection_aggregation == "bbox"  # the code's form stays the default
    with pytest.raises(ConfigError, match="detection_aggregation=vector applies to model.task=detection"):
        LSNetConfig(task="segmentation", detection_aggregation="vector")
