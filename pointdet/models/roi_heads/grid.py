"""The grid branch of Grid R-CNN Plus, one per CPM R-CNN cascade stage (METHODS.md CARD 6 (a); Grid R-CNN §3.2).

RoIAlign 14x14 -> 8 x [3x3 conv to 9 x P channels, GN(36), ReLU] (the first with stride 2, giving 7x7) -> first- and
second-order fusion between neighbouring grid points (``F1_i = F_i + Σ_n T_in(F_n)``, ``F2_i = F_i + Σ_n
T'_in(F1_n)``, each T a depthwise 5x5 conv then a 1x1 conv) -> two grouped 4x4 stride-2 transposed convs to 9
heatmaps of 28x28, one per point (its sub-region of the virtual 56x56 map). The same upsampling head also reads
the unfused features, whose heatmaps are supervised in training. Facts derived from the CPM R-CNN code
(``grid_heads.py``, ``outputs.py``) and mmdetection's ``GridHead`` as summarised in the card.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pointdet.targets.grid import GRID_POINTS, grid_indices

NUM_CONVS = 8
GN_GROUPS = 36
FUSION_KERNEL = 5
HEATMAP_PRIOR = 0.01  # initial foreground probability of every heatmap pixel


class GridOutputs(NamedTuple):
    """Attributes:
    fused: (N, 9, 28, 28) heatmap logits from the fused features (from the features themselves without fusion).
    unfused: (N, 9, 28, 28) logits from the unfused features (None at test and without fusion).
    features: (N, 9P, 7, 7) the features after the convs ("minimum scale", the ISM's input).
    """

    fused: Tensor
    unfused: Tensor | None
    features: Tensor


def grid_neighbours() -> list[list[int]]:
    """The 4-neighbours of each grid point on the 3x3 grid."""
    columns, rows = grid_indices()
    return [
        [n for n in range(GRID_POINTS) if abs(columns[i] - columns[n]) + abs(rows[i] - rows[n]) == 1]
        for i in range(GRID_POINTS)
    ]


class PointFusion(nn.Module):
    """One order of feature fusion: ``out_i = base_i + Σ_{n ∈ N(i)} T_in(source_n)``, T_in a depthwise 5x5 conv then
    a 1x1 conv on one point's P channels, its own weights per directed edge (i, n) of the 3x3 grid (24 edges).

    All 24 transfers run as two grouped convs over the edges' stacked sources (the same arithmetic as 48 separate
    convs, which cost a CPU far more in per-call overhead).

    Args:
        point_channels: P.
    """

    def __init__(self, point_channels: int) -> None:
        super().__init__()
        edges = [(i, n) for i, neighbours in enumerate(grid_neighbours()) for n in neighbours]
        self.register_buffer("targets", torch.tensor([i for i, _ in edges]), persistent=False)
        self.register_buffer("sources", torch.tensor([n for _, n in edges]), persistent=False)
        width = len(edges) * point_channels
        self.depthwise = nn.Conv2d(width, width, FUSION_KERNEL, padding=FUSION_KERNEL // 2, groups=width)
        self.pointwise = nn.Conv2d(width, width, 1, groups=len(edges))

    def forward(self, base: Tensor, source: Tensor) -> Tensor:
        """(N, 9, P, H, W) base and source features -> (N, 9, P, H, W) fused, in ``base``'s dtype (under autocast
        the convs give bfloat16 / float16 while the GroupNorm'd base stays float32)."""
        count, _, channels, height, width = source.shape
        gathered = source[:, self.sources].flatten(1, 2)  # (N, E * P, H, W)
        transferred = self.pointwise(self.depthwise(gathered)).view(count, len(self.sources), channels, height, width)
        return base.index_add(1, self.targets, transferred.to(base.dtype))


class GridBranch(nn.Module):
    """Grid-point heatmaps for pooled RoI features.

    Args:
        in_channels: D of the pooled features.
        point_channels: P channels per point (64: 576 = 9 x 64 conv channels); a multiple of 4 (GN 36).
        num_convs: 3x3 convs before the fusion (8; the first has stride 2).
        conv_bias: the 3x3 convs have a bias, as in both official codes (a bias per channel is not cancelled by
            the GroupNorm over 16 channels that follows); off by default, which keeps the parameters of pointdet's
            earlier checkpoints; converted official models turn it on.
        fusion: the first- and second-order point fusion (Grid R-CNN); CPM R-CNN's released models turn it off
            (``FUSED_ON: False``): the heatmaps then come from the features themselves.
    """

    def __init__(
        self,
        in_channels: int,
        point_channels: int = 64,
        num_convs: int = NUM_CONVS,
        conv_bias: bool = False,
        fusion: bool = True,
    ) -> None:
        super().__init__()
        channels = GRID_POINTS * point_channels
        if channels % GN_GROUPS:
            raise ValueError(f"grid point_channels={point_channels}: 9 x it must be divisible by {GN_GROUPS} (GN)")
        layers: list[nn.Module] = []
        for index in range(num_convs):
            stride = 2 if index == 0 else 1
            conv = nn.Conv2d(in_channels if index == 0 else channels, channels, 3, stride, 1, bias=conv_bias)
            layers += [conv, nn.GroupNorm(GN_GROUPS, channels), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.point_channels = point_channels
        self.first_order = PointFusion(point_channels) if fusion else None
        self.second_order = PointFusion(point_channels) if fusion else None
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, 4, 2, padding=1, groups=GRID_POINTS),
            nn.GroupNorm(GRID_POINTS, channels),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels, GRID_POINTS, 4, 2, padding=1, groups=GRID_POINTS),
        )
        for module in self.convs.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        last = self.upsample[-1]
        nn.init.normal_(last.weight, std=0.001)
        nn.init.constant_(last.bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def forward(self, pooled: Tensor) -> GridOutputs:
        """(N, D, 14, 14) RoI features -> ``GridOutputs`` (``unfused`` only in training)."""
        features = self.convs(pooled)
        if self.first_order is None or self.second_order is None:
            return GridOutputs(self.upsample(features), None, features)
        points = features.unflatten(1, (GRID_POINTS, self.point_channels))  # (N, 9, P, 7, 7)
        first = self.first_order(points, points)
        second = self.second_order(points, first)
        fused = self.upsample(second.flatten(1, 2))
        unfused = self.upsample(features) if self.training else None
        return GridOutputs(fused, unfused, features)
