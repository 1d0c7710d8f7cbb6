"""LSNet decoding (METHODS.md CARD 4 (d)): refine vectors -> the task's landmarks -> boxes -> class-wise NMS, the
landmarks carried with their box.

The box of a prediction is its landmark task's (``targets.lsnet_tasks``): ``(left.x, top.y, right.x, bottom.y)`` of
the extreme points (LSNet App. A) or the extent of the contour. Everything after the box (per-level top
``pre_nms``, clipping, score threshold, class-wise NMS, top ``k``, the flip merge and the tensor-only ``batched``
path that ``pointdet export`` traces) is RepPoints' post-processing, reused as it is: this subclass hands it, for
every prior, the clipped box followed by the flattened landmarks, and unpacks them after the NMS into ``Detections``
(``landmarks`` for the extreme points, ``contours`` for the contour, per ``LandmarkTask.detection_fields``). The
landmarks themselves are not clipped. ``batched`` (the ONNX export) gathers the first 4 columns, the boxes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pointdet.decoders.reppoints import RepPointsPostprocess, clip_boxes
from pointdet.decoders.tta import mirror_boxes
from pointdet.structures import Detections
from pointdet.targets.lsnet_tasks import ExtremePoints, LandmarkTask

if TYPE_CHECKING:
    from pointdet.models.heads.lsnet import LSNetOutputs


class LSNetPostprocess(RepPointsPostprocess):
    """Detections with their landmarks from ``LSNetOutputs``.

    Args:
        task: the landmark task of the head (extreme points by default).
        score_threshold: least class probability kept (0.05).
        nms_iou: class-wise NMS IoU (0.6).
        pre_nms: priors kept per level and image before NMS (1000).
    """

    def __init__(
        self,
        task: LandmarkTask | None = None,
        score_threshold: float = 0.05,
        nms_iou: float = 0.6,
        pre_nms: int = 1000,
    ) -> None:
        super().__init__("exact_minmax", score_threshold, nms_iou, pre_nms)
        self.task = ExtremePoints() if task is None else task

    def boxes(self, outputs: LSNetOutputs, frame: Tensor) -> Tensor:
        """(B, P, 4 + 2V): every prior's box, clipped to ``frame`` (B, 2) ``(height, width)``, then its V refine
        landmarks flattened ``x0, y0, x1, y1, ...`` (input pixels)."""
        from pointdet.models.heads.lsnet import landmarks_of

        landmarks = landmarks_of(outputs.components_refine.detach().float(), outputs.priors.float())  # (B, P, V, 2)
        boxes = clip_boxes(self.task.boxes(landmarks), frame)
        return torch.cat([boxes, landmarks.flatten(2)], dim=-1)

    def merged_candidates(
        self, outputs: LSNetOutputs, flipped: LSNetOutputs | None, frame: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``candidates`` of ``outputs``, followed by those of ``flipped`` mapped back: ``x -> W - x`` for boxes and
        landmarks, the landmarks put back in the task's order (``mirror_order``)."""
        boxes, scores = self.candidates(outputs, frame)
        if flipped is None:
            return boxes, scores
        mirrored, mirrored_scores = self.candidates(flipped, frame)
        width = frame[:, None, 1]  # (B, 1)
        landmarks = mirrored[..., 4:].unflatten(-1, (-1, 2))[:, :, list(self.task.mirror_order)]
        landmarks = torch.stack([width[..., None] - landmarks[..., 0], landmarks[..., 1]], dim=-1)
        mirrored = torch.cat([mirror_boxes(mirrored[..., :4], width), landmarks.flatten(2)], dim=-1)
        return torch.cat([boxes, mirrored], dim=1), torch.cat([scores, mirrored_scores], dim=1)

    def detections(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> Detections:
        """The kept (N, 4 + 2V) candidates: boxes, and the landmarks in the task's ``Detections`` fields."""
        landmarks = boxes[:, 4:].unflatten(-1, (-1, 2))
        return Detections(boxes[:, :4], scores, labels, **self.task.detection_fields(landmarks))
