"""RoI feature pooling (over FPN levels, or on one map of known stride) and the two-FC heads of the R-CNN
branches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, RoIAlign

SAMPLING_RATIO = 2  # bilinear samples per bin and axis (Detectron's and the CPM R-CNN code's)
ROI_LEVELS = ("p2", "p3", "p4", "p5")  # RoIs are pooled from P2-P5 (Detectron's level mapping; P6 is RPN-only)


def _pool_in_float32(pool: nn.Module, features: Tensor | dict[str, Tensor], boxes: list[Tensor], *args) -> Tensor:
    """``pool(features, boxes, *args)`` in float32 outside autocast: torchvision has no CPU bfloat16 RoIAlign, and
    boxes in bfloat16 would be rounded by 2-4 pixels at 256-1024 px."""
    if isinstance(features, Tensor):
        device, floats = features.device, features.float()
    else:
        device, floats = next(iter(features.values())).device, {name: f.float() for name, f in features.items()}
    with torch.autocast(device.type, enabled=False):
        return pool(floats, [b.float() for b in boxes], *args)


class RoIPooler(nn.Module):
    """torchvision ``MultiScaleRoIAlign`` on the named pyramid maps, in float32 (``_pool_in_float32``).

    Args:
        level_names: names of the maps the detector passes (its ``feature_shapes`` names), finest first.
        output_size: side of the pooled features.
        sampling_ratio: bilinear samples per bin and axis (2; 1 costs a quarter, the CPU preset's choice: RoIAlign's
            backward is single-threaded on a CPU).
    """

    def __init__(self, level_names: Sequence[str], output_size: int, sampling_ratio: int = SAMPLING_RATIO) -> None:
        super().__init__()
        self.level_names = tuple(level_names)
        self.pool = MultiScaleRoIAlign([n for n in ROI_LEVELS if n in level_names], output_size, sampling_ratio)

    def forward(self, features: Sequence[Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """Maps in ``level_names`` order and B lists of (N_b, 4) xyxy boxes -> (ΣN_b, D, S, S)."""
        named = dict(zip(self.level_names, features, strict=True))
        return _pool_in_float32(self.pool, named, boxes, image_sizes)


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
