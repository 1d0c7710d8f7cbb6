"""Soft-NMS (Bodla et al. 2017; METHODS.md §1.11), linear and Gaussian, per class, and class-wise greedy NMS of a
padded batch in a fixed number of tensor ops.

Soft-NMS merges multi-scale CenterNet detections (Gaussian, sigma 0.5) and cleans the corner detectors' matched
corner pairs (Gaussian, IoU 0.5). ``batched_soft_nms`` runs a fixed number of steps over a padded batch without
host syncs; ``sequential_soft_nms`` is the former loop (the "before" of ``benchmarks/soft_nms.py``).
``fixed_size_nms`` is torchvision's class-wise ``batched_nms`` for a batch of score-sorted candidates, without
host syncs (the dense detectors' predict path).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_iou

Method = Literal["gaussian", "linear"]  # how soft-NMS decays the scores of overlapping boxes


class SoftNmsResult(NamedTuple):
    """Output of ``batched_soft_nms``: the kept boxes of each image in the order soft-NMS keeps them (decreasing
    decayed score); every field is (B, T) for T iterations. Slots after an image's last kept box have
    ``valid`` False (index 0, score 0)."""

    index: Tensor
    scores: Tensor
    valid: Tensor


def _decay_by(
    boxes: Tensor, labels: Tensor, best: Tensor, method: Method, sigma: float, iou_threshold: float
) -> Tensor:
    """(B, N) factor by which keeping box ``best[b]`` of every image multiplies the scores of its boxes (1 across
    classes). One IoU row per step: O(B N) work and memory, not an (N, N) matrix for the ``max_kept`` rows used."""
    rows = torch.arange(len(best), device=best.device)
    iou = torch.vmap(box_iou)(boxes[rows, best][:, None], boxes)[:, 0]
    iou = iou * (labels == labels[rows, best][:, None])
    if method == "gaussian":
        return torch.exp(-(iou**2) / sigma)
    return torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor | None = None,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    method: Method = "gaussian",
    iou_threshold: float = 0.3,
    max_kept: int | None = None,
) -> SoftNmsResult:
    """Per-class soft-NMS of a padded batch in a fixed number of steps, with no host sync.

    Step t keeps, in every image at once, the alive box of highest current score (the first on ties, as
    ``argmax``) and decays the others: Gaussian ``s <- s * exp(-IoU² / sigma)``; linear ``s <- s * (1 - IoU)``
    where ``IoU > iou_threshold``. A box is alive while its score is ``>= score_threshold`` and it is not kept;
    boxes of different classes never suppress each other. Kept scores never increase from one step to the next,
    so ``max_kept = k`` steps give exactly the first ``k`` boxes of a full run. The loop has ``max_kept`` (default
    N) steps whatever the data, so it runs inside CUDA graphs and ``torch.compile``.

    Args:
        boxes: (B, N, 4) xyxy.
        scores: (B, N) scores.
        labels: (B, N) class ids.
        valid: (B, N) False for padding (never kept, never suppresses); None = all valid.
        sigma: Gaussian decay parameter.
        score_threshold: boxes whose (decayed) score falls below it are dropped.
        method: ``gaussian`` or ``linear``.
        iou_threshold: overlap above which the linear method decays (unused by the Gaussian one).
        max_kept: steps (kept boxes per image at most); None = N.

    Returns:
        ``SoftNmsResult`` with (B, T) fields, ``T = min(max_kept, N)``.
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"soft-NMS method must be 'gaussian' or 'linear', got {method!r}")
    batch, count = scores.shape
    steps = count if max_kept is None else min(max_kept, count)
    if steps == 0:
        empty = scores.new_zeros(batch, 0)
        return SoftNmsResult(empty.long(), empty, empty.bool())
    current = scores.clone()
    alive = current >= score_threshold
    if valid is not None:
        alive &= valid
    rows = torch.arange(batch, device=scores.device)
    kept_index, kept_scores, kept_valid = [], [], []
    for _ in range(steps):
        best = torch.where(alive, current, torch.full_like(current, -1.0)).argmax(dim=1)  # (B,)
        found = alive[rows, best]
        kept_index.append(torch.where(found, best, torch.zeros_like(best)))
        kept_scores.append(torch.where(found, current[rows, best], torch.zeros_like(current[:, 0])))
        kept_valid.append(found)
        alive = alive & (torch.arange(count, device=scores.device) != best[:, None])
        current = current * _decay_by(boxes, labels, best, method, sigma, iou_threshold)
        alive = alive & (current >= score_threshold)
    return SoftNmsResult(torch.stack(kept_index, 1), torch.stack(kept_scores, 1), torch.stack(kept_valid, 1))


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    method: Method = "gaussian",
    iou_threshold: float = 0.3,
    max_kept: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-class soft-NMS of one image (``batched_soft_nms`` with B = 1; one host sync at the end).

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,) scores.
        labels: (N,) class ids; boxes of different classes never suppress each other.
        sigma, score_threshold, method, iou_threshold, max_kept: as ``batched_soft_nms``.

    Returns:
        ``(keep, new_scores)``: indices into the input, in decreasing order of decayed score, and those scores.
    """
    result = batched_soft_nms(
        boxes[None], scores[None], labels[None], None, sigma, score_threshold, method, iou_threshold, max_kept
    )
    valid = result.valid[0]
    return result.index[0][valid], result.scores[0][valid]


def sequential_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    sigma: float = 0.5,
    method: Method = "gaussian",
    iou_threshold: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """The former one-image soft-NMS, kept as the "before" of ``benchmarks/soft_nms.py``: a loop that stops
    when no box is alive, so it asks the device once per kept box (``alive.any()``). Classes are separated by
    offsetting the boxes. Same result as ``soft_nms`` (up to float rounding of the offsets; score threshold 1e-3)."""
    if method not in ("gaussian", "linear"):
        raise ValueError(f"soft-NMS method must be 'gaussian' or 'linear', got {method!r}")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)
    offset = labels.to(boxes) * (boxes.max() - boxes.min() + 1)
    iou = box_iou(boxes + offset[:, None], boxes + offset[:, None])  # (N, N)
    if method == "gaussian":
        decay = torch.exp(-(iou**2) / sigma)
    else:
        decay = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
    current = scores.clone()
    alive = current >= 1e-3
    keep, kept_scores = [], []
    for _ in range(len(scores)):
        if not alive.any():
            break
        best = torch.where(alive, current, current.new_tensor(-1.0)).argmax()
        keep.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        current = current * decay[best]
        alive &= current >= 1e-3
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)
    return torch.stack(keep), torch.stack(kept_scores)


class FixedNms(NamedTuple):
    """Output of ``fixed_size_nms``.

    Attributes:
        keep: (B, N) bool, the candidates greedy NMS keeps (where ``exact``).
        exact: (B,) bool, True where ``keep`` is the greedy result for certain: the iteration reached its fixed
            point. Where False, run an exact NMS instead (this never happened on the models tested).
    """

    keep: Tensor
    exact: Tensor


def pairwise_iou(boxes: Tensor) -> Tensor:
    """(B, N, 4) xyxy -> (B, N, N) IoU of every pair of each image, with the arithmetic of torchvision's NMS kernel
    (``inter / (area_i + area_j - inter)``; NaN for two empty boxes, which then never suppress each other)."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (B, N)
    top_left = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    bottom_right = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]  # (B, N, N)
    return inter / (area[:, :, None] + area[:, None, :] - inter)


def fixed_size_nms(
    boxes: Tensor, labels: Tensor, valid: Tensor, iou_threshold: float, iterations: int = 10
) -> FixedNms:
    """Class-wise greedy NMS of score-sorted candidates, every image at once, in a fixed number of tensor ops.

    Greedy NMS keeps candidate i when no earlier kept candidate of its class overlaps it with IoU above the
    threshold: ``keep_i = valid_i and not any(suppresses[i, j] and keep_j for j < i)``. This triangular system has
    one solution, which Cluster-NMS (Zheng et al., "Enhancing Geometric Factors in Model Learning and Inference
    for Object Detection and Instance Segmentation", 2021, §4) reaches by iterating it from ``keep = valid``:
    after t iterations every candidate whose chain of suppressions is at most t long is final. ``iterations``
    iterations are run, then one more checks the fixed point (``exact``). IoUs are computed with the arithmetic
    of torchvision's CPU kernel, and compared as it does (``>`` the double threshold), so an exact result equals
    ``torchvision.ops.batched_nms`` on the same order (up to float rounding where torchvision offsets the boxes
    of each class, a difference only at an IoU within rounding of the threshold).

    Args:
        boxes: (B, N, 4) xyxy, each image's candidates by decreasing score.
        labels: (B, N) class ids; candidates of different classes never suppress each other.
        valid: (B, N) False for padding (never kept, never suppresses).
        iou_threshold: IoU above which the earlier candidate suppresses the later one.
        iterations: iterations before the fixed-point check.

    Returns:
        ``FixedNms(keep (B, N), exact (B,))``.
    """
    count = boxes.shape[1]
    earlier = torch.ones(count, count, dtype=torch.bool, device=boxes.device).tril(-1)  # [i, j]: j before i
    # float32 IoUs compared in float64 with the threshold, as torchvision's kernel compares them with its double.
    overlaps = pairwise_iou(boxes.float()).double() > iou_threshold
    suppresses = (overlaps & (labels[:, :, None] == labels[:, None, :]) & earlier).float()  # (B, N, N) [i, j]

    def step(keep: Tensor) -> Tensor:
        return valid & (torch.bmm(suppresses, keep[..., None].float())[..., 0] == 0)

    keep = valid
    for _ in range(iterations):
        keep = step(keep)
    return FixedNms(keep, (step(keep) == keep).all(dim=1))


class VotedDetections(NamedTuple):
    """Output of ``box_voting``, sorted by decreasing score.

    Attributes:
        boxes: (N', 4) xyxy.
        scores: (N',) scores.
        labels: (N',) class ids.
        extra: (N', ...) the per-detection vectors voted with the boxes, or None.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    extra: Tensor | None


def box_voting(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float = 0.66,
    score_threshold: float = 0.05,
    max_detections: int = 1000,
    extra: Tensor | None = None,
) -> VotedDetections:
    """Per-class box voting for merging multi-scale detections (METHODS.md §1.11).

    From ATSS / LSNet's ``bboxes_vote`` (Duankaiwen/LSNet code/mmdet/models/detectors/lsnet.py). Per class,
    repeatedly take the best remaining detection and its group (remaining detections of its class with
    ``IoU >= iou_threshold``, itself included) out of the pool, and output:

    - the score-weighted average of the group's boxes (and ``extra`` vectors) with the group's max score;
    - each other group member re-scored by ``s * (1 - IoU)`` when that is ``>= score_threshold``.

    IoU has no ``+1`` pixel term (the reference code's legacy convention is dropped). The leader itself is never
    re-scored (its ``1 - IoU`` is 0; the reference only keeps it when ``score_threshold <= 0``).

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,) positive scores.
        labels: (N,) class ids; detections of different classes never vote together.
        iou_threshold: overlap from which a detection joins the group.
        score_threshold: least re-scored score for a group member to be kept.
        max_detections: most detections returned.
        extra: (N, ...) float vectors carried and averaged with the boxes (e.g. landmarks), or None.

    Returns:
        ``VotedDetections(boxes, scores, labels, extra)``, at most ``max_detections``, by decreasing score.
    """
    order = scores.argsort(descending=True, stable=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    values = boxes if extra is None else torch.cat([boxes, extra[order].flatten(1)], dim=1)  # (N, 4 + D)
    remaining = torch.ones_like(scores, dtype=torch.bool)
    out_values, out_scores, out_labels = [values[:0]], [scores[:0]], [labels[:0]]
    while remaining.any():
        leader = int(remaining.int().argmax())  # the first remaining, so the best
        iou = box_iou(boxes[leader : leader + 1], boxes)[0].nan_to_num(0.0)  # (N,)
        group = remaining & (labels == labels[leader]) & (iou >= iou_threshold)
        group[leader] = True
        weights = scores[group]
        out_values.append((weights[:, None] * values[group]).sum(dim=0, keepdim=True) / weights.sum())
        out_scores.append(scores[leader : leader + 1])
        out_labels.append(labels[leader : leader + 1])
        rescored = scores * (1 - iou)
        members = group & (rescored >= score_threshold)
        members[leader] = False
        out_values.append(values[members])
        out_scores.append(rescored[members])
        out_labels.append(labels[members])
        remaining &= ~group
    values, scores, labels = torch.cat(out_values), torch.cat(out_scores), torch.cat(out_labels)
    order = scores.argsort(descending=True, stable=True)[:max_detections]
    values, scores, labels = values[order], scores[order], labels[order]
    voted_extra = None if extra is None else values[:, 4:].reshape(len(values), *extra.shape[1:])
    return VotedDetections(values[:, :4], scores, labels, voted_extra)
