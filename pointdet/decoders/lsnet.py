"""LSNet decoding (METHODS.md CARD 4 (d)): refine vectors -> the task's landmarks -> boxes -> class-wise NMS, the
landmarks carried with their box.

The box of a prediction is its landmark task's (``targets.lsnet_tasks``): ``(left.x, top.y, right.x, bottom.y)`` of
the extreme points (LSNet App. A) or the extent of the contour. Everything after the box (per-level top
``pre_nms``, clipping, score threshold, class-wise NMS, top ``k``, the flip merge and the tensor-only ``batched``
path that ``pointdet export`` traces) is RepPoints' post-processing, reused as it is: this subclass hands it, for
every prior, the clipped box followed by the flattened landmarks, and unpacks them after the NMS into ``Detections``
(``landmarks`` for the extreme points, ``contours`` for the contour, per ``LandmarkTask.detection_fields``). The
landmarks themselves are not clipped. ``batched`` (the ONNX export) gathers the first 4 columns, the boxes.

LSNet-CPV (``joint_inference``): the clipped boxes of P4-P7 are corner-refined by the P3 / P4 corner-verification
maps before the selection, RepPoints v2's ``decoders.reppoints_v2.joint_inference`` (Duankaiwen/LSNet
lscpvnet_head.py ``_get_bboxes_single`` does the same); the landmarks keep their regressed positions.

Multi-scale test (``merge_scales``, which ``engine.inference.predict_images`` calls when a post-processor has one):
the detections of every scale, in the same pixels, merged by class-wise **box voting** (IoU 0.66, METHODS.md §1.11,
``ops.nms.box_voting``) with the landmarks voted alongside the boxes, as the code's ATSS-style test (CARD 4 (d) 8).
The code's per-scale valid box-size ranges are applied before, scale by scale, by ``predict_images``
(``eval.scale_box_ranges``, ``configs.presets.atss_multiscale_eval``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from pointdet.decoders.reppoints import RepPointsPostprocess, clip_boxes
from pointdet.decoders.reppoints_v2 import joint_inference
from pointdet.decoders.tta import mirror_boxes
from pointdet.ops.nms import box_voting
from pointdet.structures import Detections
from pointdet.targets.lsnet_tasks import ExtremePoints, LandmarkTask

if TYPE_CHECKING:
    from pointdet.models.heads.lsnet import LSNetCPVOutputs, LSNetOutputs


class LSNetPostprocess(RepPointsPostprocess):
    """Detections with their landmarks from ``LSNetOutputs``.

    Args:
        task: the landmark task of the head (extreme points by default).
        score_threshold: least class probability kept (0.05).
        nms_iou: class-wise NMS IoU (0.6).
        pre_nms: priors kept per level and image before NMS (1000).
        vote_iou: box-voting IoU of the multi-scale merge (0.66).
        stage: decode the ``refine`` vectors (LSNet) or the ``init`` ones (first-stage boxes, the paper's Table 2).
        joint_inference: LSNet-CPV: refine the P4-P7 boxes with the P3 / P4 corner maps (``LSNetCPVOutputs``), as
            RepPoints v2 (``decoders.reppoints_v2.joint_inference``); the landmarks stay as regressed.
    """

    def __init__(
        self,
        task: LandmarkTask | None = None,
        score_threshold: float = 0.05,
        nms_iou: float = 0.6,
        pre_nms: int = 1000,
        vote_iou: float = 0.66,
        stage: Literal["refine", "init"] = "refine",
        joint_inference: bool = False,
    ) -> None:
        super().__init__("exact_minmax", score_threshold, nms_iou, pre_nms)
        if stage not in ("refine", "init"):
            raise ValueError(f"stage must be 'refine' or 'init', got {stage!r}")
        self.task = ExtremePoints() if task is None else task
        self.vote_iou, self.stage, self.joint_inference = vote_iou, stage, joint_inference

    def boxes(self, outputs: LSNetOutputs | LSNetCPVOutputs, frame: Tensor) -> Tensor:
        """(B, P, 4 + 2V): every prior's box, clipped to ``frame`` (B, 2) ``(height, width)`` (and corner-refined
        with ``joint_inference``), then its V landmarks of the decoded ``stage`` flattened ``x0, y0, x1, y1, ...``
        (input pixels)."""
        from pointdet.models.heads.lsnet import landmarks_of

        components = outputs.components_refine if self.stage == "refine" else outputs.components_init
        landmarks = landmarks_of(components.detach().float(), outputs.priors.float())  # (B, P, V, 2)
        boxes = clip_boxes(self.task.boxes(landmarks), frame)
        if self.joint_inference:
            boxes = joint_inference(boxes, outputs, frame)
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

    def merge_scales(self, parts: list[Detections], k: int = 100) -> Detections:
        """Detections of one image at several test scales (already in the same pixels) merged by class-wise box
        voting (``vote_iou``; re-scored members kept above ``score_threshold``), the task's landmarks voted with
        the boxes; the top ``k``."""
        combined = Detections.cat(parts)
        field = self.task.detection_field
        voted = box_voting(
            combined.boxes, combined.scores, combined.labels, self.vote_iou, self.score_threshold, k,
            extra=getattr(combined, field),
        )  # fmt: skip
        return Detections(voted.boxes, voted.scores, voted.labels, **{field: voted.extra})
