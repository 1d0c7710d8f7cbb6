"""CenterNet monocular 3D head ("Objects as Points" §4.1 and App. B; METHODS.md §2c).

Adds depth (1), dimensions (3, metres) and two-bin orientation (8) branches to the 2D centre/size/offset
branches. Losses: L1 on the decoded depth, L1 on the dimensions, the multi-bin orientation loss; weights 1.

Normalisation (METHODS.md §1.5, App. A #3): the code's 3D trainer (``trains/ddd.py``) averages its L1 terms
(depth, dimensions, and there also box size and offset) and the orientation-bin cross-entropy over all
``B x max_objs`` object slots, ``max_objs = 50`` for KITTI, empty ones included: ``normalisation="slots"``, the
default, divides by ``B x 50`` (x D) whatever the batch's own largest object count. ``"objects"`` divides by the
real objects like the 2D heads (the paper's 1/N), about 10x heavier relative to the heatmap on KITTI. The
orientation residuals are averaged over the active bins in both (as the code).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from torch import Tensor

from pointdet.decoders.mono3d import decode_depth
from pointdet.losses import masked_l1
from pointdet.losses.rotation import multibin_rotation_loss
from pointdet.models.heads.centernet import CenterNetHead
from pointdet.ops.gather import gather_at
from pointdet.structures import Instances
from pointdet.targets.centernet import CenterNetTargets
from pointdet.targets.mono3d import build_mono3d_targets

REFERENCE_SLOTS = 50  # the code's max_objs for KITTI (datasets/dataset/kitti.py): its 3D losses average over them
Normalisation = Literal["slots", "objects"]


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
        normalisation: ``slots`` (the code: every term over ``B x slots`` object slots) or ``objects`` (over the
            real objects).
        slots: object slots per image of the ``slots`` normalisation (50, the code's KITTI ``max_objs``).
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
        normalisation: Normalisation = "slots",
        slots: int = REFERENCE_SLOTS,
        **kwargs,
    ) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        if normalisation not in ("slots", "objects"):
            raise ValueError(f"mono3d normalisation must be 'slots' or 'objects', got {normalisation!r}")
        self.depth_weight, self.dimension_weight, self.rotation_weight = depth_weight, dimension_weight, rotation_weight
        self.normalisation, self.slots = normalisation, slots
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
        count = self.box_normaliser(targets.mask) if self.normalisation == "slots" else num_objects
        bins = count if self.normalisation == "slots" else None
        losses = {
            "loss_depth": self.depth_weight * masked_l1(depth, cuboids.depth, targets.mask, count),
            "loss_dimensions": self.dimension_weight
            * masked_l1(dimensions, cuboids.dimensions, targets.mask, 3 * count),
            "loss_rotation": self.rotation_weight
            * multibin_rotation_loss(rotation, cuboids.bins, cuboids.residuals, targets.mask, bins),
        }
        return losses, targets.mask

    def box_normaliser(self, box_mask: Tensor) -> Tensor:
        """``slots``: every slot of the batch, ``B x slots`` (the size and offset terms too, as the code's 3D
        trainer); ``objects``: the real objects, as the 2D heads."""
        if self.normalisation == "slots":
            return box_mask.new_tensor(float(box_mask.shape[0] * self.slots))
        return super().box_normaliser(box_mask)
