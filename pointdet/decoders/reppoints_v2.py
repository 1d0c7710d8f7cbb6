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

from pointdet.decoders.point_sets import Transform
from pointdet.decoders.reppoints import RepPointsPostprocess, clip_boxes
from pointdet.ops.priors import LevelGrids, level_grids, prior_levels

if TYPE_CHECKING:
    from pointdet.models.heads.reppoints_v2 import RepPointsV2Outputs, VerificationOutputs

WINDOW = ((0, 0), (1, 0), (0, 1), (1, 1))  # (dx, dy) of the 2x2 window, row-major
CORNER_CHANNELS = (0, 1)  # the top-left corner reads map channel 0, the bottom-right one channel 1


def verification_grids(priors: Tensor, strides: Tensor) -> tuple[LevelGrids, Tensor]:
    """The verification map every prior's points snap on, and whether they move (module docstring): P4, P5 read
    P3 (level 0), P6, P7 level 1, P3 does not move (nor anything with a single level).

    Args:
        priors: (B, P, 2) xy locations; strides: (B, P).

    Returns:
        ``LevelGrids`` with (B, P, 1) fields and (B, P) bool ``moved``.
    """
    levels = prior_levels(strides).expand(priors.shape[:2])
    maps = level_grids(priors, strides, levels, 2)  # (B, 2) fields: levels 0 and 1
    reads = (levels >= 3).long()  # (B, P)
    return LevelGrids(*(field.gather(1, reads)[..., None] for field in maps)), levels >= 1


def snap_points(
    points: Tensor, channels: Tensor, scores: Tensor, offsets: Tensor, grids: LevelGrids
) -> tuple[Tensor, Tensor]:
    """Points moved to the best location of their 2x2 window on a verification map (corners, contours).

    Args:
        points: (B, Q, K, 2) xy points, image pixels (the two corners of every box, or every point of every set).
        channels: (K,) long, the map channel point k reads.
        scores: (B, P, S) logits of every prior's S channels (all levels, flattened like the head's outputs).
        offsets: (B, P, S, 2) ``(dx, dy)`` offsets of every prior and channel, in stride units.
        grids: the map each of the Q point groups reads, (B, Q, 1) fields (``verification_grids``).

    Returns:
        (B, Q, K, 2) the snapped points, image pixels (not clipped), and (B, Q, K) the ``sigmoid`` score of their
        locations.
    """
    batch, count, num_points, _ = points.shape
    channels_total = scores.shape[-1]
    stride = grids.stride[..., None]  # (B, Q, 1, 1)
    limit = torch.stack([grids.width, grids.height], dim=-1)  # (B, Q, 1, 2)
    cell = torch.maximum(torch.minimum(torch.floor(points / stride).long(), limit - 2), torch.zeros_like(limit))
    window = points.new_tensor(WINDOW, dtype=torch.long)  # (4, 2)
    candidates = torch.minimum(cell[..., None, :] + window, limit[..., None, :] - 1)  # (B, Q, K, 4, 2)
    start, width = grids.start[..., None], grids.width[..., None]  # (B, Q, 1, 1)
    flat = (start + candidates[..., 1] * width + candidates[..., 0]) * channels_total + channels[:, None]
    probabilities = scores.sigmoid().flatten(1)  # (B, P * S)
    best_score, best = probabilities.gather(1, flat.flatten(1)).view(batch, count, num_points, 4).max(dim=-1)
    chosen = candidates.gather(3, best[..., None, None].expand(-1, -1, -1, 1, 2)).squeeze(3)  # (B, Q, K, 2)
    index = ((grids.start + chosen[..., 1] * grids.width + chosen[..., 0]) * channels_total + channels).flatten(1)
    offset = offsets.flatten(1, 2).gather(1, index[..., None].expand(-1, -1, 2)).view_as(points)
    return (chosen.to(points.dtype) + offset) * stride, best_score


def joint_inference(boxes: Tensor, outputs: VerificationOutputs, frame: Tensor) -> Tensor:
    """Boxes of P4-P7 refined by the P3 / P4 corner maps (module docstring), every level at once.

    Args:
        boxes: (B, P, 4) xyxy boxes of every prior, clipped to ``frame``.
        outputs: the head outputs they came from (RepPoints v2's, LSNet-CPV's).
        frame: (B, 2) ``(height, width)`` of the input.

    Returns:
        (B, P, 4) boxes, clipped; those of P3 (and of every level when fewer than 2 exist) unchanged.
    """
    grids, moved = verification_grids(outputs.priors.float(), outputs.strides.float())
    batch, num_priors = boxes.shape[:2]
    scores = outputs.corner_scores.detach().float()  # (B, P, 2)
    offsets = outputs.corner_offsets.detach().float().view(batch, num_priors, 2, 2)
    channels = torch.tensor(CORNER_CHANNELS, device=boxes.device)
    corners, _ = snap_points(boxes.unflatten(-1, (2, 2)), channels, scores, offsets, grids)
    return torch.where(moved[..., None], clip_boxes(corners.flatten(2), frame), boxes)


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
