import math

import pytest
import torch

from pointdet.ops import draw_gaussian, gaussian_radius
from pointdet.ops.gaussian import gaussian_kernel


@pytest.mark.parametrize(
    ("size", "mode", "expected"),
    [(10, "cornernet", 0.8167), (10, "centernet", 2.7332), (50, "cornernet", 4.0835), (50, "centernet", 13.666)],
)
def test_radius_matches_hand_values(size, mode, expected):
    # METHODS.md App. B: (10,10) t=0.7 -> A 0.82 / B 2.73; (50,50) -> A 4.08 / B 13.67.
    radius = gaussian_radius(torch.tensor([float(size)]), torch.tensor([float(size)]), 0.7, mode)
    assert radius.item() == pytest.approx(expected, abs=1e-3)


def test_radius_variant_a_by_hand():
    # Case 2 (both corners inside) of CornerNet: 4r^2 - 2(h+w) r + (1-t) w h = 0, smaller root.
    h, w, t = 12.0, 30.0, 0.7
    b, c = 2 * (h + w), (1 - t) * w * h
    r2 = (b - math.sqrt(b * b - 16 * c)) / 8
    r1 = ((h + w) - math.sqrt((h + w) ** 2 - 4 * w * h * (1 - t) / (1 + t))) / 2
    r3 = (-2 * t * (h + w) + math.sqrt((2 * t * (h + w)) ** 2 - 16 * t * (t - 1) * w * h)) / (8 * t)
    got = gaussian_radius(torch.tensor([h]), torch.tensor([w]), t, "cornernet").item()
    assert got == pytest.approx(min(r1, r2, r3), rel=1e-6)


def test_kernel_values():
    kernel = gaussian_kernel(2)  # sigma = 5/6
    sigma = 5 / 6
    assert kernel.shape == (5, 5)
    assert kernel[2, 2] == 1.0
    assert kernel[2, 3].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert kernel[0, 0].item() == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-6)


def test_draw_gaussian_max_and_border():
    heatmap = torch.zeros(6, 8)
    draw_gaussian(heatmap, (0, 0), 2)
    assert heatmap[0, 0] == 1.0 and heatmap[0, 2] > 0 and heatmap[0, 3] == 0
    before = heatmap.clone()
    draw_gaussian(heatmap, (1, 0), 1)  # overlapping: element-wise max, never a sum
    assert heatmap[0, 1] == 1.0
    assert torch.all(heatmap >= before)
    assert heatmap.max() == 1.0
