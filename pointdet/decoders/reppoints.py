"""RepPoints decoding (METHODS.md CARD 5 §5.0 "Test"): point sets -> pseudo boxes -> class-wise NMS.

``points_to_boxes`` is the point-set-to-box transform of RepPoints (Yang et al. ICCV 2019, §3.2 "pseudo box";
open-mmlab/mmdetection v2.x mmdet/models/dense_heads/reppoints_head.py ``points2bbox``; ``exact_minmax`` from
Scalsol/RepPointsV2 mmdet/models/dense_heads/reppoints_head.py). The head's loss uses it too, so training and
decoding read the same boxes.

``RepPointsPostprocess`` follows mmdetection's ``_get_bboxes_single`` and ``multiclass_nms``: per image and level
keep the ``pre_nms`` priors of highest max-class score, box them from the refine points, clip to the image, keep
every (prior, class) pair scoring above the threshold, class-wise NMS, top ``k``. The flip test concatenates the
candidates of the mirrored pass (mapped back by ``x -> W - x``) with the plain pass's before the threshold and NMS,
as mmdetection's dense-head ``aug_test_bboxes`` merges augmented passes.

``__call__`` and ``batched`` share ``candidates`` (the per-level top ``pre_nms`` priors of every image, boxed and
clipped, in tensor ops of static size). ``__call__`` then thresholds and NMSes each image; ``batched`` returns the
top ``k`` (prior, class) pairs of each image **before NMS** — boxes (B, k, 4), scores (B, k), labels (B, k) — and
is what ``pointdet export`` puts in the ONNX graph (``export_k`` = 1000 candidates by default). The caller of the
graph applies the score threshold (0.05) and class-wise NMS at ``nms_iou`` (0.5), then keeps the top 100::

    for b in range(len(boxes)):  # boxes, scores, labels: the graph's outputs, numpy
        keep = scores[b] > 0.05
        box, score, label = (torch.from_numpy(a[b][keep]) for a in (boxes, scores, labels))
        top = torchvision.ops.batched_nms(box, score, label, 0.5)[:100]  # box[top], score[top], label[top]

This gives ``predict``'s detections whenever its top 100 lie within the ``k`` candidates, always so when at most
``k`` pairs pass the threshold (tested). Why NMS stays out of the graph: torchvision's ``nms`` / ``batched_nms``
trace to one ONNX ``NonMaxSuppression`` over a single box set, so per-image NMS needs a loop over the batch, which
the tracer unrolls to the traced batch size (the graph's batch is dynamic). ONNX's own ``NonMaxSuppression`` is
batched and class-wise, but PyTorch has no op that traces to it (it would need a custom symbolic with no PyTorch
reference to test against), it returns a data-dependent list of (image, class, box) triples that must be
scattered back into a padded top ``k``, and runtimes differ in its tie and threshold handling. A fixed-size
candidate output keeps the graph plain tensor ops, equal to PyTorch's ``batched`` to float precision, with the
NMS the caller runs being torchvision's, the one ``predict`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from pointdet.decoders.tta import mirror_boxes
from pointdet.structures import Detections

if TYPE_CHECKING:
    from pointdet.models.heads.reppoints import RepPointsOutputs

Transform = Literal["minmax", "partial_minmax", "moment", "exact_minmax", "corner_minmax"]
TRANSFORMS: tuple[str, ...] = ("minmax", "partial_minmax", "moment", "exact_minmax", "corner_minmax")
CORNER_POINTS = 2  # exact_minmax / corner_minmax: points 0 and 1 are the box corners


def points_to_boxes(points: Tensor, transform: Transform, moment_transfer: Tensor | None = None) -> Tensor:
    """Pseudo boxes of point sets.

    - ``minmax``: the extent of all points; ``partial_minmax``: the extent of the first 4 points.
    - ``moment``: ``mean ± std * exp(moment_transfer)`` per axis, std unbiased (``torch.std``, as mmdetection);
      ``moment_transfer`` is ``(log width factor, log height factor)``.
    - ``exact_minmax`` (the RepPoints v2 code): point 0 is ``(x1, y1)`` and point 1 is ``(x2, y2)``. A pair that
      crosses over gives an inverted box, which no box loss can turn back: its overlap with any GT is 0.
    - ``corner_minmax`` (pointdet's RepPoints v2 default): the extent of points 0 and 1, equal to ``exact_minmax``
      whenever point 0 is above and left of point 1, and a valid box when the pair crosses over.

    Args:
        points: (..., N, 2) xy. The transforms commute with ``points * stride + prior``, so pixels in gives pixels
            out and stride units in gives stride units out.
        transform: one of ``TRANSFORMS``.
        moment_transfer: for ``moment`` only, a tensor broadcastable to (..., 2): (2,) or, for (B, P, N, 2) points,
            (B, 1, 2). None means 0.

    Returns:
        (..., 4) xyxy boxes in the units of ``points``.
    """
    if points.shape[-1] != 2:
        raise ValueError(f"points must be (..., N, 2) xy, got shape {tuple(points.shape)}")
    if transform in ("minmax", "partial_minmax", "corner_minmax"):
        subset = {
            "minmax": points,
            "partial_minmax": points[..., :4, :],
            "corner_minmax": points[..., :CORNER_POINTS, :],
        }
        return torch.cat([subset[transform].amin(dim=-2), subset[transform].amax(dim=-2)], dim=-1)
    if transform == "exact_minmax":
        return points[..., :CORNER_POINTS, :].flatten(-2)
    if transform == "moment":
        mean = points.mean(dim=-2)  # (..., 2)
        half = points.std(dim=-2)  # (..., 2) unbiased, as mmdetection's torch.std
        if moment_transfer is not None:
            half = half * moment_transfer.exp()
        return torch.cat([mean - half, mean + half], dim=-1)
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


def clip_boxes(boxes: Tensor, frame: Tensor) -> Tensor:
    """(B, P, 4) xyxy boxes clipped to ``[0, W] x [0, H]`` of ``frame`` (B, 2) ``(height, width)``."""
    limits = frame.flip(-1).repeat(1, 2)[:, None]  # (B, 1, 4) = (W, H, W, H)
    return boxes.clamp(min=0).minimum(limits)


def level_strides(strides: Tensor) -> list[float]:
    """The stride of each pyramid level, finest first, from the (P,) stride of each prior (levels are contiguous
    runs). Model constants: while tracing they become constants of the graph, which is right at any input size."""
    return torch.unique_consecutive(strides).tolist()


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

    ``__call__`` gives the final per-image detections (threshold, class-wise NMS, top ``k``); ``batched`` gives the
    top ``k`` pre-NMS candidates of every image as one batched ``Detections``, tensor ops only, which is what the
    ONNX export runs (``pointdet.export``). Both start from the same ``candidates``.

    Args:
        transform: point-set-to-box transform of the head that produced the outputs.
        score_threshold: least class probability kept (strictly greater, as ``multiclass_nms``).
        nms_iou: class-wise NMS IoU (0.5 for RepPoints v1, 0.6 for v2).
        pre_nms: priors kept per level and image before NMS, by their max class probability (<= 0: all).
    """

    export_k = 1000  # candidates per image in the exported graph when ``export_onnx`` is given no ``k``

    def __init__(
        self, transform: Transform = "moment", score_threshold: float = 0.05, nms_iou: float = 0.5, pre_nms: int = 1000
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.transform, self.score_threshold, self.nms_iou, self.pre_nms = transform, score_threshold, nms_iou, pre_nms

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
        boxes, scores = self.merged_candidates(outputs, flipped, frame)
        return [
            self.select(image_boxes, image_scores, k) for image_boxes, image_scores in zip(boxes, scores, strict=True)
        ]

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
        """Every image's per-level top ``pre_nms`` priors by max class probability, tensor ops only.

        Args:
            outputs: head outputs of B images.
            frame: (B, 2) ``(height, width)`` the boxes are clipped to.

        Returns:
            (B, Q, 4) clipped boxes (and the further columns a subclass's ``boxes`` appends to them) and (B, Q, C)
            class probabilities, ``Q = levels * pre_nms``: level after level,
            each by decreasing max probability; a level with fewer than ``pre_nms`` priors leaves its last slots
            empty (zero box, zero probabilities). With ``pre_nms`` <= 0, every prior (Q = P).
        """
        scores = self.probabilities(outputs)  # (B, P, C)
        boxes = self.boxes(outputs, frame)
        if self.pre_nms <= 0:
            return boxes, scores
        # One top-k per level over all P priors, the other levels' masked to -1 and pre_nms -1 fillers appended:
        # static sizes whatever the input size (a level may have fewer than pre_nms priors); probabilities are
        # >= 0, so a slot holding -1 is empty. Padding boxes and scores by pre_nms rows makes every index valid.
        best = F.pad(scores.amax(dim=-1), (0, self.pre_nms), value=-1.0)  # (B, P + pre_nms)
        strides = F.pad(outputs.strides, (0, self.pre_nms), value=0.0)
        slots, index = [], []
        for stride in level_strides(outputs.strides[0]):
            level_best, level_index = torch.where(strides == stride, best, -1.0).topk(self.pre_nms)
            slots.append(level_best >= 0)
            index.append(level_index)
        filled, index = torch.cat(slots, dim=1)[..., None], torch.cat(index, dim=1)  # (B, Q, 1), (B, Q)
        boxes = F.pad(boxes, (0, 0, 0, self.pre_nms))
        boxes = torch.gather(boxes, 1, index[..., None].expand(-1, -1, boxes.shape[-1]))
        scores = F.pad(scores, (0, 0, 0, self.pre_nms))
        scores = torch.gather(scores, 1, index[..., None].expand(-1, -1, scores.shape[-1]))
        return boxes * filled, scores * filled

    def probabilities(self, outputs: RepPointsOutputs) -> Tensor:
        """(B, P, C) class probabilities of every prior, what ``candidates`` ranks and thresholds."""
        return outputs.scores.detach().float().sigmoid()

    def boxes(self, outputs: RepPointsOutputs, frame: Tensor) -> Tensor:
        """(B, P, 4) boxes of every prior's refine points, clipped to ``frame`` (B, 2) ``(height, width)``."""
        points = outputs.points_refine.detach().float()
        points = points.view(points.shape[0], points.shape[1], -1, 2)  # (B, P, N, 2)
        transfer = outputs.moment_transfer.detach().float()[:, None]  # (B, 1, 2)
        return clip_boxes(points_to_boxes(points, self.transform, transfer), frame)

    def select(self, boxes: Tensor, scores: Tensor, k: int) -> Detections:
        """Every (candidate, class) pair above the threshold, class-wise NMS, the top ``k``.

        Args:
            boxes: (Q, 4 + E) xyxy candidates, with the E further columns of a subclass (``decoders.lsnet``).
            scores: (Q, C) class probabilities.
            k: detections kept.
        """
        index, labels = (scores > self.score_threshold).nonzero(as_tuple=True)
        boxes, scores = boxes[index], scores[index, labels]
        keep = batched_nms(boxes[:, :4], scores, labels, self.nms_iou)[:k]
        return self.detections(boxes[keep], scores[keep], labels[keep])

    def detections(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> Detections:
        """The kept (N, 4 + E) candidates, (N,) scores and labels as ``Detections`` (E = 0 here)."""
        return Detections(boxes, scores, labels)
