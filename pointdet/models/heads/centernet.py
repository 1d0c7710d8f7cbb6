"""CenterNet detection head ("Objects as Points", Zhou et al. 2019, Eq. 1-4; METHODS.md §2a).

Three branches on the stride-4 map: class-centre heatmap (C), box size (2) and sub-pixel offset (2).
``head_conv`` defaults follow the official code (64 for ResNet, 256 for DLA; METHODS.md App. A #2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor, nn

from pointdet.decoders.centernet import decode_centernet, gather_at
from pointdet.distributed import mean_over_processes
from pointdet.losses import masked_l1, penalty_reduced_focal_loss
from pointdet.models.heads.branches import prediction_branch
from pointdet.ops.gaussian import RadiusMode
from pointdet.structures import Detections, Instances
from pointdet.targets.centernet import build_centernet_targets

HEATMAP_PRIOR = 0.1  # bias -2.19, so the initial focal loss is not dominated by easy negatives


class CenterNetOutputs(NamedTuple):
    """Raw head maps at the output stride.

    Attributes:
        heatmap: (B, C, H, W) centre logits.
        size: (B, 2, H, W) box ``(w, h)`` in output pixels.
        offset: (B, 2, H, W) sub-pixel centre offsets.
    """

    heatmap: Tensor
    size: Tensor
    offset: Tensor


class CenterNetHead(nn.Module):
    """Heatmap, size and offset branches with their loss and decoder.

    Args:
        in_channels: channels of the neck output.
        num_classes: C.
        head_conv: hidden channels of each branch.
        stride: output stride R.
        size_weight, offset_weight: loss weights (0.1 and 1 in the paper).
        min_overlap, radius_mode: Gaussian radius settings (METHODS.md §1.1; CenterNet's code formula by default).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        head_conv: int = 64,
        stride: int = 4,
        size_weight: float = 0.1,
        offset_weight: float = 1.0,
        min_overlap: float = 0.7,
        radius_mode: RadiusMode = "centernet",
    ) -> None:
        super().__init__()
        self.num_classes, self.stride = num_classes, stride
        self.size_weight, self.offset_weight = size_weight, offset_weight
        self.min_overlap, self.radius_mode = min_overlap, radius_mode
        self.heatmap = prediction_branch(
            in_channels, head_conv, num_classes, bias=-math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)
        )
        self.size = prediction_branch(in_channels, head_conv, 2)
        self.offset = prediction_branch(in_channels, head_conv, 2)

    def forward(self, x: Tensor) -> CenterNetOutputs:
        return CenterNetOutputs(self.heatmap(x), self.size(x), self.offset(x))

    def loss(self, outputs: CenterNetOutputs, instances: list[Instances]) -> dict[str, Tensor]:
        """Weighted loss terms ``loss_heatmap``, ``loss_size``, ``loss_offset`` (METHODS.md §2a(c))."""
        targets = build_centernet_targets(
            instances,
            self.num_classes,
            tuple(outputs.heatmap.shape[-2:]),
            self.stride,
            self.min_overlap,
            self.radius_mode,
        )
        num_objects = mean_over_processes(targets.mask.sum()).clamp(min=1)
        size = gather_at(outputs.size, targets.index)  # (B, M, 2)
        offset = gather_at(outputs.offset, targets.index)  # (B, M, 2)
        return {
            "loss_heatmap": penalty_reduced_focal_loss(outputs.heatmap, targets.heatmap, num_objects),
            "loss_size": self.size_weight * masked_l1(size, targets.size, targets.mask, 2 * num_objects),
            "loss_offset": self.offset_weight * masked_l1(offset, targets.offset, targets.mask, 2 * num_objects),
        }

    def decode(
        self, outputs: CenterNetOutputs, flipped: CenterNetOutputs | None = None, k: int = 100
    ) -> list[Detections]:
        """Detections in input pixels. With ``flipped`` (outputs of the mirrored batch), heatmaps and sizes of
        both passes are averaged and offsets come from the plain pass, as in the reference flip test."""
        heatmap, size = outputs.heatmap.sigmoid(), outputs.size
        if flipped is not None:
            heatmap = (heatmap + flipped.heatmap.sigmoid().flip(-1)) / 2
            size = (size + flipped.size.flip(-1)) / 2
        return decode_centernet(heatmap, size, outputs.offset, self.stride, k)
