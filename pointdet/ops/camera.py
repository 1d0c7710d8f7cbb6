"""Pinhole-camera geometry in KITTI's rectified camera frame (x right, y down, z forward; metres).

Cuboids are ``(h, w, l, x, y, z, rotation_y)`` with ``(x, y, z)`` the bottom-face centre and ``rotation_y``
the yaw around the y axis (0 = facing along +x), as in the KITTI object devkit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointdet.ops.angles import wrap_angle


def lift_to_camera(mono3d: Tensor, projection: Tensor) -> tuple[Tensor, Tensor]:
    """CenterNet's unprojection (METHODS.md §2c(d) steps 3-4): image centre + depth -> location and yaw.

    Args:
        mono3d: (N, 7) ``(u, v, depth, h, w, l, alpha)`` in the pixels of the camera ``projection``.
        projection: (3, 4) camera matrix P2.

    Returns:
        (N, 3) bottom-centre locations ``(x, y, z)`` and (N,) ``rotation_y`` in [-pi, pi).
    """
    p = projection.to(mono3d)
    u, v, depth, height, alpha = mono3d[:, 0], mono3d[:, 1], mono3d[:, 2], mono3d[:, 3], mono3d[:, 6]
    z = depth - p[2, 3]
    x = (u * depth - p[0, 3] - p[0, 2] * z) / p[0, 0]
    y = (v * depth - p[1, 3] - p[1, 2] * z) / p[1, 1] + height / 2  # the projected point is the box centre
    rotation_y = wrap_angle(alpha + torch.atan2(u - p[0, 2], p[0, 0]))
    return torch.stack([x, y, z], dim=1), rotation_y


def observation_angle(rotation_y: Tensor, x: Tensor, z: Tensor) -> Tensor:
    """KITTI's alpha: the yaw as seen along the ray to the object, ``rotation_y - atan2(x, z)``."""
    return wrap_angle(rotation_y - torch.atan2(x, z))


def cuboid_corners(cuboids: Tensor) -> Tensor:
    """(N, 7) cuboids -> (N, 8, 3) corners: 0-3 the bottom face, 4-7 the top face, same order."""
    h, w, length, x, y, z, yaw = cuboids.unbind(-1)
    half_l, half_w = length[:, None] / 2, w[:, None] / 2
    signs_l = cuboids.new_tensor([1, 1, -1, -1, 1, 1, -1, -1])
    signs_w = cuboids.new_tensor([1, -1, -1, 1, 1, -1, -1, 1])
    local_x = half_l * signs_l
    local_z = half_w * signs_w
    local_y = torch.cat([torch.zeros_like(h[:, None]).expand(-1, 4), -h[:, None].expand(-1, 4)], dim=1)
    cos, sin = yaw.cos()[:, None], yaw.sin()[:, None]
    corner_x = cos * local_x + sin * local_z + x[:, None]
    corner_z = -sin * local_x + cos * local_z + z[:, None]
    return torch.stack([corner_x, local_y + y[:, None], corner_z], dim=-1)


def project_points(points: Tensor, projection: Tensor) -> Tensor:
    """(..., 3) camera-frame points -> (..., 2) pixels through the (3, 4) camera matrix."""
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1) @ projection.to(points).T
    return homogeneous[..., :2] / homogeneous[..., 2:3]
