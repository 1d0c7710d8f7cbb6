"""CenterNet targets (METHODS.md §2a(b)): centre heatmap, size and sub-pixel offset at the centre pixel.

Objects, Eq. (1)-(3) of "Objects as Points" (Zhou et al. 2019); numerics verified against
xingyizhou/CenterNet ``src/lib/datasets/sample/ctdet.py`` and ``utils/image.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.ops.gaussian import RadiusMode, gaussian_radius, splat_gaussians
from pointdet.structures import Instances


class CenterNetTargets(NamedTuple):
    """Targets of a batch; M is the largest object count in the batch (at most ``max_objects``).

    Attributes:
        heatmap: (B, C, H, W) Gaussian centre maps, exactly 1.0 at each centre.
        size: (B, M, 2) box ``(w, h)`` in output-map pixels.
        offset: (B, M, 2) ``centre - floor(centre)``.
        index: (B, M) int64 flat centre position ``y * W + x``.
        mask: (B, M) float, 1 for real objects, 0 for padding.
        centers: (B, M, 2) int64 ``floor(centre)`` as ``(x, y)`` in output pixels.
        radius: (B, M) int64 Gaussian radius of each object.
        source: (B, M) int64 index of each slot's object in its image's ``Instances`` (for task targets).
    """

    heatmap: Tensor
    size: Tensor
    offset: Tensor
    index: Tensor
    mask: Tensor
    centers: Tensor
    radius: Tensor
    source: Tensor


def build_centernet_targets(
    instances: list[Instances],
    num_classes: int,
    output_size: tuple[int, int],
    stride: int,
    min_overlap: float = 0.7,
    radius_mode: RadiusMode = "centernet",
    max_objects: int = 128,
) -> CenterNetTargets:
    """Encode ground truth as CenterNet targets, on the device of the boxes.

    Args:
        instances: B ground truths in input-image pixels.
        num_classes: C.
        output_size: ``(H, W)`` of the output maps.
        stride: input pixels per output pixel (R = 4).
        min_overlap: IoU ``t`` of the Gaussian radius.
        radius_mode: ``"centernet"`` (CenterNet's code, the default for reproduction) or ``"cornernet"``.
        max_objects: objects per image beyond this are ignored (128 in the reference).
    """
    height, width = output_size
    device = instances[0].boxes.device if instances else torch.device("cpu")
    batch = len(instances)
    per_image = []
    for inst in instances:
        boxes = inst.boxes[:max_objects].float() / stride
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
        box_w, box_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (box_w > 0) & (box_h > 0)
        source = keep.nonzero().squeeze(1)
        per_image.append((boxes[keep], inst.labels[:max_objects][keep], box_w[keep], box_h[keep], source))
    slots = max([len(p[0]) for p in per_image], default=0)
    heatmap = torch.zeros(batch, num_classes, height, width, device=device)
    size = torch.zeros(batch, slots, 2, device=device)
    offset = torch.zeros(batch, slots, 2, device=device)
    index = torch.zeros(batch, slots, dtype=torch.long, device=device)
    mask = torch.zeros(batch, slots, device=device)
    centers = torch.zeros(batch, slots, 2, dtype=torch.long, device=device)
    radii = torch.zeros(batch, slots, dtype=torch.long, device=device)
    sources = torch.zeros(batch, slots, dtype=torch.long, device=device)
    all_channels, all_centers, all_radii = [], [], []
    for b, (boxes, labels, box_w, box_h, source) in enumerate(per_image):
        count = len(boxes)
        center = (boxes[:, :2] + boxes[:, 2:]) / 2
        center_int = center.floor().long()
        radius = gaussian_radius(box_h.ceil(), box_w.ceil(), min_overlap, radius_mode).long().clamp(min=0)
        size[b, :count] = torch.stack([box_w, box_h], dim=1)
        offset[b, :count] = center - center_int
        index[b, :count] = center_int[:, 1] * width + center_int[:, 0]
        mask[b, :count] = 1
        centers[b, :count], radii[b, :count], sources[b, :count] = center_int, radius, source
        all_channels.append(b * num_classes + labels.to(device))
        all_centers.append(center_int)
        all_radii.append(radius)
    if slots:
        splat_gaussians(heatmap, torch.cat(all_channels), torch.cat(all_centers), torch.cat(all_radii))
    return CenterNetTargets(heatmap, size, offset, index, mask, centers, radii, sources)
