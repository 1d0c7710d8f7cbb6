"""Sample -> Sample transforms on torchvision.transforms.v2: image, boxes, masks, keypoints, polygons and crowd
(ignore) boxes move together.

Images stay uint8 here; normalisation happens on the model's device (``Detector.preprocess``). Keypoints and
polygon vertices are plain xy tensors moved by the same affine maps as the boxes, in continuous pixel
coordinates (a flip maps x to W - x, as it does box edges). Flips also swap left/right keypoint indices and
reverse the vertex order of every polygon part, so that a part keeps its orientation (the sign of its signed
area) instead of being mirrored from counter-clockwise to clockwise.

Resizing comes in three geometries: ``RandomScaleCrop`` (CenterNet's square training crop), ``Letterbox``
(long side fitted into a fixed canvas) and ``KeepRatioResize`` (mmdetection's shorter side / longer side
bound, unpadded: ``collate`` pads the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from pointdet.structures import Instances


@dataclass(frozen=True)
class Sample:
    """One image and its ground truth on the way through the pipeline.

    Attributes:
        image: (3, H, W) uint8.
        instances: ground truth in the pixel frame of ``image``.
        image_id: dataset image id (for evaluation).
        orig_size: ``(height, width)`` of the decoded file.
        scale: factor from original to current pixels (``current = original * scale``); set by ``Letterbox`` and
            ``KeepRatioResize``.
    """

    image: Tensor
    instances: Instances
    image_id: int = -1
    orig_size: tuple[int, int] = (0, 0)
    scale: float = 1.0


Transform = Callable[[Sample], Sample]


def _move_polygons(
    polygons: list[list[Tensor]], point_map: Callable[[Tensor], Tensor], mirrored: bool
) -> list[list[Tensor]]:
    """``point_map`` applied to every vertex (all parts at once); each part reversed when ``mirrored``."""
    parts = [part for object_parts in polygons for part in object_parts]
    if not parts:
        return polygons
    moved = iter(point_map(torch.cat(parts)).split([len(part) for part in parts]))
    if mirrored:
        moved = (part.flip(0) for part in moved)
    return [[next(moved) for _ in object_parts] for object_parts in polygons]


def _geometric(
    sample: Sample, op: Callable, keypoint_map: Callable[[Tensor], Tensor], mirrored: bool = False
) -> Sample:
    """Apply a tv2 functional ``op`` to image, boxes, ignore boxes and masks, and ``keypoint_map`` to keypoint and
    polygon xy; ``mirrored`` (a flip) also reverses each polygon part's vertex order."""
    height, width = sample.image.shape[-2:]
    inst = sample.instances

    def boxes_op(boxes: Tensor) -> Tensor:
        return op(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))).as_subclass(Tensor)

    image = op(tv_tensors.Image(sample.image))
    masks = op(tv_tensors.Mask(inst.masks)) if inst.masks is not None else None
    keypoints = inst.keypoints.clone()
    keypoints[..., :2] = keypoint_map(keypoints[..., :2])
    instances = replace(
        inst,
        boxes=boxes_op(inst.boxes),
        keypoints=keypoints,
        masks=None if masks is None else masks.as_subclass(Tensor),
        polygons=None if inst.polygons is None else _move_polygons(inst.polygons, keypoint_map, mirrored),
        ignore_boxes=None if inst.ignore_boxes is None else boxes_op(inst.ignore_boxes),
    )  # 3D cuboids live in the camera frame: resizing and cropping the image leaves them unchanged
    return replace(sample, image=image.as_subclass(Tensor), instances=instances)


def resize(sample: Sample, height: int, width: int) -> Sample:
    old_h, old_w = sample.image.shape[-2:]
    factor = torch.tensor([width / old_w, height / old_h])
    return _geometric(sample, lambda x: F.resize(x, [height, width], antialias=True), lambda xy: xy * factor)


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop (zero-padding outside the image)."""
    shift = torch.tensor([left, top], dtype=torch.float32)
    return _geometric(sample, lambda x: F.crop(x, top, left, height, width), lambda xy: xy - shift)


def horizontal_flip(sample: Sample, flip_pairs: Sequence[tuple[int, int]]) -> Sample:
    """Mirror left-right: x -> W - x for boxes, keypoints and polygon vertices; the keypoints of each
    ``flip_pairs`` pair swap indices, and every polygon part's vertices are reversed so it keeps its orientation."""
    if sample.instances.boxes3d is not None:
        raise ValueError(
            f"image {sample.image_id}: horizontal flips of 3D ground truth are not supported (the camera's "
            "principal point is not mirrored); monocular 3D trains without geometric augmentation (data.flip=0)"
        )
    width = sample.image.shape[-1]

    def flip_keypoints(xy: Tensor) -> Tensor:
        return torch.stack([width - xy[..., 0], xy[..., 1]], dim=-1)

    flipped = _geometric(sample, F.horizontal_flip, flip_keypoints, mirrored=True)
    if not flip_pairs:
        return flipped
    order = list(range(flipped.instances.keypoints.shape[1]))
    for left, right in flip_pairs:
        order[left], order[right] = order[right], order[left]
    return replace(flipped, instances=replace(flipped.instances, keypoints=flipped.instances.keypoints[:, order]))


def _clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    return clipped


def sanitize(sample: Sample, min_size: float = 1.0) -> Sample:
    """Clip boxes to the image, drop those smaller than ``min_size``, and mark off-image keypoints invisible.

    Masks and polygons of the dropped objects go with them; polygons of kept objects are not clipped to the image
    (their vertices may lie outside it). Ignore boxes are clipped too and dropped when nothing of them is left.
    """
    height, width = sample.image.shape[-2:]
    inst = sample.instances
    boxes = _clip_boxes(inst.boxes, height, width)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    ignore_boxes = inst.ignore_boxes
    if ignore_boxes is not None:
        ignore_boxes = _clip_boxes(ignore_boxes, height, width)
        nonempty = (ignore_boxes[:, 2] > ignore_boxes[:, 0]) & (ignore_boxes[:, 3] > ignore_boxes[:, 1])
        ignore_boxes = ignore_boxes[nonempty]
    kept = replace(inst, boxes=boxes, ignore_boxes=ignore_boxes)[keep]
    keypoints = kept.keypoints.clone()
    x, y = keypoints[..., 0], keypoints[..., 1]
    outside = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    keypoints[..., 2][outside] = 0
    return replace(sample, instances=replace(kept, keypoints=keypoints))


class RandomScaleCrop:
    """CenterNet's training crop: pick a scale s, view an ``s * max(H, W)`` square around a random centre,
    resize it to ``size x size`` (zero padding outside the image).

    The centre stays at least ``size / 4`` output pixels from the border, halved until it fits, as the
    reference's 128-pixel border at 512 (METHODS.md §2a(f)).
    """

    def __init__(self, size: int, scales: Sequence[float]) -> None:
        self.size, self.scales = size, tuple(scales)

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample.image.shape[-2:]
        scale = self.scales[int(torch.randint(len(self.scales), ()))]
        factor = self.size / (scale * max(height, width))
        new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
        sample = resize(sample, new_h, new_w)
        center_y, center_x = self._center(new_h), self._center(new_w)
        return crop(sample, center_y - self.size // 2, center_x - self.size // 2, self.size, self.size)

    def _center(self, extent: int) -> int:
        border = self.size // 4
        while border > 1 and extent - border <= border:
            border //= 2
        low, high = border, max(border, extent - border)
        return int(torch.randint(low, high + 1, ()))


class RandomHorizontalFlip:
    def __init__(self, flip_pairs: Sequence[tuple[int, int]], p: float = 0.5) -> None:
        self.flip_pairs, self.p = list(flip_pairs), p

    def __call__(self, sample: Sample) -> Sample:
        return horizontal_flip(sample, self.flip_pairs) if float(torch.rand(())) < self.p else sample


class ColorJitter:
    """Brightness/contrast/saturation jitter in random order (torchvision's ``ColorJitter``)."""

    def __init__(self, strength: float) -> None:
        self.jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)

    def __call__(self, sample: Sample) -> Sample:
        return replace(sample, image=self.jitter(tv_tensors.Image(sample.image)).as_subclass(Tensor))


# ImageNet RGB-covariance eigen-decomposition used by CenterNet's ``lighting_`` (its rows index B, G, R).
_EIGENVALUES = (0.2141788, 0.01817699, 0.00341571)
_EIGENVECTORS_BGR = (
    (-0.58752847, -0.69563484, 0.41340352),
    (-0.5832747, 0.00994535, -0.81221408),
    (-0.56089297, 0.71832671, 0.41158938),
)


class PCALighting:
    """AlexNet-style PCA lighting noise: add ``V @ (lambda * alpha)``, ``alpha ~ N(0, std)``, to every pixel.

    The colour shift is computed in the reference's BGR order and applied to our RGB image reversed.
    """

    def __init__(self, std: float) -> None:
        self.std = std
        self.eigenvalues = torch.tensor(_EIGENVALUES)
        self.eigenvectors_bgr = torch.tensor(_EIGENVECTORS_BGR)

    def __call__(self, sample: Sample) -> Sample:
        alpha = torch.randn(3) * self.std
        shift_rgb = (self.eigenvectors_bgr @ (self.eigenvalues * alpha)).flip(0) * 255
        shift = shift_rgb.to(sample.image.device).view(3, 1, 1)
        image = (sample.image.float() + shift).round().clamp(0, 255).to(torch.uint8)
        return replace(sample, image=image)


class Letterbox:
    """Resize to fit ``height x size`` keeping the aspect ratio, then pad bottom/right to exactly that.

    ``height`` defaults to ``size`` (a square canvas). The applied factor is stored in ``Sample.scale`` so
    predictions map back with ``boxes / scale``.
    """

    def __init__(self, size: int, height: int | None = None) -> None:
        self.size, self.height = size, height or size

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample.image.shape[-2:]
        factor = min(self.size / width, self.height / height)
        new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
        sample = crop(resize(sample, new_h, new_w), 0, 0, self.height, self.size)
        return replace(sample, scale=sample.scale * factor)


class KeepRatioResize:
    """Resize keeping the aspect ratio: the shorter side to ``min_size`` unless the longer side would pass
    ``max_size`` (mmdetection's ``Resize(img_scale=(max_size, min_size), keep_ratio=True)``).

    The factor is ``min(short_target / short_side, max_size / long_side)`` and the new size
    ``int(side * factor + 0.5)``, as mmcv's ``imrescale``. With ``min_size = (low, high)`` the shorter-side target is
    drawn uniformly from the integers ``low..high`` (mmdetection's ``multiscale_mode='range'``, the multi-scale
    recipes). Nothing is padded: ``collate`` pads the batch to its largest image, bottom/right. The factor is stored
    in ``Sample.scale`` so predictions map back with ``boxes / scale`` (the image and its ground truth are moved by
    the rounded per-axis factors ``new_side / side``, so this is off by at most half a pixel at the far edge).

    Args:
        min_size: shorter-side target in pixels, or ``(low, high)`` to draw it from.
        max_size: bound on the longer side in pixels.
    """

    def __init__(self, min_size: int | Sequence[int], max_size: int) -> None:
        sizes = (min_size,) if isinstance(min_size, int) else tuple(int(s) for s in min_size)
        if len(sizes) not in (1, 2) or sizes[0] > sizes[-1] or sizes[0] <= 0:
            raise ValueError(f"min_size must be one positive size or [low, high] with low <= high, got {min_size!r}")
        self.low, self.high, self.max_size = sizes[0], sizes[-1], max_size

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample.image.shape[-2:]
        target = self.low if self.low == self.high else int(torch.randint(self.low, self.high + 1, ()))
        factor = min(target / min(height, width), self.max_size / max(height, width))
        new_h, new_w = max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))
        return replace(resize(sample, new_h, new_w), scale=sample.scale * factor)


class Compose:
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample


def train_transforms(
    size: int,
    scales: Sequence[float],
    flip: float,
    color_jitter: float,
    flip_pairs: Sequence[tuple[int, int]],
    lighting: float = 0.0,
) -> Compose:
    """The CenterNet recipe: random scale + crop, horizontal flip, colour jitter, PCA lighting, box clean-up."""
    return _augmented(RandomScaleCrop(size, scales), flip, color_jitter, flip_pairs, lighting)


def keep_ratio_train_transforms(
    min_size: int | Sequence[int],
    max_size: int,
    flip: float,
    color_jitter: float,
    flip_pairs: Sequence[tuple[int, int]],
    lighting: float = 0.0,
) -> Compose:
    """The FPN recipe (mmdetection): keep-ratio resize (multi-scale with ``min_size = (low, high)``), horizontal
    flip, box clean-up; colour jitter and PCA lighting only when their strength is above 0."""
    return _augmented(KeepRatioResize(min_size, max_size), flip, color_jitter, flip_pairs, lighting)


def _augmented(
    geometry: Transform, flip: float, color_jitter: float, flip_pairs: Sequence[tuple[int, int]], lighting: float
) -> Compose:
    """``geometry``, then the flip and photometric steps whose strength is above 0, then box clean-up."""
    steps: list[Transform] = [geometry]
    if flip > 0:
        steps.append(RandomHorizontalFlip(flip_pairs, flip))
    if color_jitter > 0:
        steps.append(ColorJitter(color_jitter))
    if lighting > 0:
        steps.append(PCALighting(lighting))
    steps.append(sanitize)
    return Compose(steps)


def eval_transforms(size: int, height: int | None = None) -> Compose:
    """Letterbox to ``height x size`` (square by default) and clean the boxes up."""
    return Compose([Letterbox(size, height), sanitize])


def keep_ratio_eval_transforms(min_size: int, max_size: int) -> Compose:
    """Keep-ratio resize to shorter side ``min_size`` (longer side at most ``max_size``), unpadded, and clean-up."""
    return Compose([KeepRatioResize(min_size, max_size), sanitize])


def original_size_transforms() -> Compose:
    """The image at its own size (``scale`` 1), boxes cleaned up."""
    return Compose([sanitize])
