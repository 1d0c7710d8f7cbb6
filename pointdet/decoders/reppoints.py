"""RepPoints decoding (METHODS.md CARD 5 §5.0 "Test"): point sets -> pseudo boxes -> class-wise NMS.

``RepPointsPostprocess`` follows mmdetection's ``_get_bboxes_single`` and ``multiclass_nms``: per image and level
keep the ``pre_nms`` priors of highest max-class score, box them from the refine points (``decoders.point_sets``),
clip to the image, keep every (prior, class) pair scoring above the threshold, class-wise NMS, top ``k``. The flip
test concatenates the candidates of the mirrored pass (mapped back by ``x -> W - x``) with the plain pass's before
the threshold and NMS, as mmdetection's dense-head ``aug_test_bboxes`` merges augmented passes.

Every image and level is decoded at once, in tensor ops of static size and no host sync, up to a fixed-size output
(``top_detections``, what ``torch.compile`` and CUDA graphs capture): ``candidates`` marks each level's top
``pre_nms`` priors by ranking within levels (``ops.priors.rank_within_levels``), the ``max_candidates`` best
(prior, class) pairs above the threshold go through ``ops.nms.fixed_size_nms`` (torchvision's class-wise NMS as
fixed-size tensor ops) and the first ``k`` kept are the detections. The result is certified per image
(``TopDetections.exact``): it is the full decode's whenever at most ``max_candidates`` pairs pass the threshold
or ``k`` of the ``max_candidates`` best survive NMS, because greedy NMS decides each candidate from the better ones
alone. ``__call__`` splits the fixed-size output into per-image ``Detections`` with one host sync at the end, and
decodes an image whose result is not certified with the exact per-image path (``select``: threshold,
``torchvision.ops.batched_nms``, top ``k``), which is also the reference the tests compare with.

``batched`` returns the top ``k`` (prior, class) pairs of each image **before NMS** — boxes (B, k, 4), scores
(B, k), labels (B, k) — and is what ``pointdet export`` puts in the ONNX graph (``export_k`` = 1000 candidates by
default). The caller of the graph applies the score threshold (0.05) and class-wise NMS at ``nms_iou`` (0.5), then
keeps the top 100::

    for b in range(len(boxes)):  # boxes, scores, labels: the graph's outputs, numpy
        keep = scores[b] > 0.05
        box, score, label = (torch.from_numpy(a[b][keep]) for a in (boxes, scores, labels))
        top = torchvision.ops.batched_nms(box, score, label, 0.5)[:100]  # box[top], score[top], label[top]

This gives ``predict``'s detections whenever its top 100 lie within the ``k`` candidates, always so when at most
``k`` pairs pass the threshold (tested). Why NMS stays out of the ONNX graph: torchvision's ``nms`` traces to one
ONNX ``NonMaxSuppression`` over a single box set (per-image NMS would unroll a loop over the traced batch), and
runtimes differ in its tie and threshold handling; a fixed-size candidate output keeps the graph plain tensor ops,
with the NMS the caller runs being torchvision's, the one ``select`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from pointdet.decoders.point_sets import TRANSFORMS, RepPointsOutputs, Transform, points_to_boxes
from pointdet.decoders.tta import mirror_boxes
from pointdet.ops.nms import fixed_size_nms
from pointdet.ops.priors import prior_levels, rank_within_levels
from pointdet.structures import Detections

NMS_ITERATIONS = 10  # fixed_size_nms iterations before its fixed-point check
TRAIN_PROPOSALS = 256  # boxes per image offered to an RoI stage in training (``proposals``)


class TopDetections(NamedTuple):
    """The fixed-size output of ``RepPointsPostprocess.top_detections``; every field leads with the batch.

    Attributes:
        rows: (B, k, 4 + E) candidate rows of the detections: xyxy box and a subclass's E further columns.
        scores: (B, k) by decreasing score; 0 in the slots after an image's ``count`` detections.
        labels: (B, k) classes (0 in the empty slots).
        count: (B,) detections of each image.
        exact: (B,) bool, whether the image's detections are certainly those of the full decode (module docstring).
    """

    rows: Tensor
    scores: Tensor
    labels: Tensor
    count: Tensor
    exact: Tensor


def clip_boxes(boxes: Tensor, frame: Tensor) -> Tensor:
    """(B, P, 4) xyxy boxes clipped to ``[0, W] x [0, H]`` of ``frame`` (B, 2) ``(height, width)``."""
    limits = frame.flip(-1).repeat(1, 2)[:, None]  # (B, 1, 4) = (W, H, W, H)
    return boxes.clamp(min=0).minimum(limits)


def image_frames(priors: Tensor, strides: Tensor) -> Tensor:
    """(B, 2) ``(height, width)`` of the padded input, read off the finest level: ``(rows, columns) * stride``.

    Tensor ops only (the graph exported to ONNX computes it for its own input size). Exact when the padded input
    size is a multiple of the finest stride (the detector pads to the backbone's ``size_divisor``, a multiple of
    every FPN stride it feeds); otherwise pass ``image_size`` to the decoder.

    Args:
        priors: (B, P, 2) xy prior locations.
        strides: (B, P) their strides.
    """
    finest = strides.amin(dim=1, keepdim=True)  # (B, 1)
    on_finest = (strides == finest)[..., None]  # locations (j*s, i*s) of the finest level
    extent = torch.where(on_finest, priors, priors.new_tensor(float("-inf"))).amax(dim=1) + finest  # (B, 2) xy
    return extent.flip(-1)


def image_frame(priors: Tensor, strides: Tensor) -> tuple[float, float]:
    """``image_frames`` of one image as Python floats: ``(height, width)`` from its (P, 2) priors and (P,) strides."""
    height, width = image_frames(priors[None], strides[None])[0].tolist()
    return height, width


class RepPointsPostprocess:
    """Detections from ``RepPointsOutputs``, optionally merged with the outputs of the mirrored batch.

    ``__call__`` gives the final per-image detections (threshold, class-wise NMS, top ``k``) from
    ``top_detections``, its fixed-size tensor-only part; ``batched`` gives the top ``k`` pre-NMS candidates of
    every image as one batched ``Detections``, which is what the ONNX export runs (``pointdet.export``). Both start
    from the same ``candidates``.

    Args:
        transform: point-set-to-box transform of the head that produced the outputs.
        score_threshold: least class probability kept (strictly greater, as ``multiclass_nms``).
        nms_iou: class-wise NMS IoU (0.5 for RepPoints v1, 0.6 for v2).
        pre_nms: priors kept per level and image before NMS, by their max class probability (<= 0: all).
        max_candidates: (prior, class) pairs per image that the fixed-size NMS reads, the best above the threshold.
    """

    export_k = 1000  # candidates per image in the exported graph when ``export_onnx`` is given no ``k``

    def __init__(
        self,
        transform: Transform = "moment",
        score_threshold: float = 0.05,
        nms_iou: float = 0.5,
        pre_nms: int = 1000,
        max_candidates: int = 1000,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.transform, self.score_threshold, self.nms_iou, self.pre_nms = transform, score_threshold, nms_iou, pre_nms
        self.max_candidates = max_candidates

    def __call__(
        self,
        outputs: RepPointsOutputs,
        flipped: RepPointsOutputs | None = None,
        k: int = 100,
        image_size: tuple[float, float] | None = None,
    ) -> list[Detections]:
        """Per-image detections in input pixels.

        Args:
            outputs: head outputs of a batch of B images.
            flipped: head outputs of the same batch mirrored left-right, or None.
            k: detections kept per image.
            image_size: ``(H, W)`` of the padded input, used to clip boxes and to mirror the flipped pass back
                (``x -> W - x``); None reads it off the priors (``image_frames``).

        Returns:
            B ``Detections`` of at most ``k`` boxes (xyxy input pixels), scores and labels, by decreasing score.
        """
        if image_size is None:
            frame = image_frames(outputs.priors, outputs.strides)
        else:
            frame = outputs.priors.new_tensor(image_size, dtype=torch.float32).expand(outputs.priors.shape[0], 2)
        top = self.top_detections(outputs, flipped, k, frame)
        return self.per_image(top, lambda: self.merged_candidates(outputs, flipped, frame), k)

    def top_detections(
        self,
        outputs: RepPointsOutputs,
        flipped: RepPointsOutputs | None = None,
        k: int = 100,
        frame: Tensor | None = None,
    ) -> TopDetections:
        """The detections of every image as fixed-size tensors, with no host sync (module docstring).

        Args:
            outputs, flipped, k: as ``__call__``.
            frame: (B, 2) ``(height, width)`` to clip to and mirror in; None reads it off the priors.
        """
        if frame is None:
            frame = image_frames(outputs.priors, outputs.strides)
        rows, scores = self.merged_candidates(outputs, flipped, frame)  # (B, Q, 4 + E), (B, Q, C)
        num_classes = scores.shape[-1]
        pairs = scores.flatten(1)  # (B, Q * C)
        above = pairs > self.score_threshold
        best, index = torch.where(above, pairs, -1.0).topk(min(self.max_candidates, pairs.shape[1]))  # (B, M)
        valid = best > self.score_threshold
        labels = index % num_classes
        rows = rows.gather(
            1, torch.div(index, num_classes, rounding_mode="floor")[..., None].expand(-1, -1, rows.shape[-1])
        )
        nms = fixed_size_nms(rows[..., :4], labels, valid, self.nms_iou, NMS_ITERATIONS)
        kept = nms.keep.sum(dim=1)
        exact = nms.exact & ((above.sum(dim=1) <= best.shape[1]) | (kept >= k))
        # The first k kept candidates, in order: the k largest of (M - position) over the kept ones.
        slots = min(k, best.shape[1])
        position = torch.arange(best.shape[1], 0, -1, device=best.device)
        _, first = torch.where(nms.keep, position, 0).topk(slots)  # (B, slots)
        filled = torch.arange(k, device=best.device) < kept[:, None]  # (B, k)
        rows = F.pad(rows.gather(1, first[..., None].expand(-1, -1, rows.shape[-1])), (0, 0, 0, k - slots))
        best, labels = F.pad(best.gather(1, first), (0, k - slots)), F.pad(labels.gather(1, first), (0, k - slots))
        return TopDetections(rows * filled[..., None], best * filled, labels * filled, kept.clamp(max=k), exact)

    def per_image(
        self, top: TopDetections, candidates: Callable[[], tuple[Tensor, Tensor]], k: int
    ) -> list[Detections]:
        """``top_detections``' output as per-image ``Detections``, after one host sync; an image whose result is not
        ``exact`` is decoded again by ``select`` from ``candidates()`` (``merged_candidates``' output)."""
        counts, exact = top.count.tolist(), top.exact.tolist()
        batch, slots = top.scores.shape
        if all(exact):
            flat = [b * slots + i for b in range(batch) for i in range(counts[b])]
            index = torch.tensor(flat, dtype=torch.long, device=top.rows.device)
            rows, scores, labels = (t.flatten(0, 1).index_select(0, index) for t in (top.rows, top.scores, top.labels))
            return self.detections(rows, scores, labels).split(counts)
        all_rows, all_scores = candidates()
        parts = [
            (top.rows[b, :n], top.scores[b, :n], top.labels[b, :n])
            if ok
            else self.select(all_rows[b], all_scores[b], k)
            for b, (n, ok) in enumerate(zip(counts, exact, strict=True))
        ]
        rows, scores, labels = (torch.cat(field) for field in zip(*parts, strict=True))
        return self.detections(rows, scores, labels).split([len(part[1]) for part in parts])

    def batched(self, outputs: RepPointsOutputs, flipped: RepPointsOutputs | None = None, k: int = 100) -> Detections:
        """The top ``k`` pre-NMS (prior, class) candidates of every image, by score, as one batched ``Detections``:
        boxes (B, k, 4) xyxy input pixels, scores (B, k) and labels (B, k). Tensor ops only, so it exports to ONNX.

        No threshold and no NMS: the caller applies ``score > score_threshold`` and class-wise NMS at ``nms_iou``
        (module docstring). The result equals ``__call__``'s whenever its top detections lie within the ``k``
        candidates, which always holds when at most ``k`` pairs score above the threshold. An image with fewer than
        ``k`` pairs (a small input) ends in fillers: score 0, which no threshold keeps, and a meaningless box.

        Args:
            outputs: head outputs of a batch of B images.
            flipped: head outputs of the same batch mirrored left-right, or None.
            k: candidates per image.
        """
        frame = image_frames(outputs.priors, outputs.strides)
        boxes, scores = self.merged_candidates(outputs, flipped, frame)  # (B, Q, 4), (B, Q, C)
        num_classes = scores.shape[-1]
        fillers = -(-k // num_classes)  # zero rows, so that k pairs exist whatever the input size
        boxes, scores = F.pad(boxes, (0, 0, 0, fillers)), F.pad(scores, (0, 0, 0, fillers))
        top, index = scores.flatten(1).topk(k)  # (B, k) over (candidate, class) pairs
        rows = torch.div(index, num_classes, rounding_mode="floor")
        boxes = torch.gather(boxes, 1, rows[..., None].expand(-1, -1, 4))
        return Detections(boxes, top, index % num_classes)

    @torch.no_grad()
    def proposals(self, outputs: RepPointsOutputs, num_proposals: int = TRAIN_PROPOSALS) -> list[Tensor]:
        """Training proposals for an RoI stage: per image the (N, 4) boxes of the ``num_proposals`` priors of
        highest max class probability, no threshold and no NMS (the RoI stage samples them)."""
        boxes = self.boxes(outputs, image_frames(outputs.priors, outputs.strides))
        scores = self.probabilities(outputs).amax(dim=-1)  # (B, P)
        top = scores.topk(min(num_proposals, scores.shape[1])).indices
        return list(boxes[..., :4].gather(1, top[..., None].expand(-1, -1, 4)).unbind(0))

    def merged_candidates(
        self, outputs: RepPointsOutputs, flipped: RepPointsOutputs | None, frame: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``candidates`` of ``outputs``, followed by those of ``flipped`` mapped back by ``x -> W - x``."""
        boxes, scores = self.candidates(outputs, frame)
        if flipped is None:
            return boxes, scores
        mirrored, mirrored_scores = self.candidates(flipped, frame)
        mirrored = self.mirror_candidates(mirrored, frame[:, None, 1])
        return torch.cat([boxes, mirrored], dim=1), torch.cat([scores, mirrored_scores], dim=1)

    def mirror_candidates(self, candidates: Tensor, width: Tensor) -> Tensor:
        """(B, N, D) candidate rows of the mirrored pass mapped back by ``x -> W - x``, ``width`` (B, 1)."""
        return mirror_boxes(candidates, width)

    def candidates(self, outputs: RepPointsOutputs, frame: Tensor) -> tuple[Tensor, Tensor]:
        """Every prior's candidate row and its class probabilities, zero outside its level's top ``pre_nms``.

        Args:
            outputs: head outputs of B images.
            frame: (B, 2) ``(height, width)`` the boxes are clipped to.

        Returns:
            (B, P, 4) clipped boxes (and the further columns a subclass's ``boxes`` appends to them) and (B, P, C)
            class probabilities, 0 for a prior outside the ``pre_nms`` of highest max probability of its level
            (ties to the lower index). With ``pre_nms`` <= 0, every prior keeps its probabilities.
        """
        scores = self.probabilities(outputs)  # (B, P, C)
        boxes = self.boxes(outputs, frame)
        if self.pre_nms <= 0:
            return boxes, scores
        levels = prior_levels(outputs.strides).expand(scores.shape[:2])
        chosen = rank_within_levels(scores.amax(dim=-1), levels) < self.pre_nms  # (B, P)
        return boxes, scores * chosen[..., None]

    def probabilities(self, outputs: RepPointsOutputs) -> Tensor:
        """(B, P, C) class probabilities of every prior, what ``candidates`` ranks and thresholds."""
        return outputs.scores.detach().float().sigmoid()

    def boxes(self, outputs: RepPointsOutputs, frame: Tensor) -> Tensor:
        """(B, P, 4) boxes of every prior's refine points, clipped to ``frame`` (B, 2) ``(height, width)``."""
        points = outputs.points_refine.detach().float()
        points = points.view(points.shape[0], points.shape[1], -1, 2)  # (B, P, N, 2)
        transfer = outputs.moment_transfer.detach().float()[:, None]  # (B, 1, 2)
        return clip_boxes(points_to_boxes(points, self.transform, transfer), frame)

    def select(self, rows: Tensor, scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """The exact per-image decode: every (candidate, class) pair above the threshold, class-wise NMS
        (``torchvision.ops.batched_nms``), the top ``k``.

        Args:
            rows: (Q, 4 + E) xyxy candidates, with the E further columns of a subclass (``decoders.lsnet``).
            scores: (Q, C) class probabilities.
            k: detections kept.

        Returns:
            The kept (N, 4 + E) rows, (N,) scores and (N,) labels, by decreasing score.
        """
        index, labels = (scores > self.score_threshold).nonzero(as_tuple=True)
        rows, scores = rows[index], scores[index, labels]
        keep = batched_nms(rows[:, :4], scores, labels, self.nms_iou)[:k]
        return rows[keep], scores[keep], labels[keep]

    def detections(self, rows: Tensor, scores: Tensor, labels: Tensor) -> Detections:
        """Kept (N, 4 + E) candidate rows, (N,) scores and labels as ``Detections`` (E = 0 here)."""
        return Detections(rows, scores, labels)
