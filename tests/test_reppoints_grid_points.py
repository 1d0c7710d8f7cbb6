"""RepPoints' box-regression form (``model.use_grid_points``, mmdetection's ``gen_grid_from_reg``), checked against
hand-computed cases of the official formula: ``top_left = centre + size * (dx, dy) - size * exp(s) / 2``,
``size' = size * exp(s)``, the points a ``k x k`` grid over the new box (``linspace(0, 1, k)``), row by row, each
``(y, x)``."""

from __future__ import annotations

import math

import pytest
import torch

from pointdet.configs import ConfigError, DenseRepPointsV2Config, RepPointsConfig
from pointdet.models.build import build_model
from pointdet.models.heads.reppoints import RepPointsHead, grid_from_regression
from pointdet.structures import Instances

# Prior box +-2 strides (point_base_scale 4): centre (0, 0), size (4, 4). Regression (0.5, -0.25, log 2, 0): the
# centre moves by (2, -1), the size becomes (8, 4), the top-left corner (2 - 4, -1 - 2) = (-2, -3).
INIT_REGRESSION = (0.5, -0.25, math.log(2), 0.0)
INIT_BOX = [-2.0, -3.0, 6.0, 1.0]
INIT_GRID = [(y, x) for y in (-3.0, -1.0, 1.0) for x in (-2.0, 2.0, 6.0)]
# From the init box: centre (2, -1), size (8, 4); regression (0, 0, 0, log 0.5) keeps the width and halves the height
# -> top-left (2 - 4, -1 - 1) = (-2, -2), size (8, 2).
REFINE_REGRESSION = (0.0, 0.0, 0.0, math.log(0.5))
REFINE_GRID = [(y, x) for y in (-2.0, -1.0, 0.0) for x in (-2.0, 2.0, 6.0)]


def test_grid_from_regression_is_the_official_formula_on_a_hand_computed_box():
    regression = torch.tensor(INIT_REGRESSION, dtype=torch.float64).view(1, 4, 1, 1).expand(2, 4, 3, 5)
    prior = torch.tensor([-2.0, -2.0, 2.0, 2.0], dtype=torch.float64).view(1, 4, 1, 1)
    grid, box = grid_from_regression(regression, prior, 3)
    assert grid.shape == (2, 18, 3, 5) and box.shape == (2, 4, 3, 5)
    torch.testing.assert_close(grid[1, :, 2, 4], torch.tensor(INIT_GRID, dtype=torch.float64).flatten())
    torch.testing.assert_close(box[0, :, 0, 0], torch.tensor(INIT_BOX, dtype=torch.float64))


def test_a_grid_head_lays_its_init_and_refine_points_on_the_regressed_boxes():
    """Constant regressions (zero weights, the hand cases as biases) give the hand grids at every location; the
    refine grid is laid on the init box; the minmax box of the points is the regressed box."""
    torch.manual_seed(0)
    head = RepPointsHead(32, 3, strides=(8,), channels=32, stacked_convs=1, transform="minmax", use_grid_points=True)
    assert head.init_out.out_channels == head.refine_out.out_channels == 4
    with torch.no_grad():
        for conv, regression in ((head.init_out, INIT_REGRESSION), (head.refine_out, REFINE_REGRESSION)):
            conv.weight.zero_()
            conv.bias.copy_(torch.tensor(regression))
        _, init_yx, refine_yx = head.forward_level(torch.randn(1, 32, 4, 6))
        outputs = head([torch.randn(1, 32, 4, 6)])
    torch.testing.assert_close(init_yx[0, :, 3, 5], torch.tensor(INIT_GRID).flatten())
    torch.testing.assert_close(refine_yx[0, :, 0, 2], torch.tensor(REFINE_GRID).flatten())
    boxes = head.boxes(outputs.points_init, outputs.moment_transfer)[0, 7]  # location (row 1, column 1): (8, 8) px
    torch.testing.assert_close(boxes, torch.tensor(INIT_BOX) * 8 + 8)


def test_grid_point_models_build_train_and_refuse_the_dense_head():
    config = RepPointsConfig(backbone="resnet18", channels=64, transform="minmax", use_grid_points=True)
    model = build_model(config, 2, 0, [], with_backbone_weights=False)
    instances = Instances(torch.tensor([[10.0, 12.0, 50.0, 40.0]]), torch.tensor([1]), torch.zeros(1, 0, 3))
    outputs = model.head(model.neck(model.backbone(torch.randn(1, 3, 64, 64))))
    losses = model.head.loss(outputs, [instances])
    sum(losses.values()).backward()
    assert all(torch.isfinite(value) for value in losses.values())
    assert model.head.init_out.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="use_grid_points=true: the dense head regresses its points"):
        DenseRepPointsV2Config(use_grid_points=True)
