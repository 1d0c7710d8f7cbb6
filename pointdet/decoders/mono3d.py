"""CenterNet monocular 3D decoding (METHODS.md §2c(d)): depth ``1/sigmoid(x) - 1``, dimensions and alpha at
each centre peak. ``ops.camera.lift_to_camera`` then places the object with the camera matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.decoders.centernet import CenterNetPostprocess, centre_boxes
from pointdet.ops.angles import decode_orientation
from pointdet.ops.gather import gather_at
from pointdet.structures import Detections


def decode_depth(raw: Tensor) -> Tensor:
    """Network output -> depth in metres, ``1 / (sigmoid(x) + 1e-6) - 1`` ("Objects as Points" Eq. 5 and code)."""
    return 1.0 / (raw.float().sigmoid() + 1e-6) - 1.0


def decode_mono3d(
    heatmap: Tensor,
    size: Tensor,
    offset: Tensor,
    depth: Tensor,
    dimensions: Tensor,
    rotation: Tensor,
    stride: int,
    k: int = 100,
) -> Detections:
    """Top-K objects with their 2D boxes and ``mono3d`` = (u, v, depth, h, w, l, alpha), pixels of the input,
    batched (fields (B, K, ...)).

    Args:
        heatmap: (B, C, H, W) centre probabilities.
        size, offset: (B, 2, H, W).
        depth: (B, 1, H, W) raw depth outputs.
        dimensions: (B, 3, H, W) ``(h, w, l)`` in metres.
        rotation: (B, 8, H, W) two-bin orientation outputs.
        stride: output stride R.
        k: objects per image.

    Returns:
        Batched ``Detections``; ``(u, v)`` is the 2D box centre, the point CenterNet lifts to 3D.
    """
    peaks, boxes = centre_boxes(heatmap, size, offset, k)
    boxes = boxes * stride
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    z = decode_depth(gather_at(depth, peaks.flat_index))
    hwl = gather_at(dimensions, peaks.flat_index).float()
    alpha = decode_orientation(gather_at(rotation, peaks.flat_index).float())[..., None]
    mono3d = torch.cat([centre, z, hwl, alpha], dim=-1)  # (B, K, 7)
    return Detections(boxes, peaks.scores.float(), peaks.labels, mono3d=mono3d)


class Mono3DPostprocess(CenterNetPostprocess):
    """CenterNet monocular 3D decoding; there is no flip test for 3D (as in the paper)."""

    def maps(self, outputs: NamedTuple, flipped: NamedTuple | None) -> dict[str, Tensor]:
        if flipped is not None:
            raise ValueError("flip test is not defined for monocular 3D (the paper uses no test augmentation)")
        maps = super().maps(outputs, None)
        return {**maps, "depth": outputs.depth, "dimensions": outputs.dimensions, "rotation": outputs.rotation}

    def decode_maps(self, maps: dict[str, Tensor], k: int) -> Detections:
        """Detections with (B, K, 7) ``mono3d`` (u, v, depth, h, w, l, alpha) in input pixels."""
        return decode_mono3d(**maps, stride=self.stride, k=k)
