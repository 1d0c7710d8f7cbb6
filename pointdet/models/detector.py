"""A one-stage detector: backbone -> neck -> head, with normalisation on the model's device.

``forward`` always returns the head's raw outputs; training is ``model.loss(model(images), gt)`` and
inference is ``model.predict(images)``. The engine knows nothing else about a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointdet.structures import Detections, Instances

# CenterNet's normalisation (its mean/std are given in BGR; these are the same values in RGB order).
PIXEL_MEAN_RGB = (0.470, 0.447, 0.408)
PIXEL_STD_RGB = (0.278, 0.274, 0.289)


class Detector(nn.Module):
    """Backbone -> neck -> head, normalising uint8 images on the model's device.

    Args:
        backbone: returns a list of maps.
        neck: turns that list into one map.
        head: has ``forward``, ``loss(outputs, instances)`` and ``decode(outputs, flipped, k)``.
        pixel_mean, pixel_std: RGB normalisation in [0, 1] units.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        pixel_mean: Sequence[float] = PIXEL_MEAN_RGB,
        pixel_std: Sequence[float] = PIXEL_STD_RGB,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1) * 255, persistent=False)

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 RGB -> normalised float on the model's device, zero-padded at the bottom/right to a
        multiple of the backbone's ``size_divisor`` (coordinates are unchanged, and a flip test then mirrors the
        padded frame)."""
        images = images.to(self.pixel_mean.device, non_blocking=True)
        x = (images.float() - self.pixel_mean) / self.pixel_std
        divisor = self.backbone.size_divisor
        return F.pad(x, (0, -x.shape[-1] % divisor, 0, -x.shape[-2] % divisor))

    def forward(self, images: Tensor):
        """(B, 3, H, W) normalised images -> the head's raw outputs."""
        return self.head(self.neck(self.backbone(images)))

    def loss(self, outputs, instances: list[Instances]) -> dict[str, Tensor]:
        return self.head.loss(outputs, instances)

    @torch.no_grad()
    def predict(self, images: Tensor, flip: bool = False, k: int = 100) -> list[Detections]:
        """Detections in the pixels of ``images`` (B, 3, H, W uint8), optionally with flip test."""
        x = self.preprocess(images)
        if not flip:
            return self.head.decode(self(x), k=k)
        both = self(torch.cat([x, x.flip(-1)]))
        plain = type(both)(*(t[: len(x)] for t in both))
        mirrored = type(both)(*(t[len(x) :] for t in both))
        return self.head.decode(plain, mirrored, k=k)
