"""RepPoints v2: verification targets on hand-made boxes, the normalised focal loss, the head's dataflow and
losses, and joint inference moving box corners to hand-placed corner-map peaks."""

from __future__ import annotations

import math

import pytest
import torch

from pointdet.decoders.reppoints_v2 import RepPointsV2Postprocess, joint_inference
from pointdet.losses import normalized_focal_loss
from pointdet.models.heads.reppoints import RepPointsHead
from pointdet.models.heads.reppoints_v2 import RepPointsV2Head, RepPointsV2Outputs
from pointdet.ops.gaussian import gaussian_radius
from pointdet.ops.priors import level_points, level_sizes
from pointdet.structures import Instances
from pointdet.targets.reppoints_v2 import build_corner_targets, foreground_image_targets, resize_to_levels

SIZES = [(8, 8), (4, 4), (2, 2), (1, 1)]  # a 64 x 64 input at strides 8..64
STRIDES = (8, 16, 32, 64)


def _instances(boxes, labels) -> Instances:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Instances(boxes, torch.tensor(labels, dtype=torch.long), torch.zeros(len(boxes), 0, 3))


def test_level_sizes_inverts_level_points():
    sizes = [(7, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    priors, strides = level_points(sizes, (8, 16, 32, 64, 128))
    assert level_sizes(priors, strides) == sizes


def test_corner_targets_nearest_location_per_level_offsets_in_stride_units():
    priors, strides = level_points(SIZES[:2], STRIDES[:2])
    targets = build_corner_targets(priors, strides, [_instances([[10, 13, 50, 42]], [0])])
    heatmap, offset = targets.heatmap[0], targets.offset[0]

    def index(x: float, y: float, stride: int) -> int:
        start = 0 if stride == 8 else 64
        width = 8 if stride == 8 else 4
        return start + int(y // stride) * width + int(x // stride)

    # top-left (10, 13): nearest P3 location (8, 16), nearest P4 location (16, 16); bottom-right (50, 42): (48, 40)
    # on P3 and (48, 48) on P4. Offsets are (corner - location) / stride.
    expected = {
        (0, index(8, 16, 8)): (0.25, -0.375),
        (0, index(16, 16, 16)): (-6 / 16, -3 / 16),
        (1, index(48, 40, 8)): (0.25, 0.25),
        (1, index(48, 48, 16)): (2 / 16, -6 / 16),
    }
    for (corner, prior), xy in expected.items():
        assert heatmap[prior, corner] == 1.0
        assert offset[prior, 2 * corner : 2 * corner + 2].tolist() == pytest.approx(xy)
    assert targets.positive[0].sum(dim=0).tolist() == [2, 2]  # one per level and corner
    assert (offset[~targets.positive[0].repeat_interleave(2, dim=1)] == 0).all()


def test_corner_heatmap_negatives_are_the_pixel_gaussian_within_the_radius_max_over_boxes():
    priors, strides = level_points([(16, 16), (8, 8)], STRIDES[:2])
    boxes = [[10, 13, 110, 120], [4, 4, 90, 100], [20, 20, 40, 30]]  # radii about 8, 7 and 2 px
    heatmap = build_corner_targets(priors, strides, [_instances(boxes, [0, 1, 0])]).heatmap[0]
    for corner in range(2):
        for p, (x, y) in enumerate(priors.tolist()):
            if heatmap[p, corner] == 1:
                continue
            expected = 0.0
            for x1, y1, x2, y2 in boxes:
                cx, cy = (x1, y1) if corner == 0 else (x2, y2)
                height, width = torch.tensor([float(y2 - y1)]), torch.tensor([float(x2 - x1)])
                r = float(gaussian_radius(height, width, 0.7, "cornernet"))
                sigma = (2 * r + 1) / 6
                d = math.hypot(x - cx, y - cy)
                if d < r:
                    expected = max(expected, math.exp(-d * d / (2 * sigma * sigma)))
            assert heatmap[p, corner].item() == pytest.approx(expected, abs=1e-6)
    assert (heatmap < 1).sum() > 0 and ((heatmap > 0) & (heatmap < 1)).any()


def test_corner_targets_without_boxes_are_all_negative():
    priors, strides = level_points(SIZES, STRIDES)
    targets = build_corner_targets(priors, strides, [_instances([], [])])
    assert not targets.positive.any() and (targets.heatmap == 0).all()


def test_foreground_is_box_filled_per_class_the_smallest_area_wins_weight_one_over_area():
    boxes = torch.tensor([[16.0, 16, 31, 31], [0, 0, 64, 48], [40, 8, 56, 24]])  # small inside big, class 0
    target, weight = foreground_image_targets(boxes, torch.tensor([0, 0, 1]), 2, (8, 8))
    assert target.shape == weight.shape == (2, 8, 8)
    # class 0: the big box fills rows 0..6 (48 // 8 = 6), all columns; the small one cells 2..3 and wins them
    assert target[0, :7].eq(1).all() and target[0, 7].eq(0).all()
    assert weight[0, 2:4, 2:4].eq(1 / 225).all()
    assert weight[0, 0, 0] == pytest.approx(1 / (64 * 48)) and weight[0, 5, 5] == pytest.approx(1 / (64 * 48))
    # class 1 only where its box is: x 40..56 -> columns 5..7, y 8..24 -> rows 1..3
    assert target[1].nonzero().tolist() == [[r, c] for r in range(1, 4) for c in range(5, 8)]
    assert weight[1, 1, 5] == pytest.approx(1 / 256)
    # the order of the boxes does not matter
    again = foreground_image_targets(boxes.flip(0), torch.tensor([1, 0, 0]), 2, (8, 8))
    assert torch.equal(again[0], target) and torch.equal(again[1], weight)


def test_foreground_maps_are_nearest_resized_to_every_level():
    maps = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    flat = resize_to_levels(maps, SIZES)
    assert flat.shape == (1, 64 + 16 + 4 + 1, 1)
    assert flat[0, 64:80, 0].tolist() == maps[0, 0, ::2, ::2].flatten().tolist()
    assert flat[0, -1, 0] == 0


def test_normalized_focal_loss_matches_its_formula():
    logits = torch.tensor([0.5, -1.0, 2.0, -3.0], dtype=torch.float64)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    weight = torch.tensor([0.2, 0.6, 9.0, 9.0], dtype=torch.float64)
    p = logits.sigmoid()
    positive = -(0.25 * (1 - p[:2]) ** 2 * torch.log(p[:2]) * weight[:2]).sum() / 0.8
    negative = -(0.75 * p[2:] ** 2 * torch.log(1 - p[2:])).sum() / 2
    assert normalized_focal_loss(logits, target, weight, 2).item() == pytest.approx((positive + negative).item())
    no_positive = normalized_focal_loss(logits, torch.zeros_like(target), weight, 1)
    assert torch.isfinite(no_positive) and no_positive > 0


def test_head_dataflow_shapes_priors_and_losses():
    torch.manual_seed(0)
    points = RepPointsHead(32, 3, STRIDES, channels=32, transform="exact_minmax", guide_channels=6)
    head = RepPointsV2Head(points, channels=32)
    features = [torch.randn(2, 32, h, w) for h, w in SIZES]
    outputs = head(features)
    assert isinstance(outputs, RepPointsV2Outputs)
    assert outputs.corner_scores.shape == (2, 85, 2) and outputs.corner_offsets.shape == (2, 85, 4)
    assert outputs.foreground.shape == outputs.scores.shape == (2, 85, 3)
    assert head.points.cls_dcn_weight.shape[1] == head.points.refine_dcn_weight.shape[1] == 32 + 6
    for prob in (outputs.corner_scores.sigmoid().mean(), outputs.foreground.sigmoid().mean()):
        assert prob.item() == pytest.approx(0.01, abs=3e-3)  # the 0.01 prior of every verification logit
    instances = [_instances([[5, 6, 40, 50], [20, 10, 60, 60]], [0, 2]), _instances([], [])]
    losses = head.loss(outputs, instances)
    assert set(losses) == {
        "loss_cls", "loss_box_init", "loss_box_refine", "loss_corner_heatmap", "loss_corner_offset", "loss_foreground"
    }  # fmt: skip
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss_corner_offset"].backward()
    # the corner offsets feed the classifier's DCN: the fusion carries their gradient back to the corner branch
    assert head.corners.offsets[0].weight.grad.abs().sum() > 0
    head.zero_grad()
    outputs = head(features)
    outputs.scores.sum().backward()
    assert head.corners.scores[0].weight.grad.abs().sum() > 0 and head.foreground.embedding[0].weight.grad.abs().sum()


def test_head_refuses_a_points_part_without_the_verification_channels():
    with pytest.raises(ValueError, match="guide_channels=6"):
        RepPointsV2Head(RepPointsHead(32, 3, channels=32), channels=32)


@pytest.mark.parametrize("corners, foreground", [(False, True), (True, False), (False, False)])
def test_each_verification_branch_switches_off_with_its_loss_and_fusion(corners, foreground):
    torch.manual_seed(0)
    points = RepPointsHead(32, 3, STRIDES, channels=32, transform="exact_minmax", guide_channels=6 * corners)
    head = RepPointsV2Head(points, channels=32, corner_verification=corners, foreground_verification=foreground)
    assert (head.corners is not None, head.foreground is not None) == (corners, foreground)
    assert (head.shared is not None) == (corners or foreground)
    outputs = head([torch.randn(2, 32, h, w) for h, w in SIZES])
    assert outputs.corner_scores.shape == (2, 85, 2 * corners) and outputs.corner_offsets.shape == (2, 85, 4 * corners)
    assert outputs.foreground.shape == (2, 85, 3 * foreground)
    losses = head.loss(outputs, [_instances([[5, 6, 40, 50]], [1]), _instances([], [])])
    expected = {"loss_cls", "loss_box_init", "loss_box_refine"}
    expected |= {"loss_corner_heatmap", "loss_corner_offset"} if corners else set()
    expected |= {"loss_foreground"} if foreground else set()
    assert set(losses) == expected
    sum(losses.values()).backward()
    unused = [name for name, p in head.named_parameters() if p.grad is None]
    assert not unused, unused  # every built parameter is trained (DDP needs no find_unused_parameters)


def test_joint_inference_needs_the_corner_branch():
    from pointdet.configs import ConfigError, RepPointsV2Config

    with pytest.raises(ConfigError, match="model.corner_verification=false: set model.joint_inference=false"):
        RepPointsV2Config(corner_verification=False)
    assert not RepPointsV2Config(corner_verification=False, joint_inference=False).corner_verification


def _outputs_with_boxes(boxes: dict[int, list[float]]) -> RepPointsV2Outputs:
    """Outputs over SIZES / STRIDES whose prior ``p`` has refine points giving ``boxes[p]`` (``exact_minmax``),
    every corner logit at -5 and zero corner offsets."""
    priors, strides = level_points(SIZES, STRIDES)
    num = len(priors)
    points = torch.zeros(1, num, 18)
    for prior, box in boxes.items():
        points[0, prior, :4] = torch.tensor(box)
    return RepPointsV2Outputs(
        torch.zeros(1, num, 1),
        points.clone(),
        points,
        priors[None],
        strides[None],
        torch.zeros(1, 2),
        torch.full((1, num, 2), -5.0),
        torch.zeros(1, num, 4),
        torch.zeros(1, num, 1),
    )


def test_joint_inference_moves_box_corners_to_hand_placed_peaks():
    p4, p6 = 64 + 5, 64 + 16 + 4  # a P4 prior and the P6 prior
    p3 = 10
    boxes = {p3: [13.0, 21, 41, 35], p4: [13.0, 21, 41, 35], p6: [3.0, 37, 64, 64]}
    outputs = _outputs_with_boxes(boxes)
    # P3 top-left map: (13, 21) falls in cell (1, 2), window x {1, 2} x y {2, 3}; the peak at (2, 3) wins,
    # a higher peak outside the window does not count.
    outputs.corner_scores[0, 3 * 8 + 2, 0] = 5.0
    outputs.corner_scores[0, 0, 0] = 9.0
    outputs.corner_offsets[0, 3 * 8 + 2, 0:2] = torch.tensor([0.25, -0.5])
    # P3 bottom-right map: (41, 35) in cell (5, 4); the peak at (5, 4) itself.
    outputs.corner_scores[0, 4 * 8 + 5, 1] = 5.0
    outputs.corner_offsets[0, 4 * 8 + 5, 2:4] = torch.tensor([0.5, 0.125])
    # P6 box on the P4 map (stride 16, 4 x 4): top-left (3, 37) in cell (0, 2); bottom-right (64, 64) in cell
    # (4, 4), clamped to (2, 2) so that the window fits: window x {2, 3} x y {2, 3}, peak at (3, 2).
    outputs.corner_scores[0, 64 + 2 * 4 + 1, 0] = 4.0
    outputs.corner_scores[0, 64 + 2 * 4 + 3, 1] = 4.0
    outputs.corner_offsets[0, 64 + 2 * 4 + 3, 2:4] = torch.tensor([0.25, 0.25])
    frame = torch.tensor([[64.0, 64.0]])
    plain = torch.zeros(1, len(outputs.priors[0]), 4)
    plain[0, [p3, p4, p6]] = torch.tensor([boxes[p] for p in (p3, p4, p6)])
    refined = joint_inference(plain, outputs, frame)
    assert refined[0, p3].tolist() == boxes[p3]  # P3 boxes never move
    assert refined[0, p4].tolist() == [18.0, 20.0, 44.0, 33.0]
    assert refined[0, p6].tolist() == [16.0, 32.0, 52.0, 36.0]  # (1+0)*16, (2+0)*16; (3.25*16, 2.25*16)

    decoded = RepPointsV2Postprocess(score_threshold=-1.0, pre_nms=0)
    boxes_on = decoded.boxes(outputs, frame)
    assert boxes_on[0, p4].tolist() == [18.0, 20.0, 44.0, 33.0]
    decoded.joint_inference = False  # the eval-time switch
    assert decoded.boxes(outputs, frame)[0, p4].tolist() == boxes[p4]


def test_joint_inference_clips_the_moved_corners_to_the_image():
    p4 = 64 + 15  # the last P4 prior
    outputs = _outputs_with_boxes({p4: [40.0, 40, 62, 62]})
    outputs.corner_scores[0, 63, 1] = 5.0  # the last P3 location (56, 56), pushed out by its offset
    outputs.corner_offsets[0, 63, 2:4] = torch.tensor([2.0, 2.0])
    boxes = torch.zeros(1, 85, 4)
    boxes[0, p4] = torch.tensor([40.0, 40, 62, 62])
    refined = joint_inference(boxes, outputs, torch.tensor([[64.0, 64.0]]))
    assert refined[0, p4, 2:].tolist() == [64.0, 64.0]


def test_the_papers_corner_loss_weight_is_an_option_beside_the_codes():
    """The paper weights the corner heatmap and offset terms alike by λ1 = 0.25; the code (the default) weights only
    the heatmap so and the offset by 1.0. ``model.corner_offset_weight=0.25`` gives the paper's form."""
    from pointdet.configs import RepPointsV2Config
    from pointdet.models.build import build_model

    paper = build_model(RepPointsV2Config(backbone="resnet18", channels=32, corner_offset_weight=0.25), 3, 0, [],
                        with_backbone_weights=False).head  # fmt: skip
    code = build_model(RepPointsV2Config(backbone="resnet18", channels=32), 3, 0, [], with_backbone_weights=False).head
    assert (code.verification_loss.heatmap_weight, code.verification_loss.corner_offset_weight) == (0.25, 1.0)
    torch.manual_seed(1)
    features = [torch.randn(1, 32, h, w) for h, w in [(8, 8), (4, 4), (2, 2), (2, 2), (2, 2)]]  # GN(32): 2+ cells
    with torch.no_grad():
        outputs = code(features)
    instances = [_instances([[5, 6, 40, 50], [20, 10, 60, 60]], [0, 2])]
    ours, theirs = paper.verification_loss(outputs, instances), code.verification_loss(outputs, instances)
    assert ours["loss_corner_heatmap"] == theirs["loss_corner_heatmap"] > 0
    torch.testing.assert_close(ours["loss_corner_offset"], 0.25 * theirs["loss_corner_offset"])
    assert theirs["loss_corner_offset"] > 0
