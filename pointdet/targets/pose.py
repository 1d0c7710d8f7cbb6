"""CenterNet multi-person pose targets (METHODS.md §2b(b)): joints from the centre, joint heatmaps and offsets.

Follows xingyizhou/CenterNet ``src/lib/datasets/sample/multi_pose.py``: a joint is supervised when it is
labelled (``v > 0``) and inside the output map; its heatmap Gaussian uses the radius of its object.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.ops.gaussian import splat_gaussians
from pointdet.structures import Instances
from pointdet.targets.centernet import CenterNetTargets


class PoseTargets(NamedTuple):
    """Joint targets of a batch, aligned with the M object slots of ``CenterNetTargets`` (J joints).

    Attributes:
        joints: (B, M, 2J) joint minus the integer object centre, ``(x, y)`` per joint, in output pixels.
        joints_mask: (B, M, 2J) float, 1 for coordinates of supervised joints.
        heatmap: (B, J, H, W) Gaussian joint maps.
        offset: (B, M*J, 2) ``joint - floor(joint)``.
        index: (B, M*J) int64 flat joint positions ``y * W + x``.
        mask: (B, M*J) float, 1 for supervised joints.
        labelled: (B, M) float, 1 for objects with at least one labelled joint (only these train size/offset).
    """

    joints: Tensor
    joints_mask: Tensor
    heatmap: Tensor
    offset: Tensor
    index: Tensor
    mask: Tensor
    labelled: Tensor


def build_pose_targets(instances: list[Instances], centers: CenterNetTargets, stride: int) -> PoseTargets:
    """Encode the keypoints of ``instances`` (input pixels) for the object slots of ``centers``."""
    batch, slots = centers.mask.shape
    num_joints = instances[0].keypoints.shape[1] if instances else 0
    height, width = centers.heatmap.shape[-2:]
    device = centers.heatmap.device
    joints = torch.zeros(batch, slots, num_joints, 2, device=device)
    joints_mask = torch.zeros(batch, slots, num_joints, 2, device=device)
    offset = torch.zeros(batch, slots, num_joints, 2, device=device)
    index = torch.zeros(batch, slots, num_joints, dtype=torch.long, device=device)
    mask = torch.zeros(batch, slots, num_joints, device=device)
    labelled = torch.zeros(batch, slots, device=device)
    channels, points, radii = [], [], []
    for b, inst in enumerate(instances):
        count = int(centers.mask[b].sum())
        keypoints = inst.keypoints.to(device)[centers.source[b, :count]]  # (n, J, 3)
        xy = keypoints[..., :2].float() / stride
        inside = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
        valid = (keypoints[..., 2] > 0) & inside  # (n, J)
        xy_int = xy.floor().long()
        joints[b, :count] = xy - centers.centers[b, :count, None, :].float()
        joints_mask[b, :count] = valid[..., None].float()
        offset[b, :count] = xy - xy_int
        index[b, :count] = (xy_int[..., 1] * width + xy_int[..., 0]) * valid
        mask[b, :count] = valid.float()
        labelled[b, :count] = (keypoints[..., 2] > 0).any(dim=1).float()
        joint_ids = torch.arange(num_joints, device=device).expand(count, -1)
        channels.append((b * num_joints + joint_ids)[valid])
        points.append(xy_int[valid])
        radii.append(centers.radius[b, :count, None].expand(-1, num_joints)[valid])
    heatmap = torch.zeros(batch, num_joints, height, width, device=device)
    if channels:
        splat_gaussians(heatmap, torch.cat(channels), torch.cat(points), torch.cat(radii))
    joint_slots = slots * num_joints  # explicit sizes: a batch without objects has zero slots
    return PoseTargets(
        joints.view(batch, slots, 2 * num_joints),
        joints_mask.view(batch, slots, 2 * num_joints),
        heatmap,
        offset.view(batch, joint_slots, 2),
        index.view(batch, joint_slots),
        mask.view(batch, joint_slots),
        labelled,
    )
