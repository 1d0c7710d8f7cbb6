"""A detector: backbone -> neck -> dense head, a post-processor, and an optional RoI stage.

DETR's split: the network (``forward``, pure and exportable), the criterion (``head.loss`` and the RoI stage's
loss, reached through ``Detector.loss``) and the post-processor (a plain object built from the config's
decode-time options, replaceable without retraining). The engine knows nothing else about a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdet.structures import Detections, FeatureShape, Instances

# CenterNet's normalisation (its mean/std are given in BGR; these are the same values in RGB order).
PIXEL_MEAN_RGB = (0.470, 0.447, 0.408)
PIXEL_STD_RGB = (0.278, 0.274, 0.289)


def split_batch(outputs: NamedTuple, first: int) -> tuple[NamedTuple, NamedTuple]:
    """Outputs of a batch -> the outputs of its first ``first`` images and of the rest."""
    return type(outputs)(*(t[:first] for t in outputs)), type(outputs)(*(t[first:] for t in outputs))


def as_float32(outputs: NamedTuple) -> NamedTuple:
    """Floating fields in float32: losses are computed in full precision when the network ran under autocast."""
    return type(outputs)(*(t.float() if t.is_floating_point() else t for t in outputs))


class Detector(nn.Module):
    """Backbone -> neck -> head, normalising uint8 images on the model's device.

    Args:
        backbone: returns a list of maps described by its ``feature_shapes``; has ``size_divisor``.
        neck: turns that list into the maps the head reads (its own ``feature_shapes``); None = the backbone's.
        head: ``forward(features) -> outputs`` (a NamedTuple of raw tensors) and ``loss(outputs, instances)``.
        postprocess: ``postprocess(outputs, flipped, k) -> list[Detections]``; for an RoI stage also
            ``proposals(outputs) -> list[Tensor]``.
        roi_heads: optional second stage, ``loss(features, proposals, instances)`` and
            ``predict(features, detections)``.
        pixel_mean, pixel_std: RGB normalisation in [0, 1] units.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module | None,
        head: nn.Module,
        postprocess: Any,
        roi_heads: nn.Module | None = None,
        pixel_mean: Sequence[float] = PIXEL_MEAN_RGB,
        pixel_std: Sequence[float] = PIXEL_STD_RGB,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.head, self.roi_heads = backbone, neck, head, roi_heads
        self.postprocess = postprocess
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1) * 255, persistent=False)

    def set_normalisation(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        """Normalise with other RGB constants in [0, 1] units (a converted model trained with them)."""
        self.pixel_mean.copy_(torch.tensor(pixel_mean).view(1, 3, 1, 1) * 255)
        self.pixel_std.copy_(torch.tensor(pixel_std).view(1, 3, 1, 1) * 255)

    @property
    def feature_shapes(self) -> tuple[FeatureShape, ...]:
        """The maps the head reads."""
        return (self.neck or self.backbone).feature_shapes

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 RGB -> normalised float on the model's device, zero-padded at the bottom/right to a
        multiple of the backbone's ``size_divisor`` (coordinates are unchanged, and a flip test then mirrors the
        padded frame)."""
        images = images.to(self.pixel_mean.device, non_blocking=True)
        x = (images.float() - self.pixel_mean) / self.pixel_std
        divisor = self.backbone.size_divisor
        return F.pad(x, (0, -x.shape[-1] % divisor, 0, -x.shape[-2] % divisor))

    def features(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) normalised images -> the maps of ``feature_shapes``."""
        features = self.backbone(images)
        return features if self.neck is None else self.neck(features)

    def forward(self, images: Tensor) -> NamedTuple:
        """(B, 3, H, W) normalised images -> the head's raw outputs."""
        return self.head(self.features(images))

    def loss(self, images: Tensor, instances: list[Instances]) -> dict[str, Tensor]:
        """Network and criterion in one call, so that both run inside autocast and inside the DDP wrapper.

        Args:
            images: (B, 3, H, W) uint8 RGB.
            instances: B ground truths in the pixels of ``images``.

        Returns:
            Named, already weighted loss terms.
        """
        features = self.features(self.preprocess(images))
        outputs = self.head(features)
        instances = [inst.to(self.pixel_mean.device) for inst in instances]
        losses = self.head.loss(as_float32(outputs), instances)
        if self.roi_heads is not None:
            losses.update(self.roi_heads.loss(features, self.postprocess.proposals(outputs), instances))
        return losses

    def head_outputs(self, images: Tensor, flip: bool = False) -> tuple[NamedTuple, NamedTuple | None, list[Tensor]]:
        """(B, 3, H, W) uint8 images -> the head's float32 outputs, those of the mirrored batch (None without
        ``flip``) and the plain pass's features: what the post-processor and the RoI stage read."""
        x = self.preprocess(images)
        features = self.features(torch.cat([x, x.flip(-1)]) if flip else x)
        outputs = as_float32(self.head(features))
        flipped = None
        if flip:
            outputs, flipped = split_batch(outputs, len(x))
            features = [f[: len(x)] for f in features]
        return outputs, flipped, features

    @torch.no_grad()
    def predict(self, images: Tensor, flip: bool = False, k: int = 100) -> list[Detections]:
        """Detections in the pixels of ``images`` (B, 3, H, W uint8), optionally with flip test (the RoI stage
        reads the plain pass's features)."""
        outputs, flipped, features = self.head_outputs(images, flip)
        detections = self.postprocess(outputs, flipped, k=k)
        if self.roi_heads is not None:
            detections = self.roi_heads.predict(features, detections)
        return detections
