"""Corner targets of CornerNet and CentripetalNet (METHODS.md CARD 3 (b)).

Per corner type (top-left, bottom-right), in output-map units ``f = input / stride``:

- heatmap: a Gaussian (CornerNet's radius, ``t = 0.3``, from the ceiled box size) at ``int(f)``, clamped to the map;
- offset: ``f - int(f)``;
- guiding shift (CentripetalNet Eq. 7): ``centre - int(f)`` for top-left, ``int(f) - centre`` for bottom-right
  (both codes use the positive magnitude for bottom-right);
- centripetal shift (Eq. 1): ``log(centre - f)`` for top-left, ``log(f - centre)`` for bottom-right.

Regression targets live in per-object slots (B, M) like CenterNet's, gathered at the integer corner; the
reference codes write them into dense maps instead, where two objects sharing a corner pixel overwrite each
other — slots train both. Numerics follow mmdetection ``corner_head.py get_targets``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.ops.gaussian import gaussian_radius, splat_gaussians
from pointdet.structures import Instances

CORNERS = ("tl", "br")  # top-left, bottom-right; the prefixes of the head's output fields


class CornerTarget(NamedTuple):
    """Targets of one corner type; M is the largest object count in the batch.

    Attributes:
        heatmap: (B, C, H, W) Gaussian corner maps, exactly 1.0 at each corner.
        index: (B, M) int64 flat position ``y * W + x`` of the integer corner.
        offset: (B, M, 2) sub-pixel offset ``f - int(f)``.
        guiding: (B, M, 2) guiding shift in output pixels.
        centripetal: (B, M, 2) log-encoded centripetal shift.
    """

    heatmap: Tensor
    index: Tensor
    offset: Tensor
    guiding: Tensor
    centripetal: Tensor


class CornerTargets(NamedTuple):
    """``tl`` and ``br`` targets, ``mask`` (B, M) 1 for real objects, ``source`` (B, M) index in ``Instances``."""

    tl: CornerTarget
    br: CornerTarget
    mask: Tensor
    source: Tensor


def build_corner_targets(
    instances: list[Instances],
    num_classes: int,
    output_size: tuple[int, int],
    stride: int,
    min_overlap: float = 0.3,
    max_objects: int = 128,
) -> CornerTargets:
    """Encode ground-truth boxes (input pixels) as corner targets on the boxes' device.

    Args:
        instances: B ground truths.
        num_classes: C.
        output_size: ``(H, W)`` of the output maps.
        stride: input pixels per output pixel.
        min_overlap: IoU ``t`` of the Gaussian radius (CornerNet's 0.3).
        max_objects: objects per image beyond this are ignored.
    """
    height, width = output_size
    device = instances[0].boxes.device if instances else torch.device("cpu")
    batch = len(instances)
    kept = []
    for inst in instances:
        boxes = inst.boxes[:max_objects].float() / stride
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        kept.append((boxes[valid], inst.labels[:max_objects][valid].to(device), valid.nonzero().squeeze(1)))
    slots = max((len(k[0]) for k in kept), default=0)
    mask = torch.zeros(batch, slots, device=device)
    source = torch.zeros(batch, slots, dtype=torch.long, device=device)
    fields = {corner: _empty_corner(batch, num_classes, height, width, slots, device) for corner in CORNERS}
    splats: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {corner: [] for corner in CORNERS}
    limit = torch.tensor([width - 1, height - 1], device=device)
    for b, (boxes, labels, index) in enumerate(kept):
        count = len(boxes)
        mask[b, :count], source[b, :count] = 1, index
        center = (boxes[:, :2] + boxes[:, 2:]) / 2
        size = boxes[:, 2:] - boxes[:, :2]
        radius = gaussian_radius(size[:, 1].ceil(), size[:, 0].ceil(), min_overlap, "cornernet").long().clamp(min=0)
        for corner, point, sign in (("tl", boxes[:, :2], 1.0), ("br", boxes[:, 2:], -1.0)):
            integer = torch.minimum(point, limit).long()  # int() of non-negative values is floor
            target = fields[corner]
            target["index"][b, :count] = integer[:, 1] * width + integer[:, 0]
            target["offset"][b, :count] = point - integer
            target["guiding"][b, :count] = sign * (center - integer)
            target["centripetal"][b, :count] = torch.log(sign * (center - point))
            splats[corner].append((b * num_classes + labels, integer, radius))
    for corner in CORNERS:
        if splats[corner]:
            channels, points, radii = (torch.cat(parts) for parts in zip(*splats[corner], strict=True))
            splat_gaussians(fields[corner]["heatmap"], channels, points, radii)
    return CornerTargets(CornerTarget(**fields["tl"]), CornerTarget(**fields["br"]), mask, source)


def _empty_corner(batch: int, classes: int, height: int, width: int, slots: int, device: torch.device) -> dict:
    return {
        "heatmap": torch.zeros(batch, classes, height, width, device=device),
        "index": torch.zeros(batch, slots, dtype=torch.long, device=device),
        "offset": torch.zeros(batch, slots, 2, device=device),
        "guiding": torch.zeros(batch, slots, 2, device=device),
        "centripetal": torch.zeros(batch, slots, 2, device=device),
    }
