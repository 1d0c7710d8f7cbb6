"""CenterNet pose decoding (METHODS.md §2b(d)): joints regressed from each centre, optionally snapped to the
nearest joint-heatmap peak ("-jd" in the paper's Table 5; "-reg" keeps the regression). Batched on device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.decoders.centernet import CenterNetPostprocess, centre_boxes
from pointdet.ops.gather import gather_at
from pointdet.ops.peaks import channel_peak_topk
from pointdet.structures import Detections


def snap_joints(
    regressed: Tensor,
    boxes: Tensor,
    joint_heatmap: Tensor,
    joint_offset: Tensor,
    k: int = 100,
    threshold: float = 0.1,
    max_distance: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Move each regressed joint to the nearest joint-heatmap peak, unless the rule of the paper says keep it.

    A joint keeps its regressed location when its nearest peak (score > ``threshold``) lies outside the
    object's box, or further than ``max_distance * max(box_w, box_h)`` (METHODS.md §2b(d) steps 2-4).

    Args:
        regressed: (B, N, J, 2) joints in output pixels.
        boxes: (B, N, 4) object boxes in output pixels.
        joint_heatmap: (B, J, H, W) joint probabilities.
        joint_offset: (B, 2, H, W) sub-pixel joint offsets.
        k: candidate peaks per joint type.

    Returns:
        (B, N, J, 2) joints and (B, N, J) scores (the snapped peak's score, or 0 where the regression was kept).
    """
    batch, num_joints = joint_heatmap.shape[:2]
    peaks = channel_peak_topk(joint_heatmap, k)  # (B, J, P)
    delta = gather_at(joint_offset, peaks.flat_index.view(batch, -1)).view(batch, num_joints, -1, 2)
    candidates = torch.stack([peaks.xs, peaks.ys], dim=-1).to(delta.dtype) + delta  # (B, J, P, 2)
    weak = peaks.scores <= threshold
    candidates = candidates.masked_fill(weak[..., None], -1e4)  # as the reference: weak peaks are never nearest
    distance = (regressed[:, :, :, None, :] - candidates[:, None]).norm(dim=-1)  # (B, N, J, P)
    nearest_distance, nearest = distance.min(dim=-1)  # (B, N, J)
    snapped = candidates[:, None].expand(-1, regressed.shape[1], -1, -1, -1)
    snapped = snapped.gather(3, nearest[..., None, None].expand(-1, -1, -1, 1, 2)).squeeze(3)
    score = peaks.scores[:, None].expand(-1, regressed.shape[1], -1, -1).gather(3, nearest[..., None]).squeeze(3)
    left, top, right, bottom = (boxes[..., i, None] for i in range(4))
    outside = (
        (snapped[..., 0] < left) | (snapped[..., 0] > right) | (snapped[..., 1] < top) | (snapped[..., 1] > bottom)
    )
    extent = torch.maximum(right - left, bottom - top)
    keep_regressed = outside | (score < threshold) | (nearest_distance > max_distance * extent)
    joints = torch.where(keep_regressed[..., None], regressed, snapped)
    return joints, score.masked_fill(keep_regressed, 0.0)


def decode_pose(
    heatmap: Tensor,
    size: Tensor,
    offset: Tensor,
    joints: Tensor,
    joint_heatmap: Tensor,
    joint_offset: Tensor,
    stride: int,
    k: int = 100,
    snap: bool = True,
) -> Detections:
    """Top-K objects with their boxes and J joints in input pixels, batched (fields (B, K, ...)).

    Args:
        heatmap: (B, C, H, W) centre probabilities.
        size, offset: (B, 2, H, W) box size and centre offset.
        joints: (B, 2J, H, W) joint offsets from the integer centre.
        joint_heatmap: (B, J, H, W) joint probabilities.
        joint_offset: (B, 2, H, W) sub-pixel joint offsets.
        stride: output stride R.
        k: objects per image (and candidate peaks per joint type).
        snap: snap joints to heatmap peaks (``-jd``); False keeps the regression (``-reg``).

    Returns:
        Batched ``Detections`` whose ``keypoints`` are (B, K, J, 3) ``(x, y, score)``; the score is the snapped
        peak's, or 0 for a regressed joint.
    """
    peaks, boxes = centre_boxes(heatmap, size, offset, k)
    batch, count = peaks.xs.shape
    centre = torch.stack([peaks.xs, peaks.ys], dim=-1).to(boxes.dtype)  # integer peak, as the targets
    regressed = gather_at(joints, peaks.flat_index).view(batch, count, -1, 2).float() + centre[:, :, None]
    if snap:
        located, scores = snap_joints(regressed, boxes, joint_heatmap, joint_offset, k)
    else:
        located, scores = regressed, regressed.new_zeros(regressed.shape[:-1])
    keypoints = torch.cat([located * stride, scores[..., None]], dim=-1)
    return Detections(boxes * stride, peaks.scores.float(), peaks.labels, keypoints=keypoints)


class PosePostprocess(CenterNetPostprocess):
    """CenterNet pose decoding with the flip test of the reference (METHODS.md §2b(d) step 5): joint offsets
    mirrored (x negated and shifted, left/right swapped) and averaged, joint heatmaps swapped and averaged,
    sub-pixel offsets from the plain pass.

    Args:
        stride: output stride R.
        flip_pairs: left/right joint index pairs, swapped by the flip test.
        snap: snap joints to joint-heatmap peaks (``-jd``); False keeps the regression (``-reg``).
    """

    def __init__(self, stride: int, flip_pairs: Sequence[tuple[int, int]] = (), snap: bool = True) -> None:
        super().__init__(stride)
        self.flip_pairs, self.snap = [tuple(pair) for pair in flip_pairs], snap

    def maps(self, outputs: NamedTuple, flipped: NamedTuple | None) -> dict[str, Tensor]:
        maps = super().maps(outputs, flipped)
        maps["joints"] = outputs.joints
        maps["joint_heatmap"] = outputs.joint_heatmap.sigmoid()
        maps["joint_offset"] = outputs.joint_offset
        if flipped is not None:
            batch, num_joints, height, width = flipped.joint_heatmap.shape
            order = list(range(num_joints))
            for left, right in self.flip_pairs:
                order[left], order[right] = right, left
            mirrored = flipped.joints.flip(-1).view(batch, num_joints, 2, height, width)
            # A joint offset o is taken from floor(centre); mirroring maps floor(c) to W - 1 - floor(c) but c to
            # W - c, so the mirrored pass predicts 1 - o for x. The reference negates only (a one-output-pixel
            # bias, measured: -12 keypoint AP on shapes); we undo the mirror exactly.
            mirrored = mirrored[:, order] * mirrored.new_tensor([-1.0, 1.0]).view(1, 1, 2, 1, 1)
            mirrored[:, :, 0] += 1.0
            maps["joints"] = (outputs.joints + mirrored.reshape_as(outputs.joints)) / 2
            mirrored_heatmap = flipped.joint_heatmap.sigmoid().flip(-1)[:, order]
            maps["joint_heatmap"] = (maps["joint_heatmap"] + mirrored_heatmap) / 2
        return maps

    def decode_maps(self, maps: dict[str, Tensor], k: int) -> Detections:
        """Detections with (B, K, J, 3) keypoints in input pixels."""
        return decode_pose(**maps, stride=self.stride, k=k, snap=self.snap)
