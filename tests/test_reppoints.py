"""RepPoints v1: head outputs, point-set transforms, point-guided DCN layout, targets, losses, decoder, overfit."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou, generalized_box_iou_loss

from pointdet.decoders.point_sets import points_to_boxes
from pointdet.decoders.reppoints import RepPointsPostprocess, image_frame
from pointdet.losses.box import giou_box_loss, smooth_l1_box_loss
from pointdet.models.heads import RepPointsHead, RepPointsOutputs
from pointdet.models.heads.reppoints import dcn_base_offset
from pointdet.ops.dcn import deform_conv
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.reppoints import build_reppoints_targets

from .helpers import P3_P7_SIZES, p3_p7_features

SIZES = P3_P7_SIZES  # strides 8..128: 96 + 24 + 6 + 2 + 1 = 129 priors
STRIDES = (8, 16, 32, 64, 128)
NUM_PRIORS = 129


def _instances(boxes, labels) -> Instances:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Instances(boxes, torch.tensor(labels, dtype=torch.long), torch.zeros(len(boxes), 0, 3))


def test_forward_shapes_priors_and_point_convention():
    head = RepPointsHead(256, num_classes=3)
    features = p3_p7_features(2, 256)
    outputs = head(features)
    assert isinstance(outputs, RepPointsOutputs)
    assert outputs.scores.shape == (2, NUM_PRIORS, 3)
    assert outputs.points_init.shape == outputs.points_refine.shape == (2, NUM_PRIORS, 18)
    assert outputs.priors.shape == (2, NUM_PRIORS, 2) and outputs.strides.shape == (2, NUM_PRIORS)
    assert outputs.moment_transfer.shape == (2, 2)
    priors, strides = level_points(SIZES, STRIDES)
    assert torch.equal(outputs.priors[1], priors) and torch.equal(outputs.strides[0], strides)
    assert torch.allclose(outputs.scores.sigmoid().mean(), torch.tensor(0.01), atol=2e-3)  # the class prior

    # Init offsets are (dy, dx) in stride units; the outputs are absolute xy pixels: prior + (dx, dy) * stride.
    with torch.no_grad():
        head.init_out.weight.zero_()
        head.init_out.bias.copy_(torch.arange(18, dtype=torch.float32) / 10)
        points = head(features).points_init.view(2, NUM_PRIORS, 9, 2)
    offsets_yx = (torch.arange(18, dtype=torch.float32) / 10).view(9, 2)
    expected = priors[:, None, :] + offsets_yx.flip(-1)[None] * strides[:, None, None]
    assert torch.allclose(points[0], expected, atol=1e-5)


@pytest.mark.parametrize("num_points", [4, 8, 10])
def test_num_points_must_be_an_odd_square(num_points):
    with pytest.raises(ValueError, match="num_points"):
        RepPointsHead(32, 2, channels=32, num_points=num_points)


def test_point_set_transforms_on_hand_made_points():
    points = torch.tensor([[1.0, 2.0], [5.0, -1.0], [3.0, 7.0], [0.0, 0.0], [10.0, 10.0]])
    assert points_to_boxes(points, "minmax").tolist() == [0, -1, 10, 10]
    assert points_to_boxes(points, "partial_minmax").tolist() == [0, -1, 5, 7]
    assert points_to_boxes(points, "exact_minmax").tolist() == [1, 2, 5, -1]  # the pair crosses over in y
    assert points_to_boxes(points, "corner_minmax").tolist() == [1, -1, 5, 2]
    uncrossed = torch.tensor([[1.0, -1.0], [5.0, 2.0], [3.0, 7.0]])
    assert points_to_boxes(uncrossed, "corner_minmax").tolist() == points_to_boxes(uncrossed, "exact_minmax").tolist()

    # moment, transfer 0: mean ± unbiased std. x = (0, 2, 4): 2 ± 2; y = (1, 1, 4): 2 ± sqrt(3).
    points = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]], dtype=torch.float64)
    root3 = math.sqrt(3)
    assert torch.allclose(points_to_boxes(points, "moment"), torch.tensor([0, 2 - root3, 4, 2 + root3]).double())
    zero = torch.zeros(2, dtype=torch.float64)
    assert torch.allclose(points_to_boxes(points, "moment", zero), points_to_boxes(points, "moment"))
    # transfer = (log 2, 0): the half width doubles, the height is unchanged.
    transfer = torch.tensor([math.log(2), 0.0], dtype=torch.float64)
    assert torch.allclose(
        points_to_boxes(points, "moment", transfer), torch.tensor([-2, 2 - root3, 6, 2 + root3]).double()
    )

    # Every transform commutes with points * stride + prior (boxes in stride units -> boxes in pixels).
    points = torch.randn(4, 9, 2, dtype=torch.float64)
    prior, stride = torch.tensor([24.0, 40.0], dtype=torch.float64), 8.0
    for transform in ("minmax", "partial_minmax", "moment", "exact_minmax", "corner_minmax"):
        in_pixels = points_to_boxes(points * stride + prior, transform, transfer)
        assert torch.allclose(in_pixels, points_to_boxes(points, transform, transfer) * stride + prior.repeat(2))
    with pytest.raises(ValueError, match="transform"):
        points_to_boxes(points, "corners")


def test_moment_transfer_gradient_is_scaled_by_moment_mul():
    head = RepPointsHead(32, 2, channels=32)
    head(p3_p7_features(2, 32)).moment_transfer.sum().backward()
    assert torch.allclose(head.moment_transfer.grad, torch.full((2,), 2 * 0.01))


def test_dcn_base_offset_layout_samples_at_the_points():
    base = dcn_base_offset(3)
    assert base.tolist() == [-1, -1, -1, 0, -1, 1, 0, -1, 0, 0, 0, 1, 1, -1, 1, 0, 1, 1]  # (y, x): y repeats
    # Point-guided DCN: offsets = points_yx - base, so kernel sample k reads the feature at prior + point k.
    x = torch.randn(1, 1, 7, 9, dtype=torch.float64)
    points_yx = torch.tensor([[2, -1], [0, 3], [-2, -2], [1, 1], [0, 0], [-1, 2], [3, 0], [2, 2], [-3, 1]])
    offset = (points_yx.reshape(-1).double() - base.double()).view(1, 18, 1, 1).expand(1, 18, 7, 9)
    for k, (dy, dx) in enumerate(points_yx.tolist()):
        weight = torch.zeros(1, 1, 9, dtype=torch.float64)
        weight[0, 0, k] = 1.0
        out = deform_conv(x, offset, weight.view(1, 1, 3, 3), None, padding=1)
        i, j = 3, 4  # an interior location
        assert torch.isclose(out[0, 0, i, j], x[0, 0, i + dy, j + dx])


def test_targets_init_positive_and_refine_assignment_from_hand_placed_init_boxes():
    priors, strides = level_points(SIZES, STRIDES)
    gt = _instances([[16, 16, 48, 48]], [2])
    # 32x32 GT: level trunc((log2(8) + log2(8)) / 2) = 3 (stride 8); centre (32, 32) is cell (4, 4) -> 4*12 + 4.
    init_prior = 52
    candidates = torch.cat([priors, priors], dim=1)  # zero-area init boxes at the priors: IoU 0, negative
    candidates[10] = torch.tensor([18.0, 16, 50, 48])  # IoU 30/34 = 0.88 -> positive
    candidates[20] = torch.tensor([16.0, 16, 48, 30])  # IoU 14/32 = 0.44 -> ignored (between 0.4 and 0.5)
    candidates[30] = torch.tensor([0.0, 0, 16, 16])  # touches the GT corner: IoU 0 -> negative
    targets = build_reppoints_targets(priors, strides, candidates[None], [gt], num_classes=3)

    assert targets.init_positive[0].nonzero().flatten().tolist() == [init_prior]
    assert targets.init_boxes[0, init_prior].tolist() == [16, 16, 48, 48]
    assert targets.refine_positive[0].nonzero().flatten().tolist() == [10]
    assert targets.refine_boxes[0, 10].tolist() == [16, 16, 48, 48]
    assert targets.labels[0, 10] == 2 and (targets.labels[0, torch.arange(NUM_PRIORS) != 10] == 3).all()
    assert (~targets.label_valid[0]).nonzero().flatten().tolist() == [20]

    # ATSS refine: positives lie on the GT's nearest candidates and have their centre inside the GT.
    atss = build_reppoints_targets(priors, strides, candidates[None], [gt], num_classes=3, refine_assigner="atss")
    assert atss.refine_positive[0, 10] and atss.label_valid.all()

    # An image without GT: everything is background and valid, nothing is positive.
    empty = build_reppoints_targets(priors, strides, candidates[None], [Instances.empty()], num_classes=3)
    assert not empty.init_positive.any() and not empty.refine_positive.any()
    assert (empty.labels == 3).all() and empty.label_valid.all()


def test_box_losses_on_hand_values():
    target = torch.tensor([[[16.0, 16, 48, 48], [0, 0, 8, 8]]])
    pred = target.clone()
    pred[0, 0, 2] += 16  # stride 8, scale 4*8 = 32: |d| = 0.5 -> 0.5 - 0.11/2
    positive = torch.tensor([[True, False]])
    scale = torch.tensor([[32.0, 32.0]])
    assert torch.isclose(smooth_l1_box_loss(pred, target, positive, scale, 1.0), torch.tensor(0.5 - 0.055))
    assert torch.isclose(smooth_l1_box_loss(pred, target, positive, scale, 2.0), torch.tensor((0.5 - 0.055) / 2))

    # GIoU equals torchvision's on valid boxes and stays in [0, 2] for inverted ones.
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(50, 2, 2, generator=generator) * 100
    boxes_a = torch.cat([corners[:, 0], corners[:, 0] + 1 + corners[:, 1]], dim=1)
    corners = torch.rand(50, 2, 2, generator=generator) * 100
    boxes_b = torch.cat([corners[:, 0], corners[:, 0] + 1 + corners[:, 1]], dim=1)
    all_positive = torch.ones(50, dtype=torch.bool)
    reference = generalized_box_iou_loss(boxes_a, boxes_b, reduction="sum") / 50
    assert torch.isclose(giou_box_loss(boxes_a, boxes_b, all_positive, 50), reference, rtol=1e-5)
    inverted = boxes_a[:, [2, 3, 0, 1]] * 3
    per_box = torch.stack(
        [giou_box_loss(inverted[i : i + 1], boxes_b[i : i + 1], all_positive[:1], 1) for i in range(50)]
    )
    assert (per_box >= 0).all() and (per_box <= 2).all()


def test_a_crossed_corner_pair_is_a_dead_end_for_exact_minmax_and_learns_with_corner_minmax():
    from pointdet.losses.box import giou_box_loss

    target = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    crossed = torch.tensor([[[6.0, 7.0], [4.0, 3.0]]], requires_grad=True)  # point 0 below-right of point 1
    grads = {}
    for transform in ("exact_minmax", "corner_minmax"):
        crossed.grad = None
        box = points_to_boxes(crossed, transform)
        giou_box_loss(box, target, torch.tensor([True]), 1.0).backward()
        grads[transform] = crossed.grad.abs().sum().item()
    assert grads["exact_minmax"] == 0  # an inverted box inside the GT: no overlap, no area, a constant loss of 1
    assert grads["corner_minmax"] > 0


@pytest.mark.parametrize(
    ("transform", "box_loss", "refine_assigner"),
    [
        ("moment", "smooth_l1", "max_iou"),
        ("minmax", "giou", "atss"),
        ("partial_minmax", "smooth_l1", "atss"),
        ("exact_minmax", "giou", "max_iou"),
        ("corner_minmax", "giou", "atss"),
    ],
)
def test_loss_is_finite_and_reaches_every_parameter(transform, box_loss, refine_assigner):
    head = RepPointsHead(32, 3, channels=32, transform=transform, box_loss=box_loss, refine_assigner=refine_assigner)
    instances = [_instances([[10, 6, 42, 40], [50, 20, 90, 60]], [0, 2]), Instances.empty()]
    losses = head.loss(head(p3_p7_features(2, 32)), instances)
    assert set(losses) == {"loss_cls", "loss_box_init", "loss_box_refine"}
    assert all(torch.isfinite(value) and value.dtype == torch.float32 for value in losses.values())
    sum(losses.values()).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_cls_norm_gn_normalises_the_class_dcn_and_none_keeps_the_official_parameters():
    official = RepPointsHead(32, 3, channels=32)
    assert not any("cls_dcn_norm" in name for name in official.state_dict())  # converters map the official keys
    head = RepPointsHead(32, 3, channels=32, cls_norm="gn")
    norm_keys = [name for name in head.state_dict() if "cls_dcn_norm" in name]
    assert norm_keys == ["cls_dcn_norm.weight", "cls_dcn_norm.bias"]
    # Same weights otherwise: the GN head's logits are the official head's with the class DCN's output group-normed.
    head.load_state_dict(official.state_dict(), strict=False)
    features = p3_p7_features(2, 32)
    hidden: dict[str, list[torch.Tensor]] = {"gn": [], "none": []}
    for name, model in (("gn", head), ("none", official)):
        handle = model.cls_out.register_forward_hook(lambda _, inputs, __, name=name: hidden[name].append(inputs[0]))
        model(features)
        handle.remove()
    # the finest level (8 x 12); the coarse 1 x 1 maps hold one value per group
    hidden_gn, hidden_none = hidden["gn"][0], hidden["none"][0]
    assert not torch.allclose(hidden_gn, hidden_none)
    # Per group of one image, the GN hidden before the ReLU has mean 0 and variance 1: its positive part is about half.
    assert 0.3 < (hidden_gn > 0).float().mean() < 0.7
    instances = [_instances([[10, 6, 42, 40], [50, 20, 90, 60]], [0, 2]), Instances.empty()]
    sum(head.loss(head(features), instances).values()).backward()
    assert head.cls_dcn_norm.weight.grad is not None and torch.isfinite(head.cls_dcn_norm.weight.grad).all()
    with pytest.raises(ValueError, match="cls_norm"):
        RepPointsHead(32, 3, channels=32, cls_norm="bn")


def test_cls_norm_is_off_in_every_preset_and_the_real_photo_v1_preset_takes_the_main_jobs_branch_and_atss():
    from pointdet.configs import apply_overrides, get_preset
    from pointdet.errors import ConfigError

    names = ("reppoints_r50_fpn", "reppoints_v2_r50_fpn", "reppoints_v2_effl0_raccoon", "reppoints_effl0_raccoon")
    for name in names:
        assert get_preset(name).model.cls_norm == "none", name
    v1 = get_preset("reppoints_effl0_raccoon")
    assert (v1.model.cls_branch, v1.model.refine_assigner, v1.optim.lr, v1.optim.epochs) == ("dense", "atss", 1e-3, 16)
    official_branch = apply_overrides(v1, ["model.cls_branch=points", "model.cls_norm=gn"]).model
    assert (official_branch.cls_branch, official_branch.cls_norm) == ("points", "gn")  # the previous preset
    with pytest.raises(ConfigError, match="model.cls_norm"):
        apply_overrides(v1, ["model.cls_norm=bn"])


def test_loss_of_an_all_empty_batch_is_connected_and_box_terms_are_zero():
    head = RepPointsHead(32, 3, channels=32)
    losses = head.loss(head(p3_p7_features(2, 32)), [Instances.empty(), Instances.empty()])
    assert losses["loss_box_init"] == 0 and losses["loss_box_refine"] == 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert all(parameter.grad is not None for parameter in head.parameters())


def test_loss_runs_in_float32_on_bfloat16_outputs():
    head = RepPointsHead(32, 3, channels=32)
    outputs = head(p3_p7_features(2, 32))
    low = outputs._replace(**{name: getattr(outputs, name).bfloat16() for name in ("scores", "points_init")})
    losses = head.loss(low, [_instances([[10, 6, 42, 40]], [1]), Instances.empty()])
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in losses.values())


def _outputs(logit: float = -10.0, num_classes: int = 3) -> RepPointsOutputs:
    """Hand-made outputs of one 64x96 image: every prior scores ``logit`` and its points sit at the prior."""
    priors, strides = level_points(SIZES, STRIDES)
    points = priors.repeat(1, 9)[None].clone()
    return RepPointsOutputs(
        torch.full((1, NUM_PRIORS, num_classes), logit),
        points.clone(),
        points,
        priors[None],
        strides[None],
        torch.zeros(1, 2),
    )


def _outline(box: list[float]) -> torch.Tensor:
    """9 xy points whose mean ± unbiased std (moment, transfer 0) and extent (minmax) are ``box``."""
    unit = torch.tensor([-1.0, 0.0, 1.0])
    grid = torch.stack([unit.repeat(3), unit.repeat_interleave(3)], dim=1)  # (9, 2) xy in {-1, 0, 1}
    x1, y1, x2, y2 = box
    centre, half = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2]), torch.tensor([(x2 - x1) / 2, (y2 - y1) / 2])
    return centre + grid * half / grid.std(dim=0)  # std = half on each axis


def _place(outputs: RepPointsOutputs, prior: int, box: list[float], label: int, logit: float, moment: bool) -> None:
    """Make ``prior`` predict ``box`` (its refine points outline it for ``moment`` or span it for ``minmax``)."""
    if moment:
        points = _outline(box)
    else:
        x1, y1, x2, y2 = box
        xs, ys = torch.linspace(x1, x2, 3), torch.linspace(y1, y2, 3)
        points = torch.stack([xs.repeat(3), ys.repeat_interleave(3)], dim=1)
    outputs.points_refine[0, prior] = points.reshape(-1)
    outputs.scores[0, prior, label] = logit


@pytest.mark.parametrize("transform", ["moment", "minmax"])
def test_decoder_round_trip_recovers_the_box(transform):
    box = [20.0, 12.0, 60.0, 44.0]
    outputs = _outputs()
    _place(outputs, 100, box, label=2, logit=5.0, moment=transform == "moment")
    (detections,) = RepPointsPostprocess(transform)(outputs)
    assert len(detections) == 1 and detections.labels.tolist() == [2]
    assert torch.allclose(detections.boxes, torch.tensor([box]), atol=1e-4)
    assert torch.isclose(detections.scores[0], torch.sigmoid(torch.tensor(5.0)))


def test_decoder_nms_removes_a_duplicate_and_keeps_other_classes():
    box = [20.0, 12.0, 60.0, 44.0]
    outputs = _outputs()
    _place(outputs, 3, box, label=1, logit=4.0, moment=True)
    _place(outputs, 100, [21.0, 12.0, 61.0, 44.0], label=1, logit=2.0, moment=True)  # IoU 0.95, lower score
    _place(outputs, 120, box, label=0, logit=1.0, moment=True)  # another class is not suppressed
    (detections,) = RepPointsPostprocess("moment")(outputs)
    assert detections.labels.tolist() == [1, 0]
    assert torch.allclose(detections.boxes, torch.tensor([box, box]), atol=1e-4)
    assert (detections.scores[:-1] >= detections.scores[1:]).all()
    (top,) = RepPointsPostprocess("moment")(outputs, k=1)
    assert len(top) == 1 and top.labels.tolist() == [1]


def test_decoder_clips_to_the_frame_and_derives_it_from_the_priors():
    outputs = _outputs()
    assert image_frame(outputs.priors[0], outputs.strides[0]) == (64.0, 96.0)
    _place(outputs, 5, [-10.0, -4.0, 120.0, 70.0], label=0, logit=3.0, moment=False)
    (detections,) = RepPointsPostprocess("minmax")(outputs)
    assert detections.boxes.tolist() == [[0.0, 0.0, 96.0, 64.0]]
    (detections,) = RepPointsPostprocess("minmax")(outputs, image_size=(50, 80))
    assert detections.boxes.tolist() == [[0.0, 0.0, 80.0, 50.0]]


def test_decoder_flip_merges_a_mirrored_pass():
    box, width = [20.0, 12.0, 60.0, 44.0], 96.0
    mirrored_box = [width - box[2], box[1], width - box[0], box[3]]
    plain, flipped = _outputs(), _outputs()
    _place(flipped, 40, mirrored_box, label=2, logit=3.0, moment=True)
    postprocess = RepPointsPostprocess("moment")
    (detections,) = postprocess(plain, flipped)
    assert detections.labels.tolist() == [2]
    assert torch.allclose(detections.boxes, torch.tensor([box]), atol=1e-4)

    _place(plain, 70, box, label=2, logit=4.0, moment=True)  # both passes see it: NMS keeps one, the better
    (detections,) = postprocess(plain, flipped)
    assert len(detections) == 1 and torch.allclose(detections.boxes, torch.tensor([box]), atol=1e-4)
    assert torch.isclose(detections.scores[0], torch.sigmoid(torch.tensor(4.0)))


def test_decoder_takes_a_batch_run_with_its_mirror_split_in_two():
    head = RepPointsHead(32, 3, channels=32).eval()
    features = p3_p7_features(1, 32)
    with torch.no_grad():
        both = head([torch.cat([x, x.flip(-1)]) for x in features])
    plain = RepPointsOutputs(*(field[:1] for field in both))
    mirrored = RepPointsOutputs(*(field[1:] for field in both))
    (detections,) = RepPointsPostprocess("moment")(plain, mirrored, k=10)
    assert len(detections) <= 10 and detections.boxes.shape[1:] == (4,)


def test_overfit_two_images():
    """The head alone on fixed random FPN features learns its GT boxes and classes."""
    torch.manual_seed(0)
    head = RepPointsHead(32, 3, channels=32)
    features = p3_p7_features(2, 32, seed=1)
    gt_boxes = [[[12, 8, 44, 40], [50, 20, 90, 60]], [[20, 16, 60, 56]]]
    instances = [_instances(gt_boxes[0], [1, 2]), _instances(gt_boxes[1], [0])]
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(250):
        losses = head.loss(head(features), instances)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        detections = RepPointsPostprocess("moment")(head(features))
    for image, boxes, labels in zip(detections, gt_boxes, ([1, 2], [0]), strict=True):
        top = image[: len(boxes)]
        iou = box_iou(top.boxes, torch.tensor(boxes, dtype=torch.float32))  # (K, M)
        best_iou, best_gt = iou.max(dim=1)
        assert (best_iou > 0.9).all(), iou
        assert sorted(best_gt.tolist()) == list(range(len(boxes)))
        assert top.labels.tolist() == [labels[g] for g in best_gt.tolist()]
