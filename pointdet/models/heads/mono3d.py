"""CenterNet monocular 3D head ("Objects as Points" §4.1 and App. B; METHODS.md §2c).

Adds depth (1), dimensions (3, metres) and two-bin orientation (8) branches to the 2D centre/size/offset
branches. Losses: L1 on the decoded depth, L1 on the dimensions, the multi-bin orientation loss; weights 1.
The code normalises its 3D L1 terms by all padded object slots; our slot count is the batch's largest
object count, which would make the weight depend on the busiest image, so they are divided by the real
objects like the 2D terms (METHODS.md App. A #3).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from pointdet.decoders.mono3d import decode_depth
from pointdet.losses import masked_l1
from pointdet.losses.rotation import multibin_rotation_loss
from pointdet.models.heads.centernet import CenterNetHead
from pointdet.ops.gather import gather_at
from pointdet.structures import Instances
from pointdet.targets.centernet import CenterNetTargets
from pointdet.targets.mono3d import build_mono3d_targets


class Mono3DOutputs(NamedTuple):
    """Raw maps: ``heatmap`` (B, C, H, W), ``size`` and ``offset`` (B, 2, H, W), ``depth`` (B, 1, H, W) raw,
    ``dimensions`` (B, 3, H, W) metres, ``rotation`` (B, 8, H, W) two-bin outputs."""

    heatmap: Tensor
    size: Tensor
    offset: Tensor
    depth: Tensor
    dimensions: Tensor
    rotation: Tensor


class Mono3DHead(CenterNetHead):
    """2D centre/box branches plus depth, dimension and orientation branches.

    Args:
        in_channels, num_classes: as ``CenterNetHead``.
        depth_weight, dimension_weight, rotation_weight: loss weights (1 each in the paper).
        **kwargs: the ``CenterNetHead`` settings.
    """

    Outputs = Mono3DOutputs

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth_weight: float = 1.0,
        dimension_weight: float = 1.0,
        rotation_weight: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        self.depth_weight, self.dimension_weight, self.rotation_weight = depth_weight, dimension_weight, rotation_weight
        self.depth = self.branch(in_channels, 1)
        self.dimensions = self.branch(in_channels, 3)
        self.rotation = self.branch(in_channels, 8)

    def task_losses(
        self, outputs: Mono3DOutputs, instances: list[Instances], targets: CenterNetTargets, num_objects: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """``loss_depth``, ``loss_dimensions``, ``loss_rotation``."""
        cuboids = build_mono3d_targets(instances, targets)
        depth = decode_depth(gather_at(outputs.depth, targets.index))
        dimensions = gather_at(outputs.dimensions, targets.index)
        rotation = gather_at(outputs.rotation, targets.index)
        losses = {
            "loss_depth": self.depth_weight * masked_l1(depth, cuboids.depth, targets.mask, num_objects),
            "loss_dimensions": self.dimension_weight
            * masked_l1(dimensions, cuboids.dimensions, targets.mask, 3 * num_objects),
            "loss_rotation": self.rotation_weight
            * multibin_rotation_loss(rotation, cuboids.bins, cuboids.residuals, targets.mask),
        }
        return losses, targets.mask
