"""The module a training step runs: the detector's forward and loss together, under autocast.

DDP wraps this module, so the whole step — network, target building, losses and any layers a head runs inside
its loss (RoI heads) — happens inside both autocast and the DDP wrapper; ``Detector.forward`` stays pure for
export.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointdet.structures import Instances


class TrainStep(nn.Module):
    """``forward(images, instances) -> losses`` of ``model`` under ``torch.autocast`` when ``amp_dtype`` is set.

    Args:
        model: a ``Detector``.
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` for mixed precision, None for full precision.
    """

    def __init__(self, model: nn.Module, amp_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model, self.amp_dtype = model, amp_dtype

    def forward(self, images: Tensor, instances: list[Instances]) -> dict[str, Tensor]:
        """(B, 3, H, W) uint8 images and their B ground truths -> named, weighted loss terms."""
        device = self.model.pixel_mean.device
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self.model.loss(images, instances)
