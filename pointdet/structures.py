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


def _select(obj, keep: Tensor | slice):
    """``obj`` with every per-object field indexed by ``keep``; optional fields that are None stay None."""
    changes = {f.name: getattr(obj, f.name)[keep] for f in fields(obj) if getattr(obj, f.name) is not None}
    return replace(obj, **changes)


@dataclass(frozen=True)
class FeatureShape:
    """One feature map of a backbone or neck: the contract FPN necks, dense heads and RoI poolers read
    (detectron2's ``ShapeSpec``, timm's ``feature_info``).

    Attributes:
        name: level name (``c2``..``c5`` backbone stages, ``p3``..``p7`` pyramid levels, ``stack1`` hourglass stacks).
        channels: D.
        stride: input pixels per feature cell.
    """

    name: str
    channels: int
    stride: int


@dataclass(frozen=True)
class Instances:
    """Ground-truth objects of one image.

    Attributes:
        boxes: (N, 4) float xyxy pixels.
        labels: (N,) int64 contiguous class ids in ``0..C-1``.
        keypoints: (N, K, 3) float ``(x, y, visibility)``; K may be 0.
        masks: (N, H, W) uint8 binary masks, or None when masks were not loaded.
        boxes3d: (N, 8) float KITTI camera-frame cuboids ``(h, w, l, x, y, z, rotation_y, alpha)`` in metres
            and radians (``(x, y, z)`` is the bottom-face centre), or None for 2D datasets.
        polygons: N lists of parts, each part a (V, 2) float tensor of xy pixels (a COCO polygon, several parts
            for occluded objects, none for objects annotated by RLE only), or None when polygons were not loaded.
        ignore_boxes: (G, 4) float xyxy pixels of crowd regions (COCO ``iscrowd=1``), or None. They belong to the
            image, not to any object: selecting objects (``instances[keep]``) leaves them unchanged.
    """

    boxes: Tensor
    labels: Tensor
    keypoints: Tensor
    masks: Tensor | None = None
    boxes3d: Tensor | None = None
    polygons: list[list[Tensor]] | None = None
    ignore_boxes: Tensor | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to(self, device: torch.device | str) -> Instances:
        moved = _move(self, device)
        if self.polygons is None:
            return moved
        return replace(moved, polygons=[[part.to(device) for part in parts] for parts in self.polygons])

    def __getitem__(self, keep: Tensor | slice) -> Instances:
        """The objects selected by ``keep`` (a boolean mask or an index), every per-object field kept in step;
        the per-image ``ignore_boxes`` stay as they are."""
        # _select indexes every non-None field, so the two fields it cannot handle are set aside: the per-image
        # ignore_boxes must not be indexed, and polygons are a Python list indexed below.
        selected = _select(replace(self, polygons=None, ignore_boxes=None), keep)
        polygons = None
        if self.polygons is not None:
            if isinstance(keep, slice):
                polygons = self.polygons[keep]
            else:
                keep = torch.as_tensor(keep)
                indices = keep.nonzero().flatten() if keep.dtype == torch.bool else keep.flatten()
                polygons = [self.polygons[i] for i in indices.tolist()]
        return replace(selected, polygons=polygons, ignore_boxes=self.ignore_boxes)

    @staticmethod
    def empty(num_keypoints: int = 0) -> Instances:
        return Instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, num_keypoints, 3))


@dataclass(frozen=True)
class Detections:
    """Predicted objects of one image. Decoders may also return a batched one — every field with a leading batch
    dimension B, as ONNX export needs — which ``decoders.centernet.per_image`` splits into B of these.

    Attributes:
        boxes: (N, 4) float xyxy pixels.
        scores: (N,) float confidences in [0, 1], sorted in decreasing order.
        labels: (N,) int64 contiguous class ids.
        keypoints: (N, K, 3) float ``(x, y, score)`` pixels, or None for models without keypoints.
        mono3d: (N, 7) float ``(u, v, depth, h, w, l, alpha)``: the projected centre in pixels, its depth and the
            cuboid dimensions in metres, the observation angle in radians; None for 2D models. ``lift_to_camera``
            turns it into a KITTI location and rotation with the camera matrix.
        masks: (N, M, M) float mask probabilities inside each box (``ops.masks.paste_masks`` puts them into the
            image), or None for models without a mask head.
        landmarks: (N, L, 2) float xy pixels of landmark points (LSNet's extreme points: top, left, bottom, right),
            or None.
        contours: (N, V, 2) float xy pixels of a closed polygon per object, clockwise (LSNet's contour points); the
            object's mask is that polygon rasterised on the image (``ops.masks.instance_masks``); or None.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    keypoints: Tensor | None = None
    mono3d: Tensor | None = None
    masks: Tensor | None = None
    landmarks: Tensor | None = None
    contours: Tensor | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @property
    def has_masks(self) -> bool:
        """Whether the objects have instance masks: box-relative ``masks`` or ``contours`` to rasterise."""
        return self.masks is not None or self.contours is not None

    def to(self, device: torch.device | str) -> Detections:
        return _move(self, device)

    def __getitem__(self, keep: Tensor | slice) -> Detections:
        return _select(self, keep)

    def rescale(self, factor_x: float, factor_y: float) -> Detections:
        """Pixel coordinates divided by ``(factor_x, factor_y)`` (from a resized image back to the original);
        box-relative masks are unchanged."""
        divisor = self.boxes.new_tensor([factor_x, factor_y])
        keypoints = mono3d = None
        if self.keypoints is not None:
            keypoints = torch.cat([self.keypoints[..., :2] / divisor, self.keypoints[..., 2:]], dim=-1)
        if self.mono3d is not None:
            mono3d = torch.cat([self.mono3d[:, :2] / divisor, self.mono3d[:, 2:]], dim=-1)
        points = {
            name: getattr(self, name) / divisor for name in ("landmarks", "contours") if getattr(self, name) is not None
        }
        return replace(self, boxes=self.boxes / divisor.repeat(2), keypoints=keypoints, mono3d=mono3d, **points)

    def split(self, counts: list[int]) -> list[Detections]:
        """Detections of several images, concatenated, cut into one ``Detections`` per image of ``counts`` objects
        (views, one ``split`` per field whatever the number of images)."""
        present = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        parts = {name: getattr(self, name).split(counts) for name in present}
        return [replace(self, **{name: parts[name][b] for name in present}) for b in range(len(counts))]

    def unbind(self) -> list[Detections]:
        """A batched ``Detections`` (every field with a leading batch dimension B) as B per-image ones (views, one
        ``unbind`` per field whatever B)."""
        present = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        parts = {name: getattr(self, name).unbind(0) for name in present}
        return [replace(self, **{name: parts[name][b] for name in present}) for b in range(len(self))]

    @staticmethod
    def cat(parts: list[Detections], dim: int = 0) -> Detections:
        """``parts`` joined along ``dim`` (1 joins batched ones image by image)."""

        def joined(name: str) -> Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else torch.cat(values, dim=dim)

        return Detections(*(joined(f.name) for f in fields(Detections)))


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI label or result file."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    box: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]  # h, w, l
    location: tuple[float, float, float]  # x, y, z
    rotation_y: float
    score: float = 1.0

    def to_line(self) -> str:
        values = [self.truncated, self.occluded, self.alpha, *self.box, *self.dimensions, *self.location]
        text = " ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values)
        return f"{self.type} {text} {self.rotation_y:.2f} {self.score:.4f}"
