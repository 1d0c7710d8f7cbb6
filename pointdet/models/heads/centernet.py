"""CenterNet detection head ("Objects as Points", Zhou et al. 2019, Eq. 1-4; METHODS.md §2a).

Three branches on the stride-4 map: class-centre heatmap (C), box size (2) and sub-pixel offset (2).
``head_conv`` defaults follow the official code (64 for ResNet, 256 for DLA; METHODS.md App. A #2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor, nn

from pointdet.distributed import mean_over_processes
from pointdet.losses import masked_l1, penalty_reduced_focal_loss
from pointdet.models.heads.branches import prediction_branch
from pointdet.ops.gather import gather_at
from pointdet.ops.gaussian import RadiusMode
from pointdet.structures import Instances
from pointdet.targets.centernet import CenterNetTargets, build_centernet_targets

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
    """Heatmap, size and offset branches with their loss; the base of the pose and 3D heads (decoding:
    ``decoders.centernet.CenterNetPostprocess`` and its pose / 3D forms).

    Subclasses add branches (one attribute per field of their ``Outputs``) and loss terms (``task_losses``), and
    reuse the centre targets and losses here.

    Args:
        in_channels: channels of the neck output.
        num_classes: C.
        head_conv: hidden channels of each branch.
        stride: output stride R.
        size_weight, offset_weight: loss weights (0.1 and 1 in the paper).
        min_overlap, radius_mode: Gaussian radius settings (METHODS.md §1.1; CenterNet's code formula by default).
    """

    Outputs: type[NamedTuple] = CenterNetOutputs

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
        self.num_classes, self.stride, self.head_conv = num_classes, stride, head_conv
        self.size_weight, self.offset_weight = size_weight, offset_weight
        self.min_overlap, self.radius_mode = min_overlap, radius_mode
        self.heatmap = self.branch(in_channels, num_classes, heatmap=True)
        self.size = self.branch(in_channels, 2)
        self.offset = self.branch(in_channels, 2)

    def branch(self, in_channels: int, out_channels: int, heatmap: bool = False) -> nn.Sequential:
        """A prediction branch; heatmap branches start at the focal-loss prior."""
        bias = -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR) if heatmap else 0.0
        return prediction_branch(in_channels, self.head_conv, out_channels, bias=bias)

    def forward(self, features: list[Tensor]) -> NamedTuple:
        """The neck's one stride-R map [(B, D, H, W)] -> ``Outputs``."""
        (x,) = features
        return self.Outputs(*(getattr(self, name)(x) for name in self.Outputs._fields))

    def loss(self, outputs: NamedTuple, instances: list[Instances]) -> dict[str, Tensor]:
        """Weighted loss terms: ``loss_heatmap``, ``loss_size``, ``loss_offset`` (METHODS.md §2a(c)) and the
        subclass's ``task_losses``."""
        targets = build_centernet_targets(
            instances,
            self.num_classes,
            tuple(outputs.heatmap.shape[-2:]),
            self.stride,
            self.min_overlap,
            self.radius_mode,
        )
        num_objects = mean_over_processes(targets.mask.sum()).clamp(min=1)
        task_losses, box_mask = self.task_losses(outputs, instances, targets, num_objects)
        num_boxes = self.box_normaliser(box_mask)
        size = gather_at(outputs.size, targets.index)  # (B, M, 2)
        offset = gather_at(outputs.offset, targets.index)  # (B, M, 2)
        return {
            "loss_heatmap": penalty_reduced_focal_loss(outputs.heatmap, targets.heatmap, num_objects),
            "loss_size": self.size_weight * masked_l1(size, targets.size, box_mask, 2 * num_boxes),
            "loss_offset": self.offset_weight * masked_l1(offset, targets.offset, box_mask, 2 * num_boxes),
            **task_losses,
        }

    def box_normaliser(self, box_mask: Tensor) -> Tensor:
        """Divisor (per coordinate) of the summed size and offset L1 terms: the objects whose box is trained,
        averaged over processes (the code's ``RegL1Loss``, METHODS.md §1.5)."""
        return mean_over_processes(box_mask.sum()).clamp(min=1)

    def task_losses(
        self, outputs: NamedTuple, instances: list[Instances], targets: CenterNetTargets, num_objects: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Extra loss terms of a task head, and the (B, M) mask of objects whose size and offset are trained.

        ``num_objects`` is the object count of the batch averaged over processes (at least 1)."""
        return {}, targets.mask
