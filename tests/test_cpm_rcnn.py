"""CPM R-CNN parts on hand-made inputs: grid targets and the 56x56 sub-region crop, the edge-point decode (perfect
heatmaps return the GT box for every mapping ratio), ISM targets, the fused score (eq. 4), cascade sampling
thresholds, and the detector's losses, gradients and switches."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from pointdet.configs import ConfigError
from pointdet.configs.schema import CPMRCNNConfig
from pointdet.decoders.grid import CPMPostprocess, decode_grid_boxes, fused_score
from pointdet.decoders.tta import mirror
from pointdet.errors import PointdetError
from pointdet.models.build import build_model
from pointdet.models.roi_heads.grid import PointFusion, grid_neighbours
from pointdet.structures import Instances
from pointdet.targets.grid import (
    build_grid_targets,
    crop_subregions,
    expand_boxes,
    grid_points,
    iou_targets,
)
from pointdet.targets.roi_sampling import select_matched_rois

TINY = CPMRCNNConfig(
    backbone="resnet18", channels=32, hidden=64, point_channels=4, anchor_sizes=(8, 16, 32, 64, 128),
    rpn_train_rois=100, rpn_test_rois=50, roi_batch=32, frozen_stages=0, frozen_bn=False,
)  # fmt: skip


def plus_at(row: int, col: int, size: int = 28) -> torch.Tensor:
    expected = torch.zeros(size, size)
    for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        if 0 <= row + dy < size and 0 <= col + dx < size:
            expected[row + dy, col + dx] = 1
    return expected


def test_grid_points_follow_the_column_row_order():
    points = grid_points(torch.tensor([[10.0, 20.0, 30.0, 60.0]]))[0]
    assert points[0].tolist() == [10, 20] and points[2].tolist() == [10, 60] and points[6].tolist() == [30, 20]
    assert points[4].tolist() == [20, 40] and points[8].tolist() == [30, 60]


def test_grid_targets_on_a_hand_made_roi_are_plus_shapes_in_each_points_subregion():
    # RoI 28 px wide at mapping ratio 2: the virtual 56x56 map covers [0, 56) with one pixel per cell. The GT
    # equals the RoI, so its points sit at cells 14, 28, 42, i.e. at (14, 14) inside each point's sub-region.
    roi = torch.tensor([[14.0, 14.0, 42.0, 42.0]])
    targets = build_grid_targets(roi, roi, mapping_ratio=2.0)
    assert targets.shape == (1, 9, 28, 28)
    for point in range(9):
        assert torch.equal(targets[0, point], plus_at(14, 14)), point
    # A smaller GT inside the RoI: point 0 at cell (20, 16) lies in its sub-region (origin 0, 0); point 8 at cell
    # (36, 30) lies in its sub-region (origin 28, 28) at (8, 2): rows are y.
    targets = build_grid_targets(roi, torch.tensor([[20.0, 16.0, 36.0, 30.0]]), mapping_ratio=2.0)
    assert torch.equal(targets[0, 0], plus_at(16, 20))
    assert torch.equal(targets[0, 8], plus_at(2, 8))
    # A GT point outside its own sub-region gives no positive: point 0 at cell (30, 30) is past column 27.
    assert targets.new_tensor(0) == build_grid_targets(roi, torch.tensor([[30.0, 30.0, 50.0, 50.0]]), 2.0)[0, 0].sum()


def test_grid_targets_are_zero_for_rois_too_small_to_expand():
    roi = torch.tensor([[5.0, 5.0, 6.0, 6.0]])  # expanded side 2 px <= 3
    assert build_grid_targets(roi, roi, 2.0).sum() == 0


def test_subregion_crop_takes_each_points_28x28_window_of_the_56x56_map():
    ys, xs = torch.meshgrid(torch.arange(56.0), torch.arange(56.0), indexing="ij")
    virtual = (100 * ys + xs).expand(2, 9, 56, 56)
    crops = crop_subregions(virtual)
    assert crops.shape == (2, 9, 28, 28)
    for point in range(9):
        column, row = point // 3, point % 3
        assert crops[0, point, 0, 0] == 100 * 14 * row + 14 * column
        assert crops[1, point, 27, 27] == 100 * (14 * row + 27) + 14 * column + 27


@pytest.mark.parametrize("mapping_ratio", [2.0, 1.5, 1.25])
def test_perfect_heatmaps_decode_back_to_the_gt_box(mapping_ratio):
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(20, 2, generator=generator) * 100
    gt = torch.cat([gt, gt + 20 + torch.rand(20, 2, generator=generator) * 80], dim=1)
    size = gt[:, 2:] - gt[:, :2]
    jitter = (torch.rand(20, 4, generator=generator) - 0.5) * 0.1 * size.repeat(1, 2)  # RoIs within 5 % of the GT
    rois = gt + jitter
    targets = build_grid_targets(rois, gt, mapping_ratio)
    assert (targets.flatten(2).sum(2) >= 3).all()  # every point has its peak inside its sub-region
    # A perfect heatmap peaks at the GT cell: the plus-shaped target smoothed by a plus kernel (centre 5, arms 2).
    kernel = plus_at(1, 1, 3)[None, None]
    perfect = F.conv2d(targets.reshape(-1, 1, 28, 28), kernel, padding=1).reshape(20, 9, 28, 28)
    boxes = decode_grid_boxes(perfect * 4 - 10, rois, mapping_ratio)
    expanded = expand_boxes(rois, mapping_ratio)
    cell = ((expanded[:, 2:] - expanded[:, :2]) / 56).repeat(1, 2)
    # floor to a cell, decode at its centre: within half a cell of the GT
    assert ((boxes - gt).abs() <= cell / 2 + 1e-4).all(), (boxes - gt).abs().max()


def test_edge_decode_weighs_the_three_points_of_an_edge_by_their_scores():
    rois = torch.tensor([[14.0, 14.0, 42.0, 42.0]])  # one virtual cell per pixel, cell centre at +0.5
    logits = torch.full((1, 9, 28, 28), -20.0)
    # x1 from points 0, 1, 2: peaks at local x 10, 12, 14 with probabilities 0.5, 0.5 and 0.2689 (logit -1)
    for point, x, logit in ((0, 10, 0.0), (1, 12, 0.0), (2, 14, -1.0)):
        logits[0, point, 5, x] = logit
    weights = torch.tensor([0.5, 0.5, torch.sigmoid(torch.tensor(-1.0)).item()])
    expected = (weights * torch.tensor([10.5, 12.5, 14.5])).sum() / weights.sum()
    assert decode_grid_boxes(logits, rois, 2.0)[0, 0].item() == pytest.approx(expected.item(), abs=1e-4)


def test_ism_targets_are_one_minus_iou_and_iou_with_the_best_gt():
    gt = torch.tensor([[0.0, 0.0, 10.0, 20.0], [50.0, 50.0, 60.0, 60.0]])
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [100.0, 100.0, 110.0, 110.0]])
    assert torch.allclose(iou_targets(rois, gt), torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(iou_targets(rois, gt[:0]), torch.tensor([[1.0, 0.0]] * 3))


def test_fused_score_is_eq4_and_each_module_can_be_off():
    cls, ism, rsm = torch.tensor([0.64]), torch.tensor([0.5]), torch.tensor([0.25])
    assert fused_score(cls, ism, rsm, 0.8).item() == pytest.approx((0.64 * 0.5) ** 0.8 * 0.25**0.2)
    assert fused_score(cls, ism, rsm, 0.5).item() == pytest.approx(math.sqrt(0.32 * 0.25))
    assert fused_score(cls, None, rsm, 0.8).item() == pytest.approx(0.64**0.8 * 0.25**0.2)
    assert fused_score(cls, ism, None).item() == pytest.approx(0.32)
    assert fused_score(cls, torch.tensor([1.7]), None).item() == pytest.approx(0.64)  # raw ISM clamped to 1
    assert fused_score(cls, torch.tensor([-0.3]), rsm).item() == 0.0


def roi_with_iou(gt: torch.Tensor, iou: float) -> torch.Tensor:
    """A box sharing the GT's x1, y1, y2 whose IoU with it is ``iou`` (narrower when iou < 1)."""
    x1, y1, x2, y2 = gt.tolist()
    return torch.tensor([x1, y1, x1 + iou * (x2 - x1), y2])


def test_cascade_stages_keep_rois_above_0_5_0_6_0_7_and_append_the_gt():
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    rois = torch.stack([roi_with_iou(gt[0], iou) for iou in (0.45, 0.55, 0.65, 0.75)])
    assert torch.allclose(box_iou(rois, gt)[:, 0], torch.tensor([0.45, 0.55, 0.65, 0.75]))
    first, matched = select_matched_rois(rois, gt, 0.5, append_gt=False, max_rois=96)
    assert torch.equal(first, rois[1:]) and torch.equal(matched, torch.zeros(3, dtype=torch.long))
    second, _ = select_matched_rois(rois, gt, 0.6, append_gt=True, max_rois=96)
    assert torch.equal(second, torch.cat([rois[2:], gt]))
    third, _ = select_matched_rois(rois, gt, 0.7, append_gt=True, max_rois=96)
    assert torch.equal(third, torch.cat([rois[3:], gt]))
    capped, _ = select_matched_rois(rois, gt, 0.5, append_gt=True, max_rois=2)
    assert len(capped) == 2
    none, _ = select_matched_rois(rois, gt[:0], 0.5, append_gt=True, max_rois=96)
    assert none.shape == (0, 4)


def test_point_fusion_adds_each_neighbours_own_depthwise_then_1x1_transfer():
    torch.manual_seed(0)
    channels = 3
    fusion = PointFusion(channels).double()
    base, source = torch.randn(2, 9, channels, 7, 7).double(), torch.randn(2, 9, channels, 7, 7).double()
    depthwise, pointwise = fusion.depthwise, fusion.pointwise
    expected = base.clone()
    edge = 0
    for i, neighbours in enumerate(grid_neighbours()):
        for n in neighbours:
            rows = slice(edge * channels, (edge + 1) * channels)
            moved = F.conv2d(source[:, n], depthwise.weight[rows], depthwise.bias[rows], padding=2, groups=channels)
            expected[:, i] += F.conv2d(moved, pointwise.weight[rows], pointwise.bias[rows])
            edge += 1
    assert edge == 24 and [len(n) for n in grid_neighbours()] == [2, 3, 2, 3, 4, 3, 2, 3, 2]
    torch.testing.assert_close(fusion(base, source), expected)


def make_batch():
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    first = Instances(
        boxes=torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 10.0, 60.0, 60.0]]),
        labels=torch.tensor([0, 2]),
        keypoints=torch.zeros(2, 0, 3),
    )
    empty = Instances(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), keypoints=torch.zeros(0, 0, 3))
    return images, [first, empty]


def test_detector_losses_reach_every_parameter_and_prediction_is_bounded():
    torch.manual_seed(0)
    model = build_model(TINY, num_classes=3, with_backbone_weights=False).train()
    images, instances = make_batch()
    losses = model.loss(images, instances)
    expected = {"loss_rpn_objectness", "loss_rpn_box", "loss_cls", "loss_ism", "loss_rsm"}
    assert set(losses) == expected | {f"loss_grid_{j}" for j in range(3)}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    with pytest.raises(PointdetError, match="eval mode"):
        model.predict(images)
    model.eval()
    detections = model.predict(images, k=10)
    for d in detections:
        assert d.boxes.shape[1:] == (4,) and len(d) <= 10 and (d.scores[:-1] >= d.scores[1:]).all()
        assert (d.boxes[:, 0::2] >= 0).all() and (d.boxes[:, 2:] <= 64).all()


def test_bfloat16_autocast_trains_and_predicts():
    """The grid fusion adds bfloat16 conv outputs onto float32 GroupNorm'd features (index_add needs one dtype)."""
    torch.manual_seed(0)
    model = build_model(replace(TINY, score_threshold=0.0), num_classes=3, with_backbone_weights=False).train()
    images, instances = make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(images, instances)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        model.eval()
        detections = model.predict(images, k=10)
    assert all(0 < len(d) <= 10 and torch.isfinite(d.boxes).all() for d in detections)


def test_flip_test_merges_the_mirrored_passes_detections_mapped_back():
    torch.manual_seed(0)
    model = build_model(replace(TINY, score_threshold=0.0), num_classes=3, with_backbone_weights=False).eval()
    images, _ = make_batch()
    plain, mirrored = model.predict(images, k=20), model.predict(images.flip(-1), k=20)
    for merged, a, b in zip(model.predict(images, flip=True, k=20), plain, mirrored, strict=True):
        expected = model.postprocess.merge_scales([a, mirror(b, 64)], k=20)
        assert len(merged) > 0 and (merged.scores[:-1] >= merged.scores[1:]).all()
        torch.testing.assert_close(merged.boxes, expected.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(merged.scores, expected.scores, atol=1e-5, rtol=0)


def test_soft_nms_decays_the_overlapping_candidate_that_hard_nms_drops():
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 8.0], [20.0, 20.0, 30.0, 30.0]])
    probabilities = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.0, 0.7]])  # background, 2 classes
    hard = CPMPostprocess(nms_iou=0.5)
    boxes, scores, labels = hard.select(rois, probabilities)
    assert scores.tolist() == pytest.approx([0.9, 0.7]) and labels.tolist() == [0, 1]
    soft = replace(hard, soft_nms=True, soft_nms_sigma=0.5)
    boxes, scores, labels = soft.select(rois, probabilities)
    decayed = 0.8 * math.exp(-(0.8**2) / 0.5)  # IoU of the two class-0 boxes = 80 / 100
    assert scores.tolist() == pytest.approx([0.9, 0.7, decayed]) and labels.tolist() == [0, 1, 0]
    torch.testing.assert_close(boxes[2], rois[1])


def test_switches_make_grid_rcnn_plus_from_the_same_code():
    plain = replace(TINY, cascade_mapping=False, iou_scoring=False, rescoring=False)
    model = build_model(plain, num_classes=3, with_backbone_weights=False).train()
    heads = model.roi_heads
    assert len(heads.grids) == 1 and heads.mapping_ratios == (2.0,) and heads.iou_scorer is None
    assert heads.rescorer is None
    images, instances = make_batch()
    assert set(model.loss(images, instances)) == {"loss_rpn_objectness", "loss_rpn_box", "loss_cls", "loss_grid_0"}
    model.eval()
    assert len(model.predict(images)) == 2


def test_config_rejects_mismatched_stage_lists():
    with pytest.raises(ConfigError, match="one entry per cascade stage"):
        CPMRCNNConfig(mapping_ratios=(2.0, 1.5))
    with pytest.raises(ConfigError, match="point_channels"):
        CPMRCNNConfig(point_channels=6)


def official_grid_target(roi: list[float], gt: list[float], mapping_ratio: float) -> torch.Tensor:
    """The official ``prepare_target`` rule for one RoI, written out point by point: the RoI grown by
    ``STAGE_MAPPING_RATIO`` = m - 1 times its half side on every side, the grid point of the GT
    (``factor * x1 + (1 - factor) * x2``), its cell ``int((g - X1) / W * 56)`` on the map of the grown RoI, the plus
    of radius 1 inside [0, 56), then each point's 28x28 sub-region."""
    x1, y1, x2, y2 = roi
    grow = mapping_ratio - 1
    half_w, half_h = grow * (x2 - x1) / 2, grow * (y2 - y1) / 2
    ex1, ey1, ex2, ey2 = x1 - half_w, y1 - half_h, x2 + half_w, y2 + half_h
    virtual = torch.zeros(9, 56, 56)
    for point in range(9):
        factor_x, factor_y = 1 - (point // 3) / 2, 1 - (point % 3) / 2
        cx = int((factor_x * gt[0] + (1 - factor_x) * gt[2] - ex1) / (ex2 - ex1) * 56)
        cy = int((factor_y * gt[1] + (1 - factor_y) * gt[3] - ey1) / (ey2 - ey1) * 56)
        for x in range(cx - 1, cx + 2):
            for y in range(cy - 1, cy + 2):
                if 0 <= x < 56 and 0 <= y < 56 and (x - cx) ** 2 + (y - cy) ** 2 <= 1:
                    virtual[point, y, x] = 1
    return crop_subregions(virtual[None])[0]


def test_grid_target_cells_truncate_toward_zero_as_the_official_int():
    """RoI [10, 20, 90, 100] and GT [-4, 9, 95, 100] at mapping ratio 1.25 (IoU 0.71, a stage-2 sample): the top
    grid points 3 and 6 sit 0.56 cells above the expanded RoI; ``int`` puts them on row 0 (a plus clipped to 4
    pixels), ``floor`` on row -1 (1 pixel)."""
    roi, gt = [10.0, 20.0, 90.0, 100.0], [-4.0, 9.0, 95.0, 100.0]
    assert box_iou(torch.tensor([roi]), torch.tensor([gt])).item() == pytest.approx(0.71, abs=0.005)
    targets = build_grid_targets(torch.tensor([roi]), torch.tensor([gt]), 1.25)[0]
    expected = official_grid_target(roi, gt, 1.25)
    assert torch.equal(targets, expected)
    assert targets[3].sum() == 4 and targets[6].sum() == 4  # floor() kept 1 pixel of each
    assert [targets[point].sum().item() for point in (4, 5, 7, 8)] == [5, 5, 5, 5]


def test_grid_targets_equal_the_official_rule_on_random_rois():
    generator = torch.Generator().manual_seed(7)
    gt = torch.rand(64, 2, generator=generator) * 200 - 50
    gt = torch.cat([gt, gt + 10 + torch.rand(64, 2, generator=generator) * 150], dim=1)
    size = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
    rois = gt + (torch.rand(64, 4, generator=generator) - 0.5) * 0.6 * size
    for ratio in (2.0, 1.5, 1.25):
        targets = build_grid_targets(rois.double(), gt.double(), ratio)
        for index in range(len(rois)):
            expected = official_grid_target(rois[index].double().tolist(), gt[index].double().tolist(), ratio)
            assert torch.equal(targets[index].float(), expected), (ratio, index)


def test_roi_pooler_equals_torchvision_by_default_and_follows_each_codes_level_rule():
    from torchvision.ops import MultiScaleRoIAlign

    from pointdet.models.roi_heads.pooling import RoIPooler, roi_levels

    generator = torch.Generator().manual_seed(0)
    names, (height, width) = ["p2", "p3", "p4", "p5", "p6"], (128, 192)
    maps = [torch.randn(2, 4, height // 2**level, width // 2**level, generator=generator) for level in range(2, 7)]
    corners = torch.rand(2, 60, 2, generator=generator) * torch.tensor([width, height])
    boxes = [torch.cat([c, c + torch.rand(60, 2, generator=generator) ** 2 * 200 + 1], dim=1) for c in corners]
    expected = MultiScaleRoIAlign(names[:4], 7, 2)(dict(zip(names, maps, strict=True)), boxes, [(height, width)] * 2)
    assert torch.equal(RoIPooler(names, 7, 2)(maps, boxes, [(height, width)] * 2), expected)
    # A 111 px square: torchvision and mmdetection put it on P2 (4 + log2(111 / 224) < 3), Detectron's +1 pixel
    # area (a 112 px side, half of 224) on P3.
    square = torch.tensor([[0.0, 0.0, 111.0, 111.0]])
    assert [roi_levels(square, rule).item() for rule in ("torchvision", "mmdet", "detectron")] == [2, 2, 3]
