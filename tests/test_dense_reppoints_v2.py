"""Dense RepPoints v2: the Chamfer loss, the contour targets, joint inference's contour points, the mask-from-points
rule, the config family and presets, the CLI end to end, the export refusal and (slow) overfitting four images."""

from __future__ import annotations

import math

import pytest
import torch

from pointdet.configs import ConfigError, DenseRepPointsV2Config, apply_eval_overrides, apply_overrides, get_preset
from pointdet.decoders.dense_reppoints_v2 import DenseRepPointsV2Postprocess, contour_points, mask_scores
from pointdet.losses import chamfer_distance
from pointdet.models.build import build_model
from pointdet.models.heads.dense_reppoints_v2 import DenseRepPointsV2Head, DenseRepPointsV2Outputs
from pointdet.ops.masks import instance_masks, point_set_hulls, point_set_masks
from pointdet.ops.priors import level_points
from pointdet.structures import Detections, Instances
from pointdet.targets.dense_reppoints_v2 import (
    band_point_sets,
    contour_image_targets,
    contour_point_sets,
    point_mask_labels,
)

from .helpers import overfit_four_shapes

SMALL = DenseRepPointsV2Config(
    backbone="resnet18", backbone_weights=None, channels=64, frozen_stages=0, frozen_bn=False, num_points=81,
    num_score_groups=25, stacked_mask_convs=1, stacked_convs=1,
)  # fmt: skip


def test_chamfer_distance_matches_a_python_loop_and_passes_gradcheck():
    generator = torch.Generator().manual_seed(0)
    first, second = torch.rand(3, 5, 2, generator=generator), torch.rand(3, 7, 2, generator=generator)
    for a, b, got in zip(first, second, chamfer_distance(first, second), strict=True):
        forward = sum(min(math.dist(p, q) for q in b.tolist()) for p in a.tolist()) / len(a)
        backward = sum(min(math.dist(p, q) for p in a.tolist()) for q in b.tolist()) / len(b)
        assert got.item() == pytest.approx((forward + backward) / 2, rel=1e-5)
    assert torch.autograd.gradcheck(
        chamfer_distance, (first.double().requires_grad_(), second.double().requires_grad_())
    )
    with pytest.raises(ValueError, match="do not pair up"):
        chamfer_distance(first, second[:2])


def test_contour_targets_of_a_square_mark_the_cells_of_its_boundary_band_with_offsets_to_the_boundary():
    """Square of pixels 10..21 on a 32 x 32 image: its band (pixels 9, 10, 21, 22) rounds to cells 1 and 3 of the
    stride-8 level, the offsets pointing at the boundary (x = 10: 10 / 8 - 1 = 0.25; x = 22: -0.25); the whole band
    rounds to cell (1, 1) of the stride-16 level, offset 0 by symmetry."""
    masks = torch.zeros(1, 32, 32, dtype=torch.uint8)
    masks[0, 10:22, 10:22] = 1
    priors, strides = level_points([(4, 4), (2, 2)], [8, 16])
    targets = contour_image_targets(priors, strides, masks)
    fine = targets.heatmap[:16].view(4, 4)
    ring = torch.zeros(4, 4)
    ring[1:4, 1:4] = 1
    ring[2, 2] = 0
    assert torch.equal(fine, ring)
    offsets = targets.offset[:16].view(4, 4, 2)  # [row, column] -> (dx, dy)
    assert offsets[2, 1].tolist() == pytest.approx([0.25, 0.0])
    assert offsets[2, 3].tolist() == pytest.approx([-0.25, 0.0])
    assert offsets[1, 2].tolist() == pytest.approx([0.0, 0.25])
    assert offsets[3, 2].tolist() == pytest.approx([0.0, -0.25])
    assert targets.heatmap[16:].tolist() == [0, 0, 0, 1] and targets.offset[19].tolist() == pytest.approx([0, 0])
    assert torch.equal(targets.positive, targets.heatmap == 1)


def _contour_outputs(contour_logit: float) -> DenseRepPointsV2Outputs:
    """Outputs of one image on two levels (stride 8: 4 x 4, stride 16: 2 x 2) with one contour peak at P3 cell
    (x 2, y 1) of logit ``contour_logit``, offset (0.25, -0.5); only the fields joint inference reads are real."""
    priors, strides = level_points([(4, 4), (2, 2)], [8, 16])
    scores = torch.full((1, 20, 1), -10.0)
    scores[0, 1 * 4 + 2, 0] = contour_logit
    offsets = torch.zeros(1, 20, 2)
    offsets[0, 1 * 4 + 2] = torch.tensor([0.25, -0.5])
    unused = torch.zeros(1, 20, 0)
    return DenseRepPointsV2Outputs(
        unused, unused, unused, priors[None], strides[None], torch.zeros(1, 2), unused, scores, offsets, unused
    )


def test_joint_inference_adds_the_contour_point_near_a_hand_placed_peak_above_the_threshold():
    points = torch.full((1, 20, 2, 2), 30.0)  # 2 points per set, far from the peak by default
    points[0, 16, 0] = torch.tensor([17.0, 9.0])  # a P4 set's point in the 2x2 window of P3 cells x 2-3, y 1-2
    points[0, 6, 0] = torch.tensor([17.0, 9.0])  # the same point in a P3 set: P3 sets get no contour points
    frame = torch.tensor([[32.0, 32.0]])
    snapped, values = contour_points(points, _contour_outputs(10.0), frame, threshold=0.4)
    assert snapped[0, 16, 0].tolist() == pytest.approx([(2 + 0.25) * 8, (1 - 0.5) * 8])
    assert values[0, 16].tolist() == [0.5, 0.0] and values[0, :16].abs().sum() == 0
    between = torch.logit(torch.tensor(0.45)).item()  # added at the code's 0.4, not at the paper's 0.5
    assert contour_points(points, _contour_outputs(between), frame, threshold=0.4)[1][0, 16, 0] == 0.5
    assert contour_points(points, _contour_outputs(between), frame, threshold=0.5)[1][0, 16, 0] == 0.0


def test_masks_from_the_points_of_a_hand_made_square_fill_the_square():
    """Points every pixel on the boundary of [10, 30]^2 and on an inner grid, mask score 1, box = the square:
    every cell of the box-relative mask is inside (> 0.5), so the pasted mask is the box's, as a full mask pastes it
    (torchvision's paste: pixels 10..30); points of value 0 drop out."""
    edge = torch.arange(10.0, 31.0)
    ten, thirty = torch.full_like(edge, 10.0), torch.full_like(edge, 30.0)
    boundary = torch.cat([torch.stack(p, dim=1) for p in ((edge, ten), (edge, thirty), (ten, edge), (thirty, edge))])
    inner = torch.cartesian_prod(torch.arange(12.0, 30.0, 3), torch.arange(12.0, 30.0, 3))
    points = torch.cat([boundary, inner])[None]
    values = torch.ones(points.shape[:2])
    values[0, -1] = 0.0  # an inner point of value 0 is dropped, not a hole
    box = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    masks = point_set_masks(points, values, box, size=20)
    assert masks.shape == (1, 20, 20) and torch.all(masks > 0.5)
    detections = Detections(box, torch.ones(1), torch.zeros(1, dtype=torch.long), masks=masks)
    expected = torch.zeros(40, 40, dtype=torch.bool)
    expected[10:31, 10:31] = True
    assert torch.equal(instance_masks(detections, 40, 40)[0], expected)
    # Points only on the left half (x <= 20): 1 inside their hull, falling linearly to the right corners' 0 at
    # x = 30, at most (30 - x) / 10 beyond x = 20 (cell centres x = 10.5 + j).
    half = points[0, :, 0] <= 20
    left = point_set_masks(points[:, half], values[:, half], box, size=20)[0]
    assert torch.allclose(left[:, :8], torch.ones(20, 8)) and torch.all(left[:, 16:] <= 0.35 + 1e-6)


def _disk(radius: float = 20.0, centre: float = 32.0, size: int = 64) -> torch.Tensor:
    """(1, size, size) uint8 mask of the pixels whose centre lies within ``radius`` of ``(centre, centre)``."""
    rows = torch.arange(size) + 0.5
    inside = (rows[None, :] - centre) ** 2 + (rows[:, None] - centre) ** 2 <= radius**2
    return inside.to(torch.uint8)[None]


def test_band_targets_of_a_disk_lie_on_both_sides_of_its_contour_within_the_band():
    """The disk of radius 20 in its box [12, 52]^2: a cell of the 56 grid is 40 / 56 px, the band reaches 2 cells
    beyond the 2-px boundary, so every point lies within (2 + 1.5) cells (2.5 px) of the circle (with the crop's
    staircase), about half of them inside the mask; 81 points of a band of K > 81 cells are 81 distinct cells."""
    torch.manual_seed(0)
    masks, box = _disk(), torch.tensor([[12.0, 12.0, 52.0, 52.0]])
    points = band_point_sets(masks, box, 81)
    assert points.shape == (1, 81, 2)
    radii = (points[0] - 32.0).norm(dim=1)
    assert torch.all((radii - 20.0).abs() <= 3.5 * 40 / 56 + 0.5)
    labels = point_mask_labels(points, masks, torch.zeros(1, dtype=torch.long))[0]
    assert 0.25 < labels.mean().item() < 0.75
    cells = ((points[0] - 12.0) / (40 / 56)).floor()
    assert len(torch.unique(cells, dim=0)) == 81


def test_band_targets_of_a_box_filling_square_run_along_the_inside_of_its_box():
    """A mask that fills its box has its boundary at the box's sides (outside the box is background): the points
    lie inside the box, within 1 + 2 cells (+ the cell itself) of a side; with more points than band cells every
    cell is drawn at least ``count // K`` times."""
    torch.manual_seed(0)
    masks = torch.zeros(1, 40, 40, dtype=torch.uint8)
    masks[0, 10:31, 10:31] = 1
    box = torch.tensor([[10.0, 10.0, 31.0, 31.0]])
    points = band_point_sets(masks, box, 2000, distance=2.0)[0]
    assert torch.all((points >= 10.0) & (points <= 31.0))
    to_side = torch.minimum(points - 10.0, 31.0 - points).amin(dim=1)
    assert torch.all(to_side <= 4 * 21 / 56 + 1e-4)
    assert point_mask_labels(points[None], masks, torch.zeros(1, dtype=torch.long)).min() == 1


def test_gt_points_of_a_disk_give_back_the_disk_through_each_mask_rule():
    """GT encoded then decoded: the disk's 81 contour points through the hull rule (polygon rasterised on the image)
    and its 81 band points, valued by their GT labels, through the triangulation rule (interpolated on the 56 grid,
    pasted). The hull is near exact; the triangulation of 81 points is coarse (its cap on the shapes, README)."""
    torch.manual_seed(0)
    masks, box = _disk(), torch.tensor([[12.0, 12.0, 52.0, 52.0]])
    index, truth = torch.zeros(1, dtype=torch.long), masks[0].bool()

    def iou_of(detections: Detections) -> float:
        pasted = instance_masks(detections, 64, 64)[0]
        return ((pasted & truth).sum() / (pasted | truth).sum()).item()

    angles = torch.arange(48) * 2 * math.pi / 48
    polygon = 32.0 + 20.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    instances = Instances(box, index, torch.zeros(1, 0, 3), masks=masks, polygons=[[polygon]])
    contour = contour_point_sets(instances, 81)
    hull = point_set_hulls(contour, torch.ones(1, 81), box)
    assert iou_of(Detections(box, torch.ones(1), index, contours=hull)) > 0.97
    band = band_point_sets(masks, box, 81)
    values = point_mask_labels(band, masks, index)
    assert iou_of(Detections(box, torch.ones(1), index, masks=point_set_masks(band, values, box, 56))) > 0.8


def test_hull_rule_on_a_hand_made_square_keeps_the_corners_drops_zero_valued_points_and_falls_back_to_the_box():
    """The corners of [10, 30]^2 plus inner points, an outer point of value 0: the hull is the square (its 4
    corners, the last repeated to K + 4 vertices) and rasterises to it; 2 points have no hull: the box stands in."""
    inner = torch.tensor([[15.0, 15.0], [20.0, 25.0], [25.0, 12.0]])
    corners = torch.tensor([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]])
    points = torch.cat([corners, inner, torch.tensor([[38.0, 20.0]])])[None]
    values = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.0]])
    box = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    hull = point_set_hulls(points, values, box)
    assert hull.shape == (1, 12, 2)
    assert {tuple(v) for v in hull[0].tolist()} == {tuple(v) for v in corners.tolist()}
    detections = Detections(box, torch.ones(1), torch.zeros(1, dtype=torch.long), contours=hull)
    square = instance_masks(detections, 40, 40)[0]
    assert square[11:29, 11:29].all() and not square[:, 31:].any() and not square[:9].any()
    fallback = point_set_hulls(points[:, :2], values[:, :2], box)
    assert fallback.shape == (1, 6, 2) and {tuple(v) for v in fallback[0].tolist()} == {
        tuple(v) for v in corners.tolist()
    }


def test_mask_score_is_the_mean_of_the_point_probabilities_above_one_half():
    logits = torch.logit(torch.tensor([[0.9, 0.7, 0.2, 0.5], [0.1, 0.3, 0.4, 0.5]]))
    assert mask_scores(logits).tolist() == pytest.approx([0.8, 0.0], abs=1e-5)


def test_presets_config_family_and_switches():
    card, cpu = get_preset("dense_reppoints_v2_r50_fpn"), get_preset("dense_reppoints_v2_shapes")
    for config in (card, cpu):
        model = config.model
        assert isinstance(model, DenseRepPointsV2Config) and model.method == "dense_reppoints_v2"
        assert (model.transform, model.refine_assigner, model.nms_iou, model.foreground_weight) == (
            "minmax",
            "atss",
            0.6,
            1.0,
        )
        assert model.contour_verification and model.joint_inference and model.contour_threshold == 0.4
        assert model.needs_masks and model.needs_polygons
    assert (card.model.num_points, card.model.num_groups, card.model.num_score_groups) == (729, 9, 121)
    assert card.model.stacked_mask_convs == 7 and card.model.backbone == "resnet50"
    assert card.optim.epochs == 12 and card.model.box_loss == "smooth_l1" and card.model.mask_rule == "triangulation"
    lite0 = get_preset("reppoints_lite0_shapes")
    assert cpu.data == lite0.data and cpu.optim == lite0.optim and cpu.model.num_points == 81
    assert cpu.model.backbone == lite0.model.backbone and cpu.model.channels == 64
    assert (cpu.model.mask_rule, cpu.model.point_targets, cpu.model.band_distance) == ("hull", "contour", 2.0)
    switched = apply_eval_overrides(
        cpu, ["model.contour_threshold=0.5", "model.joint_inference=false", "model.mask_rule=triangulation"]
    )
    postprocess = build_model(switched.model, 3, with_backbone_weights=False).postprocess
    assert isinstance(postprocess, DenseRepPointsV2Postprocess)
    assert postprocess.contour_threshold == 0.5 and not postprocess.joint_inference
    assert postprocess.mask_rule == "triangulation"
    with pytest.raises(ConfigError, match="mask_rule"):
        apply_eval_overrides(cpu, ["model.mask_rule=alpha"])
    with pytest.raises(ConfigError, match="fixed by the checkpoint"):
        apply_eval_overrides(cpu, ["model.point_targets=band"])
    band = build_model(apply_overrides(cpu, ["model.point_targets=band"]).model, 3, with_backbone_weights=False)
    assert band.head.point_targets == "band" and band.head.band_distance == 2.0
    with pytest.raises(ConfigError, match="fixed by the checkpoint"):
        apply_eval_overrides(cpu, ["model.contour_verification=false"])
    with pytest.raises(ConfigError, match="needs the contour maps"):
        apply_overrides(cpu, ["model.contour_verification=false"])
    ablation = apply_overrides(cpu, ["model.contour_verification=false", "model.joint_inference=false"])
    head = build_model(ablation.model, 3, with_backbone_weights=False).head
    assert isinstance(head, DenseRepPointsV2Head) and head.contour is None
    normed = build_model(apply_overrides(cpu, ["model.cls_norm=gn"]).model, 3, with_backbone_weights=False).head
    assert isinstance(normed.cls_norm, torch.nn.GroupNorm) and normed.cls_norm.num_channels == 64
    assert not any("cls_norm" in name for name in build_model(cpu.model, 3, with_backbone_weights=False).state_dict())
    with pytest.raises(ConfigError, match="num_groups"):
        DenseRepPointsV2Config(num_points=25)


def test_the_ablation_without_contour_verification_trains_and_decodes():
    """One loss and one decode of the head without the contour branch: no contour terms, masks still built."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = build_model(replace(SMALL, contour_verification=False, joint_inference=False), 3)
    images = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 16:40, 20:44] = 1
    from pointdet.structures import Instances

    instances = [Instances(torch.tensor([[20.0, 16.0, 44.0, 40.0]]), torch.tensor([1]), torch.zeros(1, 0, 3), masks)]
    losses = model.loss(images, instances)
    assert "loss_contour_heatmap" not in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    model.postprocess.score_threshold = 0.0
    (detections,) = model.predict(images, k=5)
    assert detections.masks.shape == (5, 56, 56) and detections.contours is None  # the default, triangulation
    model.postprocess.mask_rule = "hull"
    assert model.predict(images, k=5)[0].contours.shape == (5, 2 * 81 + 4, 2)


def test_cli_dense_reppoints_v2_train_eval_predict_load_and_export_refusal(tiny_shapes, tmp_path, capsys):
    import json

    import pointdet
    from pointdet.export import export_onnx

    from .helpers import cli_train_eval_predict

    run, image = cli_train_eval_predict(
        "dense_reppoints_v2_shapes", tiny_shapes, tmp_path, capsys, "model.contour_threshold=0.5"
    )
    from pointdet.data.images import read_image
    from pointdet.evaluation import prediction_records

    predictor = pointdet.load(run, device="cpu")
    assert isinstance(predictor.model.head, DenseRepPointsV2Head)
    predictor.model.postprocess.score_threshold = 0.0  # 2 steps: every score is still near the prior
    (detections,) = predictor.predict(image, flip=True)
    assert 0 < len(detections) <= 100 and detections.contours.shape[1:] == (2 * 81 + 4, 2)
    size = tuple(read_image(image).shape[-2:])
    records = prediction_records(detections, 0, predictor.category_ids, predictor.class_names, size)
    assert records and all("counts" in record["segmentation"] for record in records)  # predict's JSON records
    json.dumps(records)
    with pytest.raises(ValueError, match=r"convex hull or Delaunay interpolation \(scipy\), which has no ONNX"):
        export_onnx(predictor.model, tmp_path / "m.onnx", 64, 64)


@pytest.mark.slow  # 200 steps on 4 images at 128 px: 5.5 min on a shared 2-core CPU (box AP 1.0, mask AP50 0.964)
def test_dense_reppoints_v2_overfits_four_shapes_images(tmp_path):
    history, metrics = overfit_four_shapes(SMALL, tmp_path, with_polygons=True)
    print(
        f"loss {history[0]:.3f} -> {history[-1]:.3f}; box AP {metrics['AP']:.3f}, mask AP50 {metrics['segm_AP50']:.3f}"
    )
    assert history[-1] < 0.3 * history[0], history[::10]
    assert metrics["segm_AP50"] >= 0.9, metrics
