"""LSNet's landmark tasks (METHODS.md CARD 4 (a), (b), (d), (e)): what one task regresses, as data the head, the loss
and the decoder read, so that the head is one class for every task (composition, no ``task ==`` branches).

A task says:

- ``num_vectors`` V: the landmark vectors regressed from the anchor point (each as 4 cross components);
- ``dcn_vectors`` and ``free_points``: which of them, plus how many free (dy, dx) points, are the 9 sampling points
  of the landmark DCN;
- ``box_branch_vectors``: vectors (the last ones) regressed by a second, box branch with its own tower, init and
  refine convs and 4 free DCN points (LSNet pose obj-box's bbox branch: 4 box border centres + the box centre);
  0 = one branch;
- ``aggregation``: the cross-IoU aggregation (``losses.cross_iou``) of the main landmarks;
- ``mirror_order``: the vectors' order after a horizontal flip (the flip test maps the mirrored pass back);
- ``ground_truth_landmarks``: the GT landmarks and the GT box (for assignment and the loss) of every object;
- ``landmark_loss``: the per-sample cross-IoU loss of predicted components against GT landmarks;
- ``boxes``: the box of predicted landmarks;
- ``detection_field`` and ``detection_fields``: where decoded landmarks go in ``Detections``.

Tasks: ``ExtremePoints`` (detection: 4 extreme points + the box centre, 4 free points), ``Contours``
(instance segmentation: 36 contour points + the polygon-box centre, contour vectors 0, 5, ..., 35 and the centre in
the DCN, the ``polygon`` aggregation, boxes and masks from the polygon) and ``Keypoints`` (pose: 17 keypoints + a
centre, odd keypoints 1, 3, ..., 15 and the centre in the DCN, the ``keypoint`` aggregation; obj-box with the box
branch or kps-box, CARD 4 (a), (b)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar, Literal, Protocol

import torch
from torch import Tensor

from pointdet.losses.cross_iou import (
    Aggregation,
    cross_iou_loss,
    decode_components,
    signed_offset_l1,
    softened_targets,
)
from pointdet.structures import Instances
from pointdet.targets.lsnet import border_centres, boxes_from_extremes, contour_points, extreme_landmarks, points_extent

DCN_POINTS = 9  # the landmark DCN is 3 x 3
BOX_BRANCH_VECTORS = 5  # 4 box border centres + the box centre, in ExtremePoints' order
BOX_BRANCH_FREE_POINTS = 4  # the box branch's DCN: its 5 vectors and 4 free points
BOX_BRANCH_LOSS = 0.1  # obj-box: the bbox branch's cIoU weights 0.1 / 0.2 against the keypoints' 1.0 / 2.0 (CARD 4 (c))


def landmark_cross_iou(
    pred: Tensor,
    gt_landmarks: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    aggregation: Aggregation,
    boxes_of: Callable[[Tensor], Tensor] | None,
    visible: Tensor | None = None,
) -> Tensor:
    """Per-sample cross-IoU loss of (Q, V, 4) predicted components against (Q, V, 2) GT landmarks seen from (Q, 1, 2)
    anchors, with the code's box penalty (against the (Q, 4) GT boxes) when ``boxes_of`` (landmarks -> boxes) is
    given; ``visible`` as ``losses.cross_iou.cross_iou``. Returns (Q,)."""
    target = softened_targets(gt_landmarks - anchors)
    if boxes_of is None:
        return cross_iou_loss(pred, target, aggregation, visible=visible)
    pred_boxes = boxes_of(decode_components(pred) + anchors)
    return cross_iou_loss(pred, target, aggregation, pred_boxes, gt_boxes, visible=visible)


class LandmarkTask(Protocol):
    """What the LSNet head regresses (module docstring)."""

    num_vectors: int
    free_points: int
    dcn_vectors: tuple[int, ...]
    box_branch_vectors: int
    aggregation: Aggregation
    mirror_order: tuple[int, ...]
    detection_field: str

    def ground_truth_landmarks(self, instances: Instances) -> tuple[Instances, Tensor]:
        """``instances`` with the boxes the task assigns and scores against, and their (M, V, D) landmarks (D = 2,
        xy; ``Keypoints``: 3, xy and visibility)."""

    def landmark_loss(
        self, pred: Tensor, gt_landmarks: Tensor, anchors: Tensor, gt_boxes: Tensor, box_penalty: bool
    ) -> Tensor:
        """(Q, V, 4) predicted components, (Q, V, D) GT landmarks, (Q, 1, 2) anchors, (Q, 4) GT boxes -> (Q,) loss
        (with the code's box penalty where the task's aggregation has one and ``box_penalty`` is set)."""

    def boxes(self, landmarks: Tensor) -> Tensor:
        """(..., V, 2) landmarks -> (..., 4) xyxy boxes."""

    def detection_fields(self, landmarks: Tensor) -> dict[str, Tensor]:
        """(N, V, 2) decoded landmarks -> ``{detection_field: the ones Detections carries}``."""


@dataclass(frozen=True)
class ExtremePoints:
    """Detection: top, left, bottom, right extreme points and the box centre; boxes from the extremes.

    Args:
        aggregation: the cross-IoU of a sample: ``bbox``, one ratio over the 20 components of the 5 vectors (the
            official code's ``CrossIOULoss``, the default: the code's released models and numbers were trained with
            it), or ``vector``, the paper's eq. 1: the mean over the 4 extreme-point vectors of each vector's ratio
            ``|min(q, q*)|_1 / |max(q, q*)|_1`` (the centre vector, the code's addition, then has no loss term and is
            one more free DCN point).
    """

    aggregation: Aggregation = "bbox"
    num_vectors: ClassVar[int] = 5
    free_points: ClassVar[int] = 4
    dcn_vectors: ClassVar[tuple[int, ...]] = (0, 1, 2, 3, 4)
    box_branch_vectors: ClassVar[int] = 0
    mirror_order: ClassVar[tuple[int, ...]] = (0, 3, 2, 1, 4)  # a flip swaps left and right
    detection_field: ClassVar[str] = "landmarks"

    def __post_init__(self) -> None:
        if self.aggregation not in ("bbox", "vector"):
            raise ValueError(f"the detection aggregation must be 'bbox' or 'vector', got {self.aggregation!r}")

    def ground_truth_landmarks(self, instances: Instances) -> tuple[Instances, Tensor]:
        """The GT boxes as they are; ``targets.lsnet.extreme_landmarks``."""
        return instances, extreme_landmarks(instances)

    def landmark_loss(
        self, pred: Tensor, gt_landmarks: Tensor, anchors: Tensor, gt_boxes: Tensor, box_penalty: bool
    ) -> Tensor:
        boxes_of = self.boxes if box_penalty else None
        if self.aggregation == "vector":  # eq. 1 over the 4 extreme points
            return landmark_cross_iou(pred[:, :4], gt_landmarks[:, :4], anchors, gt_boxes, "vector", boxes_of)
        return landmark_cross_iou(pred, gt_landmarks, anchors, gt_boxes, "bbox", boxes_of)

    def boxes(self, landmarks: Tensor) -> Tensor:
        return boxes_from_extremes(landmarks)

    def detection_fields(self, landmarks: Tensor) -> dict[str, Tensor]:
        return {self.detection_field: landmarks[:, :4]}


@dataclass(frozen=True)
class Contours:
    """Instance segmentation: ``count`` contour points (clockwise from the top centre) and the polygon-box centre.

    Args:
        count: contour points (36).
    """

    count: int = 36
    free_points: ClassVar[int] = 0
    box_branch_vectors: ClassVar[int] = 0
    aggregation: ClassVar[Aggregation] = "polygon"
    detection_field: ClassVar[str] = "contours"

    def __post_init__(self) -> None:
        if self.count < DCN_POINTS - 1:
            raise ValueError(f"a contour needs at least {DCN_POINTS - 1} points for the landmark DCN, got {self.count}")

    @property
    def num_vectors(self) -> int:
        return self.count + 1

    @property
    def dcn_vectors(self) -> tuple[int, ...]:
        """8 contour points every ``ceil(count / 8)`` (0, 5, ..., 35 for 36) and the centre (CARD 4 (e))."""
        step = -(-self.count // (DCN_POINTS - 1))
        return (*range(0, step * (DCN_POINTS - 1), step), self.count)

    @property
    def mirror_order(self) -> tuple[int, ...]:
        """A mirrored clockwise contour runs counter-clockwise: read it backwards from its first point."""
        return (0, *range(self.count - 1, 0, -1), self.count)

    def ground_truth_landmarks(self, instances: Instances) -> tuple[Instances, Tensor]:
        """``targets.lsnet.contour_points`` of every object, brought onto its GT box (a crop clips the boxes but not
        the polygons), then the polygon's box and its centre; the boxes are replaced by the polygons' (CARD 4 (b)
        step 7). Objects without polygon parts use their box corners."""
        boxes = instances.boxes
        polygons = instances.polygons if instances.polygons is not None else [[] for _ in range(len(boxes))]
        contours = [
            contour_points([part.to(boxes) for part in parts], box, self.count)
            for parts, box in zip(polygons, boxes, strict=True)
        ]
        points = torch.stack(contours) if contours else boxes.new_zeros(0, self.count, 2)
        points = torch.minimum(torch.maximum(points, boxes[:, None, :2]), boxes[:, None, 2:])
        polygon_boxes = self.boxes(points)
        centres = ((polygon_boxes[:, :2] + polygon_boxes[:, 2:]) / 2)[:, None]
        return replace(instances, boxes=polygon_boxes), torch.cat([points, centres], dim=1)

    def landmark_loss(
        self, pred: Tensor, gt_landmarks: Tensor, anchors: Tensor, gt_boxes: Tensor, box_penalty: bool
    ) -> Tensor:
        boxes_of = self.boxes if box_penalty else None
        return landmark_cross_iou(pred, gt_landmarks, anchors, gt_boxes, "polygon", boxes_of)

    def boxes(self, landmarks: Tensor) -> Tensor:
        """The extent of the contour points (the centre excluded)."""
        return points_extent(landmarks[..., : self.count, :])

    def detection_fields(self, landmarks: Tensor) -> dict[str, Tensor]:
        return {self.detection_field: landmarks[:, : self.count]}


PoseBox = Literal["object", "keypoints"]


@dataclass(frozen=True)
class Keypoints:
    """Pose: ``count`` keypoints and a centre as landmark vectors; one class per keypoint layout (COCO: person).

    Vectors: the ``count`` keypoints, the centre, then with ``box="object"`` (obj-box, the default) the box branch's
    4 border centres of the GT box and its centre. The landmark DCN samples keypoints 1, 3, ..., 15 and the centre
    (CARD 4 (e); layouts of fewer than 16 keypoints repeat them cyclically, 0, 1, ..., to fill 8 points).

    - ``object``: assignment and scoring on the annotated box, the keypoint centre is the box centre; detections take
      the box branch's box (left.x, top.y, right.x, bottom.y of the border centres).
    - ``keypoints`` (kps-box): the box is the extent of the visible (v > 0) keypoints and the centre its centre;
      objects without a visible keypoint are dropped (never positive); detections take the keypoints' extent.

    Loss: the ``keypoint`` aggregation (invisible keypoints weighted 0, the centre always kept) and, for obj-box, the
    box branch's ``bbox`` cross-IoU (with the code's penalty) x 0.1 (``BOX_BRANCH_LOSS``). ``offset_l1`` > 0 adds
    pointdet's own term, ``offset_l1 x losses.cross_iou.signed_offset_l1`` of the keypoints and the centre over the
    square root of the GT box area: with the cross-IoU alone, a keypoint coordinate whose sign varies between objects
    of one class (the shapes' top.x, right.y, ...) settles on its more frequent side (docs/lsnet.md).

    Args:
        count: keypoints per object (17 for COCO).
        flip_pairs: index pairs a horizontal flip swaps (left / right joints).
        box: ``object`` (obj-box) or ``keypoints`` (kps-box).
        aggregation: cross-IoU aggregation of the keypoints (``losses.cross_iou``): ``keypoint``, one ratio per
            vector and axis (the official code's), or ``vector``, one ratio per vector over its 4 components.
        offset_l1: weight of the signed-offset L1 term (0: the official loss).
    """

    count: int = 17
    flip_pairs: tuple[tuple[int, int], ...] = ()
    box: PoseBox = "object"
    aggregation: Aggregation = "keypoint"
    offset_l1: float = 0.0
    free_points: ClassVar[int] = 0
    detection_field: ClassVar[str] = "keypoints"

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a pose task needs keypoints, got count={self.count}")
        if self.aggregation not in ("keypoint", "vector"):
            raise ValueError(f"a pose task's aggregation must be 'keypoint' or 'vector', got {self.aggregation!r}")
        if self.box not in ("object", "keypoints"):
            raise ValueError(f"box must be 'object' or 'keypoints', got {self.box!r}")
        if self.offset_l1 < 0:
            raise ValueError(f"offset_l1 must be >= 0, got {self.offset_l1}")
        if any(not (0 <= i < self.count and 0 <= j < self.count) for i, j in self.flip_pairs):
            raise ValueError(f"flip_pairs {self.flip_pairs} index beyond {self.count} keypoints")

    @property
    def box_branch_vectors(self) -> int:
        return BOX_BRANCH_VECTORS if self.box == "object" else 0

    @property
    def num_vectors(self) -> int:
        return self.count + 1 + self.box_branch_vectors

    @property
    def dcn_vectors(self) -> tuple[int, ...]:
        """Keypoints 1, 3, ..., 15 and the centre (the code's ``1::2`` of 17 keypoints)."""
        odd = list(range(1, self.count, 2))[: DCN_POINTS - 1]
        cycle = odd if len(odd) == DCN_POINTS - 1 else [i % self.count for i in range(DCN_POINTS - 1)]
        return (*cycle, self.count)

    @property
    def mirror_order(self) -> tuple[int, ...]:
        """Left and right keypoints swap; the box branch's left and right border centres too."""
        order = list(range(self.count))
        for i, j in self.flip_pairs:
            order[i], order[j] = j, i
        box_branch = [self.count + 1 + i for i in ExtremePoints.mirror_order][: self.box_branch_vectors]
        return (*order, self.count, *box_branch)

    def ground_truth_landmarks(self, instances: Instances) -> tuple[Instances, Tensor]:
        """(M, V, 3) landmarks ``(x, y, visibility)``: the keypoints with their visibility, then the centre and the
        box branch's vectors, visibility 1 (module docstring for the boxes and the dropped objects)."""
        keypoints = instances.keypoints.to(instances.boxes)
        if keypoints.shape[1] != self.count:
            raise ValueError(f"the pose task has {self.count} keypoints, the ground truth {keypoints.shape[1]}")
        if self.box == "keypoints":
            instances = instances[(keypoints[..., 2] > 0).any(dim=1)]
            keypoints = instances.keypoints.to(instances.boxes)
            instances = replace(instances, boxes=visible_extent(keypoints))
        boxes = instances.boxes
        centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
        points = [keypoints[..., :2], centres]
        if self.box == "object":
            points += [border_centres(boxes), centres]
        landmarks = torch.cat(points, dim=1)
        visibility = torch.cat([keypoints[..., 2], boxes.new_ones(len(boxes), landmarks.shape[1] - self.count)], 1)
        return instances, torch.cat([landmarks, visibility[..., None]], dim=-1)

    def landmark_loss(
        self, pred: Tensor, gt_landmarks: Tensor, anchors: Tensor, gt_boxes: Tensor, box_penalty: bool
    ) -> Tensor:
        pose = self.count + 1
        visible = gt_landmarks[:, : self.count, 2]
        loss = landmark_cross_iou(
            pred[:, :pose], gt_landmarks[:, :pose, :2], anchors, gt_boxes, self.aggregation, None, visible
        )
        if self.offset_l1:
            scale = (gt_boxes[:, 2:] - gt_boxes[:, :2]).prod(dim=1).clamp(min=1).sqrt()
            target = softened_targets(gt_landmarks[:, :pose, :2] - anchors)
            loss = loss + self.offset_l1 * signed_offset_l1(pred[:, :pose], target, scale, visible)
        if self.box_branch_vectors:
            boxes_of = boxes_from_extremes if box_penalty else None
            box_branch = landmark_cross_iou(
                pred[:, pose:], gt_landmarks[:, pose:, :2], anchors, gt_boxes, "bbox", boxes_of
            )
            loss = loss + BOX_BRANCH_LOSS * box_branch
        return loss

    def boxes(self, landmarks: Tensor) -> Tensor:
        """obj-box: the box branch's border centres as extreme points; kps-box: the keypoints' extent."""
        if self.box_branch_vectors:
            return boxes_from_extremes(landmarks[..., self.count + 1 :, :])
        return points_extent(landmarks[..., : self.count, :])

    def detection_fields(self, landmarks: Tensor) -> dict[str, Tensor]:
        """``keypoints`` (N, K, 3): xy and a score of 0 (regressed, as CenterNet's unsnapped joints)."""
        joints = landmarks[:, : self.count]
        return {self.detection_field: torch.cat([joints, joints.new_zeros(*joints.shape[:-1], 1)], dim=-1)}


def visible_extent(keypoints: Tensor) -> Tensor:
    """(M, K, 3) keypoints, each object with a visible one -> (M, 4) xyxy extent of the visible (v > 0) ones (the
    code's ``process_keypoints_with_kbox``)."""
    visible = keypoints[..., 2:] > 0
    low = torch.where(visible, keypoints[..., :2], torch.inf).amin(dim=1)
    high = torch.where(visible, keypoints[..., :2], -torch.inf).amax(dim=1)
    return torch.cat([low, high], dim=1)


def landmark_task(
    task: str,
    num_joints: int = 0,
    flip_pairs: Sequence[tuple[int, int]] = (),
    pose_box: PoseBox = "object",
    pose_aggregation: Aggregation = "keypoint",
    pose_offset_l1: float = 0.0,
    detection_aggregation: Aggregation = "bbox",
) -> LandmarkTask:
    """The landmark task of an LSNet config's ``model.task``; pose reads the data set's keypoints, ``pose_box``,
    ``pose_aggregation`` and ``pose_offset_l1``, detection ``detection_aggregation``."""
    pairs = tuple((int(i), int(j)) for i, j in flip_pairs)
    tasks = {
        "detection": partial(ExtremePoints, detection_aggregation),
        "segmentation": Contours,
        "pose": partial(Keypoints, num_joints, pairs, pose_box, pose_aggregation, pose_offset_l1),
    }
    return tasks[task]()
