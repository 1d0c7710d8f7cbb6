"""RoI feature pooling (over FPN levels, or on one map of known stride) and the two-FC heads of the R-CNN
branches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import RoIAlign, box_area, roi_align

SAMPLING_RATIO = 2  # bilinear samples per bin and axis (Detectron's and the CPM R-CNN code's)
ROI_LEVELS = ("p2", "p3", "p4", "p5")  # RoIs are pooled from P2-P5 (Detectron's level mapping; P6 is RPN-only)
CANONICAL_SIDE, CANONICAL_LEVEL, LEVEL_EPS = 224.0, 4, 1e-6  # FPN eq. 1: a 224-px RoI pools from P4
LevelRule = Literal["torchvision", "detectron", "mmdet"]


def roi_levels(boxes: Tensor, rule: LevelRule = "torchvision") -> Tensor:
    """FPN level k = floor(4 + log2(sqrt(area) / 224)) of (N, 4) xyxy boxes (N,), before clamping to the pyramid,
    as each code rounds it at a level boundary:

    - ``torchvision`` (``MultiScaleRoIAlign``): ``floor(4 + log2(s / 224) + 1e-6)``, ``s = sqrt(w h)``;
    - ``detectron`` (maskrcnn-benchmark, CPM R-CNN's Pet): ``floor(4 + log2(s / 224 + 1e-6))`` with the legacy
      ``s = sqrt((w + 1)(h + 1))``;
    - ``mmdet`` (``SingleRoIExtractor``, finest scale 56): ``2 + floor(log2(s / 56 + 1e-6))``, ``s = sqrt(w h)``.
    """
    if rule == "detectron":
        side = ((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)).sqrt()
        return torch.floor(CANONICAL_LEVEL + torch.log2(side / CANONICAL_SIDE + LEVEL_EPS))
    side = box_area(boxes).sqrt()
    if rule == "mmdet":
        return 2 + torch.floor(torch.log2(side / (CANONICAL_SIDE / 4) + LEVEL_EPS))
    return torch.floor(CANONICAL_LEVEL + torch.log2(side / CANONICAL_SIDE) + LEVEL_EPS)


def _pool_in_float32(pool: nn.Module, features: Tensor | list[Tensor], boxes: list[Tensor], *args) -> Tensor:
    """``pool(features, boxes, *args)`` in float32 (float64 stays float64) outside autocast: torchvision has no CPU
    bfloat16 RoIAlign, and boxes in bfloat16 would be rounded by 2-4 pixels at 256-1024 px."""

    def wide(tensor: Tensor) -> Tensor:
        return tensor if tensor.dtype == torch.float64 else tensor.float()

    if isinstance(features, Tensor):
        device, floats = features.device, wide(features)
    else:
        device, floats = features[0].device, [wide(f) for f in features]
    with torch.autocast(device.type, enabled=False):
        return pool(floats, [wide(b) for b in boxes], *args)


class RoIPooler(nn.Module):
    """RoIAlign on the named pyramid maps P2-P5, each RoI on the level of its size (``roi_levels``), in float32
    (``_pool_in_float32``). With the defaults it computes what torchvision's ``MultiScaleRoIAlign`` computes.

    Args:
        level_names: names of the maps the detector passes (its ``feature_shapes`` names, ``p<level>``), finest
            first.
        output_size: side of the pooled features.
        sampling_ratio: bilinear samples per bin and axis (2; 1 costs a quarter, the CPU preset's choice: RoIAlign's
            backward is single-threaded on a CPU; 0 = ``ceil(bin side)``, adaptive, as mmdetection's configs).
        aligned: half-pixel aligned RoIAlign (mmdetection / mmcv's default); False = the legacy Detectron one.
        level_rule: how a RoI's level is rounded (``roi_levels``): ``torchvision``, ``detectron`` or ``mmdet``.
    """

    def __init__(
        self,
        level_names: Sequence[str],
        output_size: int,
        sampling_ratio: int = SAMPLING_RATIO,
        aligned: bool = False,
        level_rule: LevelRule = "torchvision",
    ) -> None:
        super().__init__()
        self.level_names = tuple(level_names)
        self.pooled_levels = [index for index, name in enumerate(level_names) if name in ROI_LEVELS]
        self.levels = [int(level_names[index][1:]) for index in self.pooled_levels]
        self.output_size, self.sampling_ratio, self.aligned, self.level_rule = (
            output_size, sampling_ratio, aligned, level_rule,
        )  # fmt: skip

    def _pool(self, maps: list[Tensor], boxes: list[Tensor]) -> Tensor:
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)])
        levels = roi_levels(rois[:, 1:], self.level_rule).clamp(self.levels[0], self.levels[-1]).long()
        pooled = maps[0].new_zeros(len(rois), maps[0].shape[1], self.output_size, self.output_size)
        for level, feature in zip(self.levels, maps, strict=True):
            index = torch.where(levels == level)[0]
            pooled[index] = roi_align(
                feature, rois[index], self.output_size, 2.0**-level, self.sampling_ratio, self.aligned
            )
        return pooled

    def forward(self, features: Sequence[Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """Maps in ``level_names`` order and B lists of (N_b, 4) xyxy boxes -> (ΣN_b, D, S, S); ``image_sizes``
        (B (H, W)) are not read: the levels' strides come from their names."""
        maps = [features[index] for index in self.pooled_levels]
        return _pool_in_float32(self._pool, maps, boxes)


class MapRoIPooler(nn.Module):
    """torchvision ``RoIAlign`` on one feature map of known stride, half-pixel aligned (``aligned=True``), in float32
    (``_pool_in_float32``). (``MultiScaleRoIAlign`` is not aligned and infers the stride from the image size.)

    Args:
        stride: input pixels per feature pixel.
        output_size: side of the pooled features.
        sampling_ratio: bilinear samples per bin and axis.
    """

    def __init__(self, stride: int, output_size: int, sampling_ratio: int = SAMPLING_RATIO) -> None:
        super().__init__()
        self.pool = RoIAlign(output_size, 1 / stride, sampling_ratio, aligned=True)

    def forward(self, feature: Tensor, boxes: list[Tensor]) -> Tensor:
        """(B, D, H, W) map and B lists of (N_b, 4) xyxy input-pixel boxes -> (ΣN_b, D, S, S)."""
        return _pool_in_float32(self.pool, feature, boxes)


class MLPClassifier(nn.Module):
    """Flatten -> FC -> ReLU -> FC -> ReLU (torchvision ``TwoMLPHead``) -> Linear to ``outputs`` logits.

    Args:
        in_features: flattened input size.
        hidden: width of both FC layers (1024).
        outputs: logits per RoI.
        init_std: normal init of the last layer (0.01, bias 0).
    """

    def __init__(self, in_features: int, hidden: int, outputs: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.mlp = TwoMLPHead(in_features, hidden)
        self.predictor = nn.Linear(hidden, outputs)
        nn.init.normal_(self.predictor.weight, std=init_std)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(N, ...) features -> (N, outputs) logits."""
        return self.predictor(self.mlp(x))
