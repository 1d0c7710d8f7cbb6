"""CentripetalNet's instance mask head (METHODS.md CARD 3 (e'); paper §3.3).

RoIAlign 14x14 on the last stack's stride-4 feature, four 3x3 conv + ReLU, a stride-2 transposed conv to
28x28 and a 1x1 conv to one logit map per class; trained with per-RoI binary cross-entropy on the ground-truth
class's map. Training RoIs are the detector's own top-scoring pairs (before soft-NMS) whose IoU with a
ground-truth box is >= 0.5, plus the ground-truth boxes themselves (Mask R-CNN's practice): with them the head
trains from the first step, which replaces the paper's "pre-train detection for a few epochs" (whose length
it does not give). The matching and the pooling are the RoI pieces CPM R-CNN's heads use too
(``pointdet.targets.roi_sampling.select_matched_rois``, ``pooling.MapRoIPooler``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdet.models.roi_heads.pooling import MapRoIPooler
from pointdet.ops.masks import crop_masks
from pointdet.structures import Detections, Instances
from pointdet.targets.roi_sampling import select_matched_rois

ROI_SIZE = 14
MASK_SIZE = 2 * ROI_SIZE
POSITIVE_IOU = 0.5


class MaskHead(nn.Module):
    """Box-relative mask logits for boxes on the last feature map of a list (the last hourglass stack): the
    second stage of ``Detector``, fed by its post-processor's proposals in training and its detections at test.

    Args:
        in_channels: channels of the feature map.
        num_classes: C.
        stride: input pixels per feature pixel.
        hidden: channels of the convs (256 in the paper).
    """

    def __init__(self, in_channels: int, num_classes: int, stride: int = 4, hidden: int = 256) -> None:
        super().__init__()
        self.pooler = MapRoIPooler(stride, ROI_SIZE)
        layers: list[nn.Module] = []
        for index in range(4):
            layers += [nn.Conv2d(in_channels if index == 0 else hidden, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(hidden, hidden, 2, stride=2)
        self.predictor = nn.Conv2d(hidden, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """Features [..., (B, D, H, W)] and B lists of (N_b, 4) xyxy input-pixel boxes -> (ΣN_b, C, 28, 28) logits."""
        pooled = self.pooler(features[-1], boxes)
        return self.predictor(F.relu(self.upsample(self.convs(pooled))))

    def loss(self, features: list[Tensor], proposals: list[Tensor], instances: list[Instances]) -> dict[str, Tensor]:
        """``loss_mask``: mean per-RoI BCE of the proposals matched to a ground-truth box (IoU >= 0.5) and the
        ground truths.

        Args:
            features: the feature maps; the last one, (B, D, H, W), is read.
            proposals: B (P_b, 4) detached boxes in input pixels.
            instances: B ground truths with ``masks`` at input resolution.
        """
        rois, labels, targets = [], [], []
        for boxes, inst in zip(proposals, instances, strict=True):
            if inst.masks is None:
                raise ValueError(
                    "the mask head needs ground-truth masks: load the dataset with masks (model.mask_head=true "
                    "does this for COCO data with 'segmentation' fields)"
                )
            image_rois, matched = select_matched_rois(boxes.to(inst.boxes), inst.boxes, POSITIVE_IOU, append_gt=True)
            rois.append(image_rois)
            labels.append(inst.labels[matched])
            targets.append(crop_masks(inst.masks, image_rois, matched, MASK_SIZE))
        if sum(len(r) for r in rois) == 0:  # no objects: a zero loss still connected to every parameter (DDP)
            empty = [features[-1].new_zeros(1, 4)] + [features[-1].new_zeros(0, 4)] * (len(rois) - 1)
            return {"loss_mask": self(features, empty).sum() * 0.0}
        logits = self(features, rois)
        labels, targets = torch.cat(labels), torch.cat(targets)
        chosen = logits[torch.arange(len(labels), device=logits.device), labels]
        return {"loss_mask": F.binary_cross_entropy_with_logits(chosen.float(), targets)}

    @torch.no_grad()
    def predict(self, features: list[Tensor], detections: list[Detections]) -> list[Detections]:
        """Each detection gets its class's mask probabilities (N, 28, 28) inside its box (``Detections.masks``)."""
        logits = self(features, [d.boxes for d in detections])
        labels = torch.cat([d.labels for d in detections])
        probabilities = logits[torch.arange(len(labels), device=logits.device), labels].float().sigmoid()
        per_image = probabilities.split([len(d) for d in detections])
        return [replace(d, masks=m) for d, m in zip(detections, per_image, strict=True)]
