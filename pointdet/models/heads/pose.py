"""CenterNet multi-person pose head ("Objects as Points" §4.2; METHODS.md §2b).

Adds to the detection branches: joint offsets from the centre (2J), joint heatmaps (J) and a shared sub-pixel
joint offset (2). Every added loss weight is 1, as in the paper (§6.3).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from pointdet.distributed import mean_over_processes
from pointdet.losses import masked_l1, penalty_reduced_focal_loss
from pointdet.models.heads.centernet import CenterNetHead
from pointdet.ops.gather import gather_at
from pointdet.structures import Instances
from pointdet.targets.centernet import CenterNetTargets
from pointdet.targets.pose import build_pose_targets


class PoseOutputs(NamedTuple):
    """Raw maps: ``heatmap`` (B, C, H, W), ``size`` and ``offset`` (B, 2, H, W), ``joints`` (B, 2J, H, W) offsets
    from the centre, ``joint_heatmap`` (B, J, H, W) logits, ``joint_offset`` (B, 2, H, W)."""

    heatmap: Tensor
    size: Tensor
    offset: Tensor
    joints: Tensor
    joint_heatmap: Tensor
    joint_offset: Tensor


class PoseHead(CenterNetHead):
    """Centre, box and joint branches.

    Args:
        in_channels, num_classes: as ``CenterNetHead`` (C = 1, person, for COCO).
        num_joints: J.
        joints_weight, joint_heatmap_weight, joint_offset_weight: loss weights (1 each in the paper).
        **kwargs: the ``CenterNetHead`` settings.
    """

    Outputs = PoseOutputs

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_joints: int,
        joints_weight: float = 1.0,
        joint_heatmap_weight: float = 1.0,
        joint_offset_weight: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        if num_joints < 1:
            raise ValueError("a pose head needs keypoints: the dataset's categories define none")
        self.num_joints = num_joints
        self.joints_weight, self.joint_heatmap_weight = joints_weight, joint_heatmap_weight
        self.joint_offset_weight = joint_offset_weight
        self.joints = self.branch(in_channels, 2 * num_joints)
        self.joint_heatmap = self.branch(in_channels, num_joints, heatmap=True)
        self.joint_offset = self.branch(in_channels, 2)

    def task_losses(
        self, outputs: PoseOutputs, instances: list[Instances], targets: CenterNetTargets, num_objects: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """``loss_joints`` (L1 per labelled coordinate), ``loss_joint_heatmap`` (focal), ``loss_joint_offset``;
        objects without labelled joints keep a positive centre but train no size/offset (reference rule)."""
        pose = build_pose_targets(instances, targets, self.stride)
        num_coordinates = mean_over_processes(pose.joints_mask.sum()).clamp(min=1)
        num_joints = mean_over_processes(pose.mask.sum()).clamp(min=1)
        joints = gather_at(outputs.joints, targets.index)  # (B, M, 2J)
        joint_offset = gather_at(outputs.joint_offset, pose.index)  # (B, M*J, 2)
        losses = {
            "loss_joints": self.joints_weight * masked_l1(joints, pose.joints, pose.joints_mask, num_coordinates),
            "loss_joint_heatmap": self.joint_heatmap_weight
            * penalty_reduced_focal_loss(outputs.joint_heatmap, pose.heatmap, num_joints),
            "loss_joint_offset": self.joint_offset_weight
            * masked_l1(joint_offset, pose.offset, pose.mask, 2 * num_joints),
        }
        return losses, targets.mask * pose.labelled
