"""``corner_start``: the init points 0 and 1 of the corner transforms start up-left / down-right of their location, so
the init and refine stages take the same corners (RepPoints v2's ``corner_minmax`` / ``exact_minmax`` boxes)."""

from __future__ import annotations

import pytest
import torch

from pointdet.configs import ConfigError, RepPointsV2Config, apply_overrides, get_preset
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset, collate
from pointdet.data.shapes import generate_shapes
from pointdet.data.transforms import eval_transforms
from pointdet.models.build import build_model
from pointdet.models.heads import RepPointsHead
from pointdet.targets.reppoints import build_reppoints_targets

from .helpers import fit, p3_p7_features


def _corner_pairs(points: torch.Tensor, priors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """(B, P, 2N) xy points -> (B, P, 4) points 0 and 1 relative to their prior, in strides: (x0, y0, x1, y1)."""
    return (points[..., :4] - priors.repeat(1, 1, 2)) / strides[..., None]


def test_corner_start_places_points_0_and_1_up_left_and_down_right_in_both_stages():
    features = p3_p7_features(2, 32)
    for start in (0.0, 0.5):
        head = RepPointsHead(32, 3, channels=32, transform="corner_minmax", corner_start=start)
        outputs = head(features)
        expected = torch.tensor([-start, -start, start, start])
        for points in (outputs.points_init, outputs.points_refine):  # the refine stage starts on the init points
            pairs = _corner_pairs(points, outputs.priors, outputs.strides)
            torch.testing.assert_close(pairs, expected.expand_as(pairs), atol=0.05, rtol=0)
        if start:  # a box of one stride around each location, not a point
            boxes = head.boxes(outputs.points_init, outputs.moment_transfer)
            sides = (boxes[..., 2:] - boxes[..., :2]) / outputs.strides[..., None]
            torch.testing.assert_close(sides, torch.ones_like(sides), atol=0.1, rtol=0)
    official = RepPointsHead(32, 3, channels=32, transform="corner_minmax")
    assert torch.count_nonzero(official.init_out.bias) == 0  # the official zero bias by default


def test_corner_start_is_refused_where_points_0_and_1_are_not_the_box_corners():
    for transform in ("moment", "minmax", "partial_minmax"):
        with pytest.raises(ValueError, match="corner_start"):
            RepPointsHead(32, 3, channels=32, transform=transform, corner_start=0.5)
    with pytest.raises(ValueError, match="corner_start"):
        RepPointsHead(32, 3, channels=32, transform="corner_minmax", use_grid_points=True, corner_start=0.5)
    main_job = get_preset("reppoints_v2_effl0_raccoon")
    assert main_job.model.corner_start == 0.5 and get_preset("reppoints_v2_r50_fpn").model.corner_start == 0
    assert apply_overrides(main_job, ["model.corner_start=0"]).model.corner_start == 0
    with pytest.raises(ConfigError, match="model.corner_start"):
        apply_overrides(main_job, ["model.corner_start=-1"])
    with pytest.raises(ConfigError, match="model.corner_start"):
        apply_overrides(get_preset("reppoints_effl0_raccoon"), ["model.corner_start=0.5"])  # moment boxes
    with pytest.raises(ConfigError, match="model.corner_start"):
        apply_overrides(get_preset("dense_reppoints_v2_shapes"), ["model.corner_start=0.5"])


def test_with_corner_start_both_stages_keep_the_same_corners_while_training(tmp_path):
    torch.manual_seed(0)
    shapes = generate_shapes(tmp_path, num_train=2, num_val=1, image_size=128, seed=0)
    coco = CocoDataset(shapes.train_json, shapes.train_images)
    batch = collate([TransformedDataset(coco, eval_transforms(128))[i] for i in range(2)])
    config = RepPointsV2Config(backbone="resnet18", channels=32, frozen_stages=0, frozen_bn=False, corner_start=0.5)
    model = build_model(config, num_classes=3, with_backbone_weights=False)
    history = fit(model, batch, steps=40, lr=1e-3)
    assert history[-1] < history[0]
    model.eval()
    with torch.no_grad():
        outputs = model(model.preprocess(batch.images))
        head = model.head.points
        boxes_init = head.boxes(outputs.points_init, outputs.moment_transfer)
        targets = build_reppoints_targets(
            outputs.priors[0], outputs.strides[0], boxes_init, batch.instances, 3, "atss", head.point_base_scale
        )
    positive = targets.refine_assigned >= 0
    assert positive.sum() > 10
    for points in (outputs.points_init, outputs.points_refine):
        x0, y0, x1, y1 = points[positive][:, :4].unbind(-1)
        assert bool(((x0 < x1) & (y0 < y1)).all())  # point 0 is the top-left corner in both stages
