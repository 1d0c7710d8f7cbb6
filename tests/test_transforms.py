from dataclasses import replace

import pytest
import torch

from pointdet.data.transforms import (
    KeepRatioResize,
    Letterbox,
    PCALighting,
    RandomScaleCrop,
    Sample,
    crop,
    horizontal_flip,
    keep_ratio_train_transforms,
    resize,
    sanitize,
    train_transforms,
)
from pointdet.ops.polygons import signed_area
from pointdet.structures import Instances


def _sample():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    masks = torch.zeros(1, 40, 60, dtype=torch.uint8)
    masks[0, 10:20, 5:25] = 1
    image[:, 10:20, 5:25] = 255
    keypoints = torch.tensor([[[15.0, 10.0, 2.0], [25.0, 15.0, 2.0], [15.0, 20.0, 2.0], [5.0, 15.0, 2.0]]])
    return Sample(
        image, Instances(torch.tensor([[5.0, 10.0, 25.0, 20.0]]), torch.tensor([1]), keypoints, masks), 7, (40, 60)
    )


def _mask_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_flip_moves_everything_and_swaps_left_right():
    flipped = horizontal_flip(_sample(), flip_pairs=[(3, 1)])  # left <-> right
    inst = flipped.instances
    assert inst.boxes.tolist() == [[35.0, 10.0, 55.0, 20.0]]
    assert _mask_box(inst.masks[0]) == [35, 10, 55, 20]
    assert _mask_box(flipped.image[0] > 0) == [35, 10, 55, 20]
    # x -> 60 - x, then the 'right' (index 1) and 'left' (index 3) entries swap, so 'right' is still rightmost.
    assert inst.keypoints[0, :, 0].tolist() == [45.0, 55.0, 45.0, 35.0]


def test_flip_twice_is_identity():
    sample = _sample()
    twice = horizontal_flip(horizontal_flip(sample, [(3, 1)]), [(3, 1)])
    assert torch.equal(twice.image, sample.image)
    for name in ("boxes", "keypoints", "masks"):
        assert torch.equal(getattr(twice.instances, name), getattr(sample.instances, name))


def test_resize_and_crop_move_boxes_masks_keypoints_together():
    sample = crop(resize(_sample(), 80, 120), top=10, left=4, height=50, width=70)
    inst = sample.instances
    assert inst.boxes.tolist() == [[6.0, 10.0, 46.0, 30.0]]
    assert _mask_box(inst.masks[0]) == [6, 10, 46, 30]
    assert inst.keypoints[0, 1, :2].tolist() == [46.0, 20.0]


def test_sanitize_drops_boxes_outside_and_hides_keypoints():
    sample = sanitize(crop(_sample(), top=0, left=22, height=40, width=30))
    assert sample.instances.boxes.tolist() == [[0.0, 10.0, 3.0, 20.0]]
    assert sample.instances.keypoints[0, :, 2].tolist() == [0.0, 2.0, 0.0, 0.0]
    gone = sanitize(crop(_sample(), top=0, left=30, height=40, width=30))
    assert len(gone.instances) == 0 and gone.instances.masks.shape == (0, 40, 30)


def test_letterbox_records_scale_and_pads():
    boxed = Letterbox(120)(_sample())
    assert boxed.image.shape == (3, 120, 120) and boxed.scale == 2.0
    assert boxed.instances.boxes.tolist() == [[10.0, 20.0, 50.0, 40.0]]
    assert boxed.image[:, 80:].sum() == 0  # padding at the bottom


def test_random_scale_crop_output_size_and_seeded_determinism():
    transform = train_transforms(64, (0.6, 1.0, 1.3), 0.5, 0.4, [(3, 1)])
    outputs = []
    for _ in range(2):
        torch.manual_seed(11)
        outputs.append(transform(_sample()))
    assert outputs[0].image.shape == (3, 64, 64)
    assert torch.equal(outputs[0].image, outputs[1].image)
    assert torch.equal(outputs[0].instances.boxes, outputs[1].instances.boxes)
    crop_only = RandomScaleCrop(64, (1.0,))(_sample())
    assert crop_only.image.shape == (3, 64, 64)


def test_pca_lighting_adds_the_reference_colour_shift():
    sample = _sample()
    sample = type(sample)(torch.full((3, 4, 4), 100, dtype=torch.uint8), sample.instances)
    torch.manual_seed(0)
    alpha = torch.randn(3) * 0.1
    eigenvalues = torch.tensor([0.2141788, 0.01817699, 0.00341571])
    eigenvectors_bgr = torch.tensor(
        [
            [-0.58752847, -0.69563484, 0.41340352],
            [-0.5832747, 0.00994535, -0.81221408],
            [-0.56089297, 0.71832671, 0.41158938],
        ]
    )
    shift_bgr = eigenvectors_bgr @ (eigenvalues * alpha) * 255
    torch.manual_seed(0)
    lit = PCALighting(0.1)(sample)
    expected_rgb = (100 + shift_bgr.flip(0)).round()
    assert lit.image[:, 0, 0].tolist() == expected_rgb.tolist()
    assert torch.equal(PCALighting(0.0)(sample).image, sample.image)


def _sample_with_polygons(height=40, width=60):
    """The box [5, 10, 25, 20] with its polygon (its 4 corners, counter-clockwise on screen, plus a triangle part)
    and a crowd region as ignore box."""
    sample = _sample()
    corners = torch.tensor([[5.0, 10.0], [5.0, 20.0], [25.0, 20.0], [25.0, 10.0]])
    triangle = torch.tensor([[6.0, 11.0], [8.0, 11.0], [7.0, 13.0]])
    instances = replace(
        sample.instances, polygons=[[corners, triangle]], ignore_boxes=torch.tensor([[30.0, 5.0, 50.0, 35.0]])
    )
    return replace(sample, instances=instances)


def _corner_set(points):
    return sorted(map(tuple, points.tolist()))


def _box_corners(box):
    x0, y0, x1, y1 = box.tolist()
    return sorted([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def test_keep_ratio_resize_follows_mmdetection_sizes():
    image = torch.zeros(3, 480, 640, dtype=torch.uint8)
    sample = Sample(
        image, Instances(torch.tensor([[64.0, 48.0, 640.0, 480.0]]), torch.tensor([0]), torch.zeros(1, 0, 3))
    )
    resized = KeepRatioResize(800, 1333)(sample)
    # factor min(800 / 480, 1333 / 640) = 5 / 3; width int(640 * 5 / 3 + 0.5) = 1067 (mmcv's _scale_size)
    assert resized.image.shape == (3, 800, 1067) and resized.scale == 800 / 480
    assert torch.allclose(resized.instances.boxes, torch.tensor([[64 * 1067 / 640, 80.0, 1067.0, 800.0]]))
    wide = KeepRatioResize((800,), 1333)(Sample(torch.zeros(3, 500, 2000, dtype=torch.uint8), Instances.empty()))
    assert wide.image.shape == (3, 333, 1333) and wide.scale == 1333 / 2000  # the long side binds: 333.25 -> 333
    assert KeepRatioResize(800, 1333)(replace(sample, scale=0.5)).scale == 0.5 * 800 / 480  # factors compose


def test_keep_ratio_resize_range_is_uniform_within_bounds_and_seeded():
    transform = KeepRatioResize((20, 30), 1000)
    sample = Sample(torch.zeros(3, 10, 12, dtype=torch.uint8), Instances.empty())
    heights = []
    for seed in range(40):
        torch.manual_seed(seed)
        heights.append(transform(sample).image.shape[-2])
    assert min(heights) >= 20 and max(heights) <= 30 and len(set(heights)) > 5
    torch.manual_seed(3)
    again = transform(sample).image.shape[-2]
    assert again == heights[3]
    with pytest.raises(ValueError, match="low <= high"):
        KeepRatioResize((800, 600), 1333)


def test_polygons_and_ignore_boxes_move_with_boxes_through_resize_flip_crop():
    sample = crop(horizontal_flip(resize(_sample_with_polygons(), 80, 120), [(3, 1)]), 6, 4, 60, 110)
    inst = sample.instances
    assert inst.boxes.tolist() == [[66.0, 14.0, 106.0, 34.0]]
    assert _corner_set(inst.polygons[0][0]) == _box_corners(inst.boxes[0])
    # x: 120 - 2 * [50, 30] - 4; y: 2 * [5, 35] - 6, its bottom clamped to the crop as torchvision does for boxes
    assert inst.ignore_boxes.tolist() == [[16.0, 4.0, 56.0, 60.0]]
    assert torch.equal(inst.polygons[0][1][:, 1], torch.tensor([16.0, 16.0, 20.0]).flip(0))  # 2 * y - 6, reversed
    sample = _sample_with_polygons()
    sample = replace(sample, instances=replace(sample.instances, ignore_boxes=sample.instances.boxes.clone()))
    for transform in (Letterbox(100), RandomScaleCrop(64, (0.8,)), KeepRatioResize(50, 70)):
        torch.manual_seed(0)
        moved = transform(sample).instances
        assert torch.equal(moved.ignore_boxes, moved.boxes)  # crowd regions move (and are clamped) as boxes
        # the keypoints touch the four box edges, and keypoints are never clamped: the polygon spans them
        points = moved.keypoints[0, :, :2]
        assert torch.allclose(moved.polygons[0][0].amin(0), points.amin(0), atol=1e-4)
        assert torch.allclose(moved.polygons[0][0].amax(0), points.amax(0), atol=1e-4)


def test_flip_reverses_polygon_vertex_order_keeping_orientation():
    sample = _sample_with_polygons()
    flipped = horizontal_flip(sample, [(3, 1)])
    for before, after in zip(sample.instances.polygons[0], flipped.instances.polygons[0], strict=True):
        mirrored = torch.stack([60 - before[:, 0], before[:, 1]], dim=-1)
        assert torch.equal(after, mirrored.flip(0))
        assert signed_area(after.numpy()) == signed_area(before.numpy()) != 0
    twice = horizontal_flip(flipped, [(3, 1)])
    for before, after in zip(sample.instances.polygons[0], twice.instances.polygons[0], strict=True):
        assert torch.equal(after, before)


def test_sanitize_keeps_polygons_with_their_boxes_and_clips_ignore_boxes():
    sample = _sample_with_polygons()
    second = torch.tensor([[32.0, 2.0], [38.0, 2.0], [38.0, 8.0]])
    instances = sample.instances
    instances = replace(
        instances,
        boxes=torch.cat([instances.boxes, torch.tensor([[32.0, 2.0, 38.0, 8.0]])]),
        labels=torch.tensor([1, 2]),
        keypoints=torch.cat([instances.keypoints, instances.keypoints]),
        masks=None,
        polygons=[instances.polygons[0], [second]],
        ignore_boxes=torch.tensor([[30.0, 5.0, 50.0, 35.0], [0.0, 0.0, 10.0, 10.0]]),
    )
    cropped = sanitize(crop(replace(sample, instances=instances), top=0, left=28, height=40, width=32))
    kept = cropped.instances
    assert kept.labels.tolist() == [2] and len(kept.polygons) == 1
    assert torch.equal(kept.polygons[0][0], second - torch.tensor([28.0, 0.0]))
    assert kept.ignore_boxes.tolist() == [[2.0, 5.0, 22.0, 35.0]]  # the second one is left of the crop: dropped


def test_instances_selection_keeps_polygons_in_step_and_ignore_boxes_whole():
    parts = [[torch.full((3, 2), float(i))] for i in range(4)]
    ignore = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    instances = Instances(torch.rand(4, 4), torch.arange(4), torch.zeros(4, 0, 3), polygons=parts, ignore_boxes=ignore)
    for keep in (torch.tensor([True, False, True, True]), torch.tensor([0, 2, 3]), slice(0, 4)):
        selected = instances[keep]
        assert [p[0][0, 0].item() for p in selected.polygons] == selected.labels.float().tolist()
        assert selected.ignore_boxes is ignore
    assert instances[torch.tensor([3, 1])].labels.tolist() == [3, 1]
    assert [p[0][0, 0].item() for p in instances[torch.tensor([3, 1])].polygons] == [3.0, 1.0]
    assert instances[torch.zeros(4, dtype=torch.bool)].polygons == []
    moved = instances.to("cpu")
    assert moved.polygons[2][0].device.type == "cpu" and moved.ignore_boxes is not None
    assert Instances.empty()[torch.zeros(0, dtype=torch.bool)].polygons is None


def test_keep_ratio_training_pipeline_is_seeded_and_skips_zero_strength_steps():
    transform = keep_ratio_train_transforms((30, 40), 100, 0.5, 0.0, [(3, 1)], lighting=0.0)
    assert [type(step).__name__ for step in transform.transforms[:-1]] == ["KeepRatioResize", "RandomHorizontalFlip"]
    outputs = []
    for _ in range(2):
        torch.manual_seed(5)
        outputs.append(transform(_sample_with_polygons()))
    assert torch.equal(outputs[0].image, outputs[1].image) and outputs[0].scale == outputs[1].scale
    assert 30 <= outputs[0].image.shape[-2] <= 40
    assert torch.equal(outputs[0].instances.polygons[0][0], outputs[1].instances.polygons[0][0])
