"""Dense RepPoints v2 decoding (METHODS.md CARD 5 §5.2): RepPoints' decoding of ``minmax`` boxes, scores times the
mask score, joint inference adding contour points to the point sets, masks interpolated from the scored points.

From Scalsol/RepPointsV2 ``dense_reppoints_v2_head.py`` (``_get_bboxes_single``) and
``dense_reppoints_v2_detector.py`` (``get_seg_masks``), as summarised here; no code of theirs was copied:

1. **Score**: class probability x mask score, the mean of the point-mask probabilities above 0.5
   (``sum(p [p > 0.5]) / (#(p > 0.5) + 1e-6)``); the per-level top ``pre_nms``, threshold and class-wise NMS (0.6)
   read that product.
2. **Box**: ``minmax`` of the refine points, clipped; the points are clipped to the image too.
3. **Joint inference** (on by default, a decoding option): every point of a set from P4-P7 is snapped, as RepPoints
   v2's corners (``decoders.reppoints_v2.snap_points``: the 2x2 window argmax plus offset), on the contour map of
   P3 (sets of P4, P5) or P4 (P6, P7); where the contour probability there exceeds ``contour_threshold`` the snapped
   point joins the set with value 0.5, a boundary value of the interpolation. The threshold is 0.4 in the code
   (the default) and 0.5 in the supplementary (METHODS.md App. A #17). P3 sets get no contour points.
4. **Mask** (``mask_rule``): ``triangulation``, the code's: ``ops.masks.point_set_masks`` of the points (value:
   their mask probability) and the added contour points, on a ``mask_size`` grid over the box, which
   ``Detections.masks`` then pastes into the image; ``hull`` (the default): the convex hull of the same points
   (``ops.masks.point_set_hulls``) as ``Detections.contours``, rasterised on the image. With 81 points the
   triangulation caps the shapes' mask AP near 40 even for perfect points (docs/reppoints.md), the hull does not.

The flip test merges the mirrored pass (boxes and every point mapped back by ``x -> W - x``). There is no ONNX
export: the masks come from scipy's convex hull or Delaunay interpolation (``batched`` refuses, naming it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from pointdet.decoders.reppoints import RepPointsPostprocess
from pointdet.decoders.reppoints_v2 import snap_points, verification_grids
from pointdet.decoders.tta import mirror_boxes
from pointdet.ops.masks import point_set_hulls, point_set_masks
from pointdet.structures import Detections

if TYPE_CHECKING:
    from pointdet.models.heads.dense_reppoints_v2 import DenseRepPointsV2Outputs

CONTOUR_POINT_VALUE = 0.5  # value of a contour point added by joint inference
MASK_SCORE_THRESHOLD = 0.5


def mask_scores(logits: Tensor) -> Tensor:
    """(..., N) point mask logits -> (...) the mean of the point probabilities above 0.5 (0 when none is)."""
    probabilities = logits.sigmoid()
    inside = (probabilities > MASK_SCORE_THRESHOLD).to(probabilities.dtype)
    return (probabilities * inside).sum(dim=-1) / (inside.sum(dim=-1) + 1e-6)


def clip_points(points: Tensor, frame: Tensor) -> Tensor:
    """(B, ..., 2) xy points clamped into ``[0, W] x [0, H]`` of ``frame`` (B, 2) ``(height, width)``."""
    limits = frame.flip(-1).view(frame.shape[0], *([1] * (points.dim() - 2)), 2)
    return points.clamp(min=0).minimum(limits)


def contour_points(
    points: Tensor, outputs: DenseRepPointsV2Outputs, frame: Tensor, threshold: float
) -> tuple[Tensor, Tensor]:
    """Joint inference: every point of the P4-P7 sets snapped on the P3 / P4 contour map (module docstring), every
    level at once.

    Args:
        points: (B, P, N, 2) clipped xy points of every prior's set.
        outputs: the head outputs they came from.
        frame: (B, 2) ``(height, width)``.
        threshold: contour probability above which a snapped point is added.

    Returns:
        (B, P, N, 2) the snapped points (clipped) and (B, P, N) their values: 0.5 where added, 0 elsewhere (every
        point of P3 sets, and every point without contour maps or with fewer than 2 levels).
    """
    if outputs.contour_scores.shape[-1] == 0:
        return points, points.new_zeros(points.shape[:-1])
    grids, moved = verification_grids(outputs.priors.float(), outputs.strides.float())
    scores, offsets = outputs.contour_scores.detach().float(), outputs.contour_offsets.detach().float()[:, :, None]
    channels = torch.zeros(points.shape[2], dtype=torch.long, device=points.device)
    snapped, score = snap_points(points, channels, scores, offsets, grids)  # (B, P, N, 2), (B, P, N)
    moved = moved[..., None]  # (B, P, 1)
    snapped = torch.where(moved[..., None], clip_points(snapped, frame), points)
    values = torch.where(moved & (score > threshold), CONTOUR_POINT_VALUE, 0.0)
    return snapped, values


class DenseRepPointsV2Postprocess(RepPointsPostprocess):
    """Detections with masks from ``DenseRepPointsV2Outputs`` (module docstring).

    The candidates carry, after their box, the N clipped points (2N columns), their mask probabilities (N), the
    joint-inference points (2N) and their values (N).

    Args:
        score_threshold, nms_iou, pre_nms: as ``RepPointsPostprocess`` (0.05, 0.6, 1000); boxes are ``minmax``.
        joint_inference: add contour points to the P4-P7 sets (on in the code); a decoding option.
        contour_threshold: contour probability that adds a point (0.4 code, 0.5 paper).
        mask_size: side of the box-relative mask grid the points are interpolated on (``triangulation``).
        mask_rule: ``hull`` (polygon of the points' convex hull) or ``triangulation`` (the code's interpolation).
    """

    def __init__(
        self,
        score_threshold: float = 0.05,
        nms_iou: float = 0.6,
        pre_nms: int = 1000,
        joint_inference: bool = True,
        contour_threshold: float = 0.4,
        mask_size: int = 56,
        mask_rule: Literal["hull", "triangulation"] = "hull",
    ) -> None:
        super().__init__("minmax", score_threshold, nms_iou, pre_nms)
        if mask_rule not in ("hull", "triangulation"):
            raise ValueError(f"mask_rule must be 'hull' or 'triangulation', got {mask_rule!r}")
        self.joint_inference, self.contour_threshold, self.mask_size = joint_inference, contour_threshold, mask_size
        self.mask_rule = mask_rule

    def probabilities(self, outputs: DenseRepPointsV2Outputs) -> Tensor:
        """Class probability x mask score."""
        return super().probabilities(outputs) * mask_scores(outputs.point_scores.detach().float())[..., None]

    def boxes(self, outputs: DenseRepPointsV2Outputs, frame: Tensor) -> Tensor:
        """(B, P, 4 + 6N): clipped box, points, their probabilities, joint-inference points and values."""
        boxes = super().boxes(outputs, frame)
        batch, num_priors = boxes.shape[:2]
        points = clip_points(outputs.points_refine.detach().float().view(batch, num_priors, -1, 2), frame)
        values = outputs.point_scores.detach().float().sigmoid()
        if self.joint_inference:
            added, added_values = contour_points(points, outputs, frame, self.contour_threshold)
        else:
            added, added_values = points, torch.zeros_like(values)
        return torch.cat([boxes, points.flatten(2), values, added.flatten(2), added_values], dim=-1)

    def mirror_candidates(self, candidates: Tensor, width: Tensor) -> Tensor:
        """The mirrored pass's rows mapped back: the box, and the x of its own and its added points."""
        num_points = (candidates.shape[-1] - 4) // 6
        columns = torch.arange(candidates.shape[-1], device=candidates.device)
        blocks = (columns >= 4) & (columns < 4 + 2 * num_points)
        blocks |= (columns >= 4 + 3 * num_points) & (columns < 4 + 5 * num_points)
        is_x = blocks & (columns % 2 == 0)
        mirrored = torch.where(is_x, width[..., None] - candidates, candidates)
        return torch.cat([mirror_boxes(mirrored[..., :4], width), mirrored[..., 4:]], dim=-1)

    def detections(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> Detections:
        """The kept candidates with their point-set masks."""
        num_points = (boxes.shape[-1] - 4) // 6
        own, added = boxes[:, 4 : 4 + 3 * num_points], boxes[:, 4 + 3 * num_points :]
        points = torch.cat([own[:, : 2 * num_points], added[:, : 2 * num_points]], dim=1).view(
            len(boxes), 2 * num_points, 2
        )
        values = torch.cat([own[:, 2 * num_points :], added[:, 2 * num_points :]], dim=1)
        if self.mask_rule == "hull":
            return Detections(boxes[:, :4], scores, labels, contours=point_set_hulls(points, values, boxes[:, :4]))
        masks = point_set_masks(points, values, boxes[:, :4], self.mask_size)
        return Detections(boxes[:, :4], scores, labels, masks=masks)

    def batched(self, outputs: DenseRepPointsV2Outputs, flipped: DenseRepPointsV2Outputs | None = None, k: int = 100):
        raise ValueError(
            "Dense RepPoints v2 cannot be exported to ONNX: its masks are made from the scored point sets by a "
            "convex hull or Delaunay interpolation (scipy), which has no ONNX operator"
        )
