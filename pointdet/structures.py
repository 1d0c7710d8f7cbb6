"""Typed containers shared by every layer: ground-truth ``Instances`` and predicted ``Detections``.

Coordinates are absolute pixels of the image they belong to, boxes are ``xyxy``, keypoints ``(x, y, v)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


def _move(obj, device: torch.device | str):
    changes = {f.name: getattr(obj, f.name).to(device) for f in fields(obj) if isinstance(getattr(obj, f.name), Tensor)}
    return replace(obj, **changes)


@dataclass(frozen=True)
class Instances:
    """Ground-truth objects of one image.

    Attributes:
        boxes: (N, 4) float xyxy pixels.
        labels: (N,) int64 contiguous class ids in ``0..C-1``.
        keypoints: (N, K, 3) float ``(x, y, visibility)``; K may be 0.
        masks: (N, H, W) uint8 binary masks, or None when masks were not loaded.
    """

    boxes: Tensor
    labels: Tensor
    keypoints: Tensor
    masks: Tensor | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to(self, device: torch.device | str) -> Instances:
        return _move(self, device)

    @staticmethod
    def empty(num_keypoints: int = 0) -> Instances:
        return Instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, num_keypoints, 3))


@dataclass(frozen=True)
class Detections:
    """Predicted objects of one image.

    Attributes:
        boxes: (N, 4) float xyxy pixels of the original image.
        scores: (N,) float confidences in [0, 1], sorted in decreasing order.
        labels: (N,) int64 contiguous class ids.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to(self, device: torch.device | str) -> Detections:
        return _move(self, device)

    def __getitem__(self, keep: Tensor | slice) -> Detections:
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    @staticmethod
    def cat(parts: list[Detections]) -> Detections:
        return Detections(*(torch.cat([getattr(p, name) for p in parts]) for name in ("boxes", "scores", "labels")))
