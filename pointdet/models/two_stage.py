"""A two-stage detector: backbone -> FPN -> torchvision's region proposal network -> RoI heads.

It keeps the engine's contract of ``Detector`` (``preprocess``, ``feature_shapes``, ``loss(images, instances)``
run by the train step under autocast and DDP, ``predict(images, flip, k)``, a replaceable ``postprocess`` holding
the decode-time options), and inherits ``Detector``'s normalisation and padding: the dense ``head`` slot holds the
``RegionProposalNetwork``, whose own anchor generator, matcher, sampler, box coder and NMS produce the proposals
(2000 per image in training, 1000 at test by default) and the RPN losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

from pointdet.decoders.tta import mirror
from pointdet.errors import PointdetError
from pointdet.models.detector import PIXEL_MEAN_RGB, PIXEL_STD_RGB, Detector
from pointdet.structures import Detections, Instances


class RPNOutputs(NamedTuple):
    """The RPN head's raw maps, one entry per pyramid level: objectness (B, A, H, W) and box deltas (B, 4A, H, W)."""

    objectness: list[Tensor]
    deltas: list[Tensor]


class TwoStageDetector(Detector):
    """Backbone -> neck -> RPN -> RoI heads.

    Args:
        backbone, neck: as ``Detector`` (the neck's ``feature_shapes`` name the maps).
        rpn: torchvision ``RegionProposalNetwork`` over all the neck's maps.
        roi_heads: ``loss(features, proposals, image_sizes, instances)`` and
            ``predict(features, proposals, image_sizes, postprocess, k)``.
        postprocess: the RoI heads' test-time options.
        pixel_mean, pixel_std: RGB normalisation in [0, 1] units.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: nn.Module,
        postprocess: Any,
        pixel_mean: Sequence[float] = PIXEL_MEAN_RGB,
        pixel_std: Sequence[float] = PIXEL_STD_RGB,
    ) -> None:
        super().__init__(backbone, neck, rpn, postprocess, roi_heads, pixel_mean, pixel_std)

    def _named(self, features: list[Tensor]) -> dict[str, Tensor]:
        return {shape.name: f for shape, f in zip(self.feature_shapes, features, strict=True)}

    def forward(self, images: Tensor) -> RPNOutputs:
        """(B, 3, H, W) normalised images -> the RPN head's raw maps (the network part without RoI selection)."""
        objectness, deltas = self.head.head(self.features(images))
        return RPNOutputs(objectness, deltas)

    def _proposals(
        self, x: Tensor, image_size: tuple[int, int], instances: list[Instances] | None
    ) -> tuple[list[Tensor], dict[str, Tensor], list[Tensor], list[tuple[int, int]]]:
        features = self.features(x)
        sizes = [image_size] * len(x)
        targets = None if instances is None else [{"boxes": inst.boxes, "labels": inst.labels} for inst in instances]
        proposals, rpn_losses = self.head(ImageList(x, sizes), self._named(features), targets)
        return proposals, rpn_losses, features, sizes

    def loss(self, images: Tensor, instances: list[Instances]) -> dict[str, Tensor]:
        """(B, 3, H, W) uint8 images and B ground truths -> named, weighted losses (RPN's and the RoI heads')."""
        instances = [inst.to(self.pixel_mean.device) for inst in instances]
        x = self.preprocess(images)
        proposals, rpn_losses, features, sizes = self._proposals(x, tuple(images.shape[-2:]), instances)
        losses = {"loss_rpn_objectness": rpn_losses["loss_objectness"], "loss_rpn_box": rpn_losses["loss_rpn_box_reg"]}
        losses.update(self.roi_heads.loss(features, [p.detach() for p in proposals], sizes, instances))
        return losses

    @torch.no_grad()
    def predict(self, images: Tensor, flip: bool = False, k: int = 100) -> list[Detections]:
        """Detections in the pixels of ``images`` (B, 3, H, W uint8); the model must be in eval mode (the RPN's
        proposal counts depend on it). The flip test runs the mirrored images as a second half of the batch, maps
        their detections back and merges each image's two sets with ``postprocess.merge_scales`` (class-wise NMS, or
        soft-NMS)."""
        if self.training:
            raise PointdetError("TwoStageDetector.predict needs eval mode: call model.eval() first")
        batch = torch.cat([images, images.flip(-1)]) if flip else images
        proposals, _, features, sizes = self._proposals(self.preprocess(batch), tuple(images.shape[-2:]), None)
        detections = self.roi_heads.predict(features, proposals, sizes, self.postprocess, k)
        if not flip:
            return detections
        plain, mirrored = detections[: len(images)], detections[len(images) :]
        width = images.shape[-1]
        return [self.postprocess.merge_scales([a, mirror(b, width)], k) for a, b in zip(plain, mirrored, strict=True)]
