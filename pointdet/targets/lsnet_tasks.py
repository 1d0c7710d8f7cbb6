"""LSNet's landmark tasks (METHODS.md CARD 4 (a), (b), (d), (e)): what one task regresses, as data the head, the loss
and the decoder read, so that the head is one class for every task (composition, no ``task ==`` branches).

A task says:

- ``num_vectors`` V: the landmark vectors regressed from the anchor point (each as 4 cross components);
- ``dcn_vectors`` and ``free_points``: which of them, plus how many free (dy, dx) points, are the 9 sampling points
  of the landmark DCN;
- ``aggregation``: the cross-IoU aggregation (``losses.cross_iou``);
- ``mirror_order``: the vectors' order after a horizontal flip (the flip test maps the mirrored pass back);
- ``ground_truth``: the GT landmarks and the GT box (for assignment and the loss) of every object;
- ``boxes``: the box of predicted landmarks;
- ``detection_field`` and ``detection_fields``: where decoded landmarks go in ``Detections``.

Tasks: ``ExtremePoints`` (detection: 4 extreme points + the box centre, 4 free points) and ``Contours``
(instance segmentation: 36 contour points + the polygon-box centre, contour vectors 0, 5, ..., 35 and the centre in
the DCN, the ``polygon`` aggregation, boxes and masks from the polygon).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from pointdet.losses.cross_iou import Aggregation
from pointdet.structures import Instances
from pointdet.targets.lsnet import boxes_from_extremes, contour_points, extreme_landmarks

DCN_POINTS = 9  # the landmark DCN is 3 x 3


class LandmarkTask(Protocol):
    """What the LSNet head regresses (module docstring)."""

    num_vectors: int
    free_points: int
    dcn_vectors: tuple[int, ...]
    aggregation: Aggregation
    mirror_order: tuple[int, ...]
    detection_field: str

    def ground_truth_landmarks(self, instances: Instances) -> tuple[Instances, Tensor]:
        """``instances`` with the boxes the task assigns and scores against, and their (M, V, 2) xy landmarks."""

    def boxes(self, landmarks: Tensor) -> Tensor:
        """(..., V, 2) landmarks -> (..., 4) xyxy boxes."""

    def detection_fields(self, landmarks: Tensor) -> dict[str, Tensor]:
        """(N, V, 2) decoded landmarks -> ``{detection_field: the ones Detections carries}``."""


@dataclass(frozen=True)
class ExtremePoints:
    """Detection: top, left, bottom, right extreme points and the box centre; boxes from the extremes."""

    num_vectors: ClassVar[int] = 5
    free_points: ClassVar[int] = 4
    dcn_vectors: ClassVar[tuple[int, ...]] = (0, 1, 2, 3, 4)
    aggregation: ClassVar[Aggregation] = "bbox"
    mirror_order: ClassVar[tuple[int, ...]] = (0, 3, 2, 1, 4)  # a flip swaps left and right
    detection_field: ClassVar[str] = "landmarks"

    def ground_truth_landmarks(self, instances: Instances) -> tuple[Instances, Tensor]:
        """The GT boxes as they are; ``targets.lsnet.extreme_landmarks``."""
        return instances, extreme_landmarks(instances)

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

    def boxes(self, landmarks: Tensor) -> Tensor:
        """The extent of the contour points (the centre excluded)."""
        contour = landmarks[..., : self.count, :]
        return torch.cat([contour.amin(dim=-2), contour.amax(dim=-2)], dim=-1)

    def detection_fields(self, landmarks: Tensor) -> dict[str, Tensor]:
        return {self.detection_field: landmarks[:, : self.count]}


LANDMARK_TASKS: dict[str, type] = {"detection": ExtremePoints, "segmentation": Contours}
"""``model.task`` of an LSNet config -> its landmark task."""
