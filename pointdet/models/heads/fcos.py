"""FCOS as a peer: torchvision's own FCOS head, target assignment and loss on pointdet's backbone and FPN.

Not a method of pointdet: the yardstick its real-photo recipes are measured against. Every computation that makes
FCOS FCOS is torchvision's (``torchvision.models.detection.fcos``: ``FCOSHead``'s towers and initialisation, the
anchor points of ``AnchorGenerator``, ``FCOS.compute_loss``'s centre sampling and size ranges, ``FCOSHead``'s focal,
GIoU and centre-ness losses, ``FCOS.postprocess_detections``); pointdet supplies the backbone, the FPN, the data,
the schedule and the evaluation, exactly as for its own families, so that a figure reported beside it differs
only in the head.

torchvision's FCOS reads the image size off its padded input to place its anchor points
(``AnchorGenerator``: stride = image side // map side); here the padded input is the first level's map size times
its stride, the same number.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.fcos import FCOSHead as TorchvisionFCOSHead
from torchvision.models.detection.image_list import ImageList

from pointdet.structures import Instances


class FCOSOutputs(NamedTuple):
    """Raw FCOS outputs over all levels, P = the anchor points of every level in order.

    Attributes:
        class_logits: (B, P, C) logits.
        box_regression: (B, P, 4) ``(left, top, right, bottom)`` distances in units of the level's anchor size.
        centerness: (B, P, 1) logits.
        level_sizes: (B, L, 2) int64 ``(H, W)`` of each level's map (the same for every image; kept per image so
            that a batch splits like the other fields).
    """

    class_logits: Tensor
    box_regression: Tensor
    centerness: Tensor
    level_sizes: Tensor


def fcos_anchor_generator(strides: list[int]) -> AnchorGenerator:
    """torchvision's FCOS anchors: one square of side ``stride`` per map cell and level."""
    return AnchorGenerator(tuple((stride,) for stride in strides), ((1.0,),) * len(strides))


def fcos_anchors(
    generator: AnchorGenerator, outputs: FCOSOutputs, first_stride: int
) -> tuple[list[Tensor], list[int], tuple[int, int]]:
    """The anchors torchvision's FCOS places for ``outputs``: B tensors (P, 4) xyxy, the points per level, and the
    padded input size ``(H, W)``."""
    sizes = [tuple(size) for size in outputs.level_sizes[0].tolist()]
    image_size = (sizes[0][0] * first_stride, sizes[0][1] * first_stride)
    empty = outputs.class_logits.new_empty((0, 3, *image_size))  # only its size, dtype and device are read
    maps = [outputs.class_logits.new_empty((0, 0, height, width)) for height, width in sizes]
    anchors = generator(ImageList(empty, [image_size] * len(outputs.class_logits)), maps)
    return anchors, [height * width for height, width in sizes], image_size


class FCOSPeerHead(nn.Module):
    """torchvision's ``FCOSHead`` on FPN maps, with torchvision's FCOS assignment and loss.

    Args:
        in_channels: D of every FPN level.
        num_classes: C.
        strides: stride of each level (8, 16, 32, 64, 128 for P3-P7).
        num_convs: convs per tower (4, GroupNorm 32).
        center_sampling_radius: positives lie within this many strides of a box centre (1.5).
        cls_weight: weight of torchvision's focal classification loss (1.0, torchvision's).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: list[int],
        num_convs: int = 4,
        center_sampling_radius: float = 1.5,
        cls_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.head = TorchvisionFCOSHead(in_channels, 1, num_classes, num_convs)
        self.anchor_generator = fcos_anchor_generator(list(strides))
        self.strides = list(strides)
        self.center_sampling_radius = center_sampling_radius  # read by FCOS.compute_loss
        self.cls_weight = cls_weight

    def forward(self, features: list[Tensor]) -> FCOSOutputs:
        """L maps (B, D, H_l, W_l) -> ``FCOSOutputs``."""
        outputs = self.head(features)
        sizes = torch.tensor([f.shape[-2:] for f in features], device=features[0].device)
        return FCOSOutputs(
            outputs["cls_logits"],
            outputs["bbox_regression"],
            outputs["bbox_ctrness"],
            sizes.expand(len(features[0]), -1, -1),
        )

    def loss(self, outputs: FCOSOutputs, instances: list[Instances]) -> dict[str, Tensor]:
        """torchvision's FCOS loss: focal classification, GIoU boxes and centre-ness BCE, each over the positives."""
        anchors, per_level, _ = fcos_anchors(self.anchor_generator, outputs, self.strides[0])
        targets = [{"boxes": inst.boxes, "labels": inst.labels} for inst in instances]
        head_outputs = {
            "cls_logits": outputs.class_logits,
            "bbox_regression": outputs.box_regression,
            "bbox_ctrness": outputs.centerness,
        }
        losses = FCOS.compute_loss(self, targets, head_outputs, anchors, per_level)
        return {
            "loss_cls": self.cls_weight * losses["classification"],
            "loss_box": losses["bbox_regression"],
            "loss_centerness": losses["bbox_ctrness"],
        }
