"""CenterNet multi-person pose head ("Objects as Points" §4.2; METHODS.md §2b).

Adds to the detection branches: joint offsets from the centre (2J), joint heatmaps (J) and a shared sub-pixel
joint offset (2). Every added loss weight is 1, as in the paper (§6.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor

from pointdet.decoders.pose import decode_pose
from pointdet.distributed import mean_over_processes
from pointdet.losses import masked_l1, penalty_reduced_focal_loss
from pointdet.models.heads.centernet import CenterNetHead
from pointdet.ops.gather import gather_at
from pointdet.structures import Detections, Instances
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
        flip_pairs: left/right joint index pairs, swapped by the flip test.
        snap: snap joints to joint-heatmap peaks at decoding (``-jd``); False keeps the regression (``-reg``).
        joints_weight, joint_heatmap_weight, joint_offset_weight: loss weights (1 each in the paper).
        **kwargs: the ``CenterNetHead`` settings.
    """

    Outputs = PoseOutputs

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_joints: int,
        flip_pairs: Sequence[tuple[int, int]] = (),
        snap: bool = True,
        joints_weight: float = 1.0,
        joint_heatmap_weight: float = 1.0,
        joint_offset_weight: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        if num_joints < 1:
            raise ValueError("a pose head needs keypoints: the dataset's categories define none")
        self.num_joints, self.snap = num_joints, snap
        self.flip_order = list(range(num_joints))
        for left, right in flip_pairs:
            self.flip_order[left], self.flip_order[right] = right, left
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

    def merged_maps(self, outputs: PoseOutputs, flipped: PoseOutputs | None) -> dict[str, Tensor]:
        """Flip test of the reference (METHODS.md §2b(d) step 5): joint offsets mirrored (x negated and shifted,
        left/right swapped) and averaged, joint heatmaps swapped and averaged, sub-pixel offsets from the plain
        pass."""
        maps = super().merged_maps(outputs, flipped)
        maps["joints"] = outputs.joints
        maps["joint_heatmap"] = outputs.joint_heatmap.sigmoid()
        maps["joint_offset"] = outputs.joint_offset
        if flipped is not None:
            batch, _, height, width = flipped.joints.shape
            mirrored = flipped.joints.flip(-1).view(batch, self.num_joints, 2, height, width)
            # A joint offset o is taken from floor(centre); mirroring maps floor(c) to W - 1 - floor(c) but c to
            # W - c, so the mirrored pass predicts 1 - o for x. The reference negates only (a one-output-pixel
            # bias, measured: -12 keypoint AP on shapes); we undo the mirror exactly.
            mirrored = mirrored[:, self.flip_order] * mirrored.new_tensor([-1.0, 1.0]).view(1, 1, 2, 1, 1)
            mirrored[:, :, 0] += 1.0
            maps["joints"] = (outputs.joints + mirrored.reshape_as(outputs.joints)) / 2
            mirrored_heatmap = flipped.joint_heatmap.sigmoid().flip(-1)[:, self.flip_order]
            maps["joint_heatmap"] = (maps["joint_heatmap"] + mirrored_heatmap) / 2
        return maps

    def decode_batched(self, outputs: PoseOutputs, flipped: PoseOutputs | None = None, k: int = 100) -> Detections:
        """Detections with (B, K, J, 3) keypoints in input pixels."""
        maps = self.merged_maps(outputs, flipped)
        return decode_pose(**maps, stride=self.stride, k=k, snap=self.snap)
