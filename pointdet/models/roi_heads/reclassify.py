"""A region classifier that re-scores a dense detector's classes (a pointdet option, off by default; no paper of
the five has it).

The dense FPN heads classify each location with a sigmoid focal loss per class; on small multi-class photo sets they
find and box the objects as well as a two-stage detector but call the rare classes by the frequent one
(docs/real_photos.md: with every detection given the class of the object it overlaps, the main job's Aquarium val AP
goes from 8.9 to 20.1). This head reads each detection's box instead: RoIAlign 7 x 7 on its FPN level, two FC layers
and a softmax over the classes and background (Fast R-CNN's classifier, the one CPM R-CNN's RoI heads use), trained
on the dense head's own top boxes and the ground truths, sampled as Faster R-CNN samples RoIs. Its loss reaches the
FPN and the backbone as CPM R-CNN's does. The idea of a separate classifier correcting a detector's classes is that
of "Revisiting RCNN: On Awakening the Classification Power of Faster RCNN" (Cheng et al., ECCV 2018, DCR), whose
final score is the product of the detector's score and the classifier's probability of the class; here the
probability enters by its square root (``PROBABILITY_POWER``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import batched_nms

from pointdet.models.roi_heads.pooling import SAMPLING_RATIO, MLPClassifier, RoIPooler
from pointdet.structures import Detections, Instances
from pointdet.targets.roi_sampling import sample_batch_rois, threshold_matcher

ROI_SIZE = 7
FOREGROUND_IOU = 0.5
# A detection's score under class c is score x p(c | box) ** PROBABILITY_POWER. DCR multiplies (power 1); the square
# root of the probability was better on the BCCD and Aquarium val splits (52.2 / 18.6 against 51.6 / 18.0 with the
# product and 52.4 / 16.9 with the probability among the classes alone, docs/real_photos.md).
PROBABILITY_POWER = 0.5


class RoIReclassifier(nn.Module):
    """Class probabilities of boxes from the FPN maps, and the re-scored detections of a dense head.

    Args:
        level_names: names of the detector's maps (``feature_shapes``), finest first; those of P2-P5 are pooled.
        in_channels: D of the maps.
        num_classes: C.
        hidden: width of the two FC layers.
        roi_batch, positive_fraction: training RoIs sampled per image and their largest foreground share.
        sampling_ratio: RoIAlign's bilinear samples per bin and axis.
        nms_iou: the class-wise NMS of the re-scored (detection, class) pairs.
    """

    def __init__(
        self,
        level_names: Sequence[str],
        in_channels: int,
        num_classes: int,
        *,
        hidden: int = 1024,
        roi_batch: int = 512,
        positive_fraction: float = 0.25,
        sampling_ratio: int = SAMPLING_RATIO,
        nms_iou: float = 0.5,
    ) -> None:
        super().__init__()
        self.pool = RoIPooler(level_names, ROI_SIZE, sampling_ratio=sampling_ratio)
        self.classifier = MLPClassifier(in_channels * ROI_SIZE**2, hidden, num_classes + 1)
        self.matcher = threshold_matcher(FOREGROUND_IOU)
        self.sampler = BalancedPositiveNegativeSampler(roi_batch, positive_fraction)
        self.nms_iou = nms_iou

    def forward(self, features: Sequence[Tensor], boxes: list[Tensor]) -> Tensor:
        """The detector's maps and B lists of (N_b, 4) xyxy input-pixel boxes -> (ΣN_b, 1 + C) logits, background
        first."""
        return self.classifier(self.pool(features, boxes, []))

    def loss(
        self, features: Sequence[Tensor], proposals: list[Tensor], instances: list[Instances]
    ) -> dict[str, Tensor]:
        """``loss_roi_cls``: softmax cross-entropy, mean over the RoIs sampled from each image's proposals and
        ground-truth boxes (IoU >= 0.5: the matched object's class, else background).

        Args:
            features: the detector's maps in ``level_names`` order.
            proposals: B (P_b, 4) boxes of the dense head (detached).
            instances: B ground truths.
        """
        candidates = [
            torch.cat([boxes.detach().to(inst.boxes), inst.boxes])
            for boxes, inst in zip(proposals, instances, strict=True)
        ]
        rois, labels = sample_batch_rois(candidates, instances, self.matcher, self.sampler)
        logits = self(features, rois)
        if len(logits) == 0:  # no proposals and no objects: a zero loss still connected to every parameter (DDP)
            return {"loss_roi_cls": logits.sum() * 0.0}
        return {"loss_roi_cls": F.cross_entropy(logits.float(), torch.cat(labels))}

    @torch.no_grad()
    def predict(self, features: Sequence[Tensor], detections: list[Detections]) -> list[Detections]:
        """Each detection's box under every class c, scored ``score x p(c | box) ** PROBABILITY_POWER``; the pairs go
        through class-wise NMS and each image keeps as many as it had detections (with their other fields). No
        threshold on the new scores: the dense head's already chose the boxes, and one of 0.05 on the product drops
        the boxes whose classes the dense head got wrong (Aquarium val AP 17.1 against 18.0 without it)."""
        logits = self(features, [d.boxes for d in detections]).float()
        probabilities = logits.softmax(dim=1)[:, 1:] ** PROBABILITY_POWER
        rescored = []
        for det, p in zip(detections, probabilities.split([len(d) for d in detections]), strict=True):
            scores = (det.scores[:, None] * p).flatten()  # (N C,): detection-major pairs
            rows = torch.arange(len(det), device=p.device).repeat_interleave(p.shape[1])
            labels = torch.arange(p.shape[1], device=p.device).repeat(len(det))
            keep = batched_nms(det.boxes[rows], scores, labels, self.nms_iou)[: len(det)]
            rescored.append(replace(det[rows[keep]], scores=scores[keep], labels=labels[keep]))
        return rescored
