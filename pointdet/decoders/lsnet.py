"""LSNet decoding (METHODS.md CARD 4 (d)): refine vectors -> extreme points -> boxes -> class-wise NMS.

The box of a prediction is ``(left.x, top.y, right.x, bottom.y)`` of its decoded extreme points (LSNet App. A).
Everything after the box (per-level top ``pre_nms``, clipping, score threshold, class-wise NMS, top ``k``, the
flip merge and the tensor-only ``batched`` path that ``pointdet export`` traces) is RepPoints' post-processing,
reused as it is: the box is handed over as the two-point set ``(x1, y1), (x2, y2)`` of its ``exact_minmax``
transform.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pointdet.decoders.reppoints import RepPointsPostprocess
from pointdet.structures import Detections
from pointdet.targets.lsnet import boxes_from_extremes

if TYPE_CHECKING:
    from pointdet.models.heads.lsnet import LSNetOutputs
    from pointdet.models.heads.reppoints import RepPointsOutputs


def as_corner_points(outputs: LSNetOutputs) -> RepPointsOutputs:
    """LSNet outputs as RepPoints outputs whose refine "points" are the boxes' corners (``exact_minmax``)."""
    from pointdet.models.heads.lsnet import landmarks_of
    from pointdet.models.heads.reppoints import RepPointsOutputs

    boxes = boxes_from_extremes(landmarks_of(outputs.components_refine, outputs.priors))  # (B, P, 4) = 2 xy points
    no_transfer = outputs.priors.new_zeros(outputs.priors.shape[0], 2)
    return RepPointsOutputs(outputs.scores, boxes, boxes, outputs.priors, outputs.strides, no_transfer)


class LSNetPostprocess:
    """Detections from ``LSNetOutputs``: boxes of the refine extreme points, then ``RepPointsPostprocess``.

    Args:
        score_threshold: least class probability kept (0.05).
        nms_iou: class-wise NMS IoU (0.6).
        pre_nms: priors kept per level and image before NMS (1000).
    """

    export_k = RepPointsPostprocess.export_k

    def __init__(self, score_threshold: float = 0.05, nms_iou: float = 0.6, pre_nms: int = 1000) -> None:
        self.boxes = RepPointsPostprocess("exact_minmax", score_threshold, nms_iou, pre_nms)

    @property
    def score_threshold(self) -> float:
        return self.boxes.score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.boxes.score_threshold = value

    def __call__(
        self,
        outputs: LSNetOutputs,
        flipped: LSNetOutputs | None = None,
        k: int = 100,
        image_size: tuple[float, float] | None = None,
    ) -> list[Detections]:
        """Per-image detections in input pixels; arguments as ``RepPointsPostprocess.__call__``."""
        mirrored = None if flipped is None else as_corner_points(flipped)
        return self.boxes(as_corner_points(outputs), mirrored, k, image_size)

    def batched(self, outputs: LSNetOutputs, flipped: LSNetOutputs | None = None, k: int = 100) -> Detections:
        """The top ``k`` pre-NMS candidates of every image, tensor ops only (``RepPointsPostprocess.batched``)."""
        mirrored = None if flipped is None else as_corner_points(flipped)
        return self.boxes.batched(as_corner_points(outputs), mirrored, k)
