"""Decoding of the FCOS peer: torchvision's ``FCOS.postprocess_detections``, with pointdet's flip test.

Per image and level: ``sqrt(class probability x centre-ness)`` above ``score_threshold``, the ``pre_nms`` best,
boxes decoded and clipped, then class-wise NMS at ``nms_iou`` and the top ``k`` (torchvision's code, run as is).
The flip test decodes the mirrored pass the same way, maps its boxes back (``x -> W - x``) and merges the two
detection sets with one more class-wise NMS, as the other families' flip tests merge decoded passes.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.fcos import FCOS
from torchvision.ops import batched_nms

from pointdet.decoders.tta import mirror_boxes
from pointdet.models.heads.fcos import FCOSOutputs, fcos_anchor_generator, fcos_anchors
from pointdet.structures import Detections


class FCOSPostprocess:
    """Detections from ``FCOSOutputs`` (and those of the mirrored batch).

    Args:
        strides: stride of each level, as the head's.
        score_threshold: least ``sqrt(probability x centre-ness)`` kept (torchvision's default is 0.2; pointdet
            scores every family at 0.05, the COCO-evaluation habit, so the peer uses it too).
        nms_iou: class-wise NMS IoU (0.6, torchvision's).
        pre_nms: candidates kept per level and image before NMS (1000, torchvision's ``topk_candidates``).
    """

    def __init__(
        self, strides: list[int], score_threshold: float = 0.05, nms_iou: float = 0.6, pre_nms: int = 1000
    ) -> None:
        self.strides = list(strides)
        self.anchor_generator = fcos_anchor_generator(self.strides)
        self.score_threshold, self.nms_iou, self.pre_nms = score_threshold, nms_iou, pre_nms

    def decode(self, outputs: FCOSOutputs, k: int) -> tuple[list[dict[str, Tensor]], tuple[int, int]]:
        """torchvision's per-image detections of one pass, and the padded input size they are clipped to."""
        anchors, per_level, image_size = fcos_anchors(self.anchor_generator, outputs, self.strides[0])
        head_outputs = {
            name: list(tensor.split(per_level, dim=1))
            for name, tensor in (
                ("cls_logits", outputs.class_logits),
                ("bbox_regression", outputs.box_regression),
                ("bbox_ctrness", outputs.centerness),
            )
        }
        split_anchors = [list(image_anchors.split(per_level)) for image_anchors in anchors]
        settings = SimpleNamespace(  # what FCOS.postprocess_detections reads off its model
            box_coder=det_utils.BoxLinearCoder(normalize_by_size=True),
            score_thresh=self.score_threshold,
            nms_thresh=self.nms_iou,
            topk_candidates=self.pre_nms,
            detections_per_img=k,
        )
        return FCOS.postprocess_detections(
            settings, head_outputs, split_anchors, [image_size] * len(anchors)
        ), image_size

    def __call__(self, outputs: FCOSOutputs, flipped: FCOSOutputs | None = None, k: int = 100) -> list[Detections]:
        """B ``Detections`` of at most ``k`` boxes (xyxy input pixels) by decreasing score."""
        plain, (_, width) = self.decode(outputs, k)
        if flipped is None:
            return [Detections(d["boxes"], d["scores"], d["labels"]) for d in plain]
        mirrored, _ = self.decode(flipped, k)
        detections = []
        for one, other in zip(plain, mirrored, strict=True):
            boxes = torch.cat([one["boxes"], mirror_boxes(other["boxes"], width)])
            scores, labels = torch.cat([one["scores"], other["scores"]]), torch.cat([one["labels"], other["labels"]])
            keep = batched_nms(boxes, scores, labels, self.nms_iou)[:k]
            detections.append(Detections(boxes[keep], scores[keep], labels[keep]))
        return detections
