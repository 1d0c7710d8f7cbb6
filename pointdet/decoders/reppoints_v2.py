"""RepPoints v2 decoding (METHODS.md CARD 5 §5.1 (d)): RepPoints' decoding plus **joint inference**, the corner
refinement of the regressed boxes by the corner-verification maps.

Following Scalsol/RepPointsV2 mmdet/models/dense_heads/reppoints_v2_head.py ``_get_bboxes_single`` (its
``select``), as summarised in the card (no code of theirs was copied): only boxes from the levels P4-P7 move;
P4 and P5 boxes read the P3 corner maps, P6 and P7 boxes the P4 maps. On the chosen map of stride ``s`` each
corner of the clipped box, ``(x1, y1)`` on the top-left map and ``(x2, y2)`` on the bottom-right one, falls in the
cell ``⌊coord / s⌋`` (clamped so that the 2x2 window fits); the window ``{cell, cell + 1}²`` is searched for its
highest ``sigmoid`` corner score (first of ties in row-major order, as ``max_pool2d_with_indices``) and the corner
becomes ``(argmax + offset) * s``, clipped to the image. The corner score is not used otherwise (the code sets no
threshold). The paper's main text, which describes joint inference, is not among ../papers (an open question,
the card says).

Tensor ops only, the map sizes read off the priors, so the ONNX export keeps its dynamic input size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pointdet.decoders.reppoints import RepPointsPostprocess, Transform, clip_boxes, level_strides

if TYPE_CHECKING:
    from pointdet.models.heads.reppoints_v2 import RepPointsV2Outputs, VerificationOutputs

WINDOW = ((0, 0), (1, 0), (0, 1), (1, 1))  # (dx, dy) of the 2x2 window, row-major


def snap_corner(
    point: Tensor, scores: Tensor, offsets: Tensor, on_map: Tensor, priors: Tensor, strides: Tensor, stride: float
) -> Tensor:
    """One corner of every box moved to the best location of its 2x2 window on one corner map (``snap_points``
    without the scores)."""
    return snap_points(point, scores, offsets, on_map, priors, strides, stride)[0]


def snap_points(
    point: Tensor, scores: Tensor, offsets: Tensor, on_map: Tensor, priors: Tensor, strides: Tensor, stride: float
) -> tuple[Tensor, Tensor]:
    """Points moved to the best location of their 2x2 window on one verification map (corners, contours).

    Args:
        point: (B, Q, 2) xy points, image pixels (a corner of every box, or every point of every set).
        scores: (B, P) corner logits of every prior (all levels, flattened like the head's outputs).
        offsets: (B, P, 2) ``(dx, dy)`` corner offsets of every prior, in stride units.
        on_map: (B, P) bool, the priors of the map read (one level).
        priors: (B, P, 2) xy locations.
        strides: (B, P) stride of each location.
        stride: the map's stride.

    Returns:
        (B, Q, 2) the snapped points, image pixels (not clipped), and (B, Q) the ``sigmoid`` score of their
        locations.
    """
    start = (strides < stride).sum(dim=1, keepdim=True)  # (B, 1) first index of the map (levels finest first)
    count = on_map.sum(dim=1, keepdim=True)
    width = torch.where(on_map, priors[..., 0], -1.0).amax(dim=1, keepdim=True).div(stride).round().long() + 1
    height = torch.div(count, width, rounding_mode="floor")
    limit = torch.stack([width, height], dim=-1)  # (B, 1, 2)
    cell = torch.maximum(torch.minimum(torch.floor(point / stride).long(), limit - 2), torch.zeros_like(limit))
    window = point.new_tensor(WINDOW, dtype=torch.long)  # (4, 2)
    candidates = torch.minimum(cell[:, :, None] + window, limit[:, :, None] - 1)  # (B, P, 4, 2)
    flat = (start[..., None] + candidates[..., 1] * width[..., None] + candidates[..., 0]).flatten(1)  # (B, P*4)
    best_score, best = torch.gather(scores.sigmoid(), 1, flat).view(*point.shape[:2], 4).max(dim=-1)  # (B, P)
    chosen = torch.gather(candidates, 2, best[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)  # (B, P, 2)
    index = start + chosen[..., 1] * width + chosen[..., 0]  # (B, P)
    offset = torch.gather(offsets, 1, index[..., None].expand(-1, -1, 2))
    return (chosen.to(point.dtype) + offset) * stride, best_score


def joint_inference(boxes: Tensor, outputs: VerificationOutputs, frame: Tensor) -> Tensor:
    """Boxes of P4-P7 refined by the P3 / P4 corner maps (module docstring).

    Args:
        boxes: (B, P, 4) xyxy boxes of every prior, clipped to ``frame``.
        outputs: the head outputs they came from (RepPoints v2's, LSNet-CPV's).
        frame: (B, 2) ``(height, width)`` of the input.

    Returns:
        (B, P, 4) boxes, clipped; those of P3 (and of every level when fewer than 2 exist) unchanged.
    """
    strides = level_strides(outputs.strides[0])
    if len(strides) < 2:
        return boxes
    priors, prior_strides = outputs.priors.float(), outputs.strides.float()
    scores, offsets = outputs.corner_scores.detach().float(), outputs.corner_offsets.detach().float()
    refined = boxes
    for map_stride, box_strides in ((strides[0], strides[1:3]), (strides[1], strides[3:])):
        if not box_strides:
            continue
        moved = ((prior_strides >= box_strides[0]) & (prior_strides <= box_strides[-1]))[..., None]  # (B, P, 1)
        on_map = prior_strides == map_stride
        corners = [
            snap_corner(
                boxes[..., 2 * k : 2 * k + 2],
                scores[..., k],
                offsets[..., 2 * k : 2 * k + 2],
                on_map,
                priors,
                prior_strides,
                map_stride,
            )
            for k in range(2)
        ]
        refined = torch.where(moved, clip_boxes(torch.cat(corners, dim=-1), frame), refined)
    return refined


class RepPointsV2Postprocess(RepPointsPostprocess):
    """``RepPointsPostprocess`` whose boxes go through ``joint_inference`` when ``joint_inference`` is on.

    Args:
        transform, score_threshold, nms_iou, pre_nms: as ``RepPointsPostprocess`` (v2: ``corner_minmax``, NMS 0.6).
        joint_inference: refine P4-P7 boxes with the corner maps (on in the code); a decoding option, so a trained
            model is evaluated either way without retraining.
    """

    def __init__(
        self,
        transform: Transform = "corner_minmax",
        score_threshold: float = 0.05,
        nms_iou: float = 0.6,
        pre_nms: int = 1000,
        joint_inference: bool = True,
    ) -> None:
        super().__init__(transform, score_threshold, nms_iou, pre_nms)
        self.joint_inference = joint_inference

    def boxes(self, outputs: RepPointsV2Outputs, frame: Tensor) -> Tensor:
        boxes = super().boxes(outputs, frame)
        return joint_inference(boxes, outputs, frame) if self.joint_inference else boxes
