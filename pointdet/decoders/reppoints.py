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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from pointdet.structures import Detections

if TYPE_CHECKING:
    from pointdet.models.heads.reppoints import RepPointsOutputs

Transform = Literal["minmax", "partial_minmax", "moment", "exact_minmax"]
TRANSFORMS: tuple[str, ...] = ("minmax", "partial_minmax", "moment", "exact_minmax")


def points_to_boxes(points: Tensor, transform: Transform, moment_transfer: Tensor | None = None) -> Tensor:
    """Pseudo boxes of point sets.

    - ``minmax``: the extent of all points; ``partial_minmax``: the extent of the first 4 points.
    - ``moment``: ``mean ± std * exp(moment_transfer)`` per axis, std unbiased (``torch.std``, as mmdetection);
      ``moment_transfer`` is ``(log width factor, log height factor)``.
    - ``exact_minmax`` (RepPoints v2): point 0 is ``(x1, y1)`` and point 1 is ``(x2, y2)``.

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
    if transform in ("minmax", "partial_minmax"):
        subset = points if transform == "minmax" else points[..., :4, :]
        return torch.cat([subset.amin(dim=-2), subset.amax(dim=-2)], dim=-1)
    if transform == "exact_minmax":
        return torch.cat([points[..., 0, :], points[..., 1, :]], dim=-1)
    if transform == "moment":
        mean = points.mean(dim=-2)  # (..., 2)
        half = points.std(dim=-2)  # (..., 2) unbiased, as mmdetection's torch.std
        if moment_transfer is not None:
            half = half * moment_transfer.exp()
        return torch.cat([mean - half, mean + half], dim=-1)
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


def level_counts(strides: Tensor) -> list[int]:
    """Prior counts of the pyramid levels from the (P,) stride of each prior (levels are contiguous runs)."""
    return torch.unique_consecutive(strides, return_counts=True)[1].tolist()


def image_frame(priors: Tensor, strides: Tensor) -> tuple[float, float]:
    """``(height, width)`` of the padded input, read off the finest level: ``(rows, columns) * stride``.

    Exact when the padded input size is a multiple of the finest stride (the detector pads to the backbone's
    ``size_divisor``, a multiple of every FPN stride it feeds); otherwise pass ``image_size`` to the decoder.

    Args:
        priors: (P, 2) xy prior locations of one image.
        strides: (P,) their strides.
    """
    finest = strides.min()
    on_finest = priors[strides == finest]  # (H_0 * W_0, 2), locations (j*s, i*s)
    height, width = (on_finest[:, 1].max() + finest).item(), (on_finest[:, 0].max() + finest).item()
    return height, width


class RepPointsPostprocess:
    """Detections from ``RepPointsOutputs``, optionally merged with the outputs of the mirrored batch.

    Args:
        transform: point-set-to-box transform of the head that produced the outputs.
        score_threshold: least class probability kept (strictly greater, as ``multiclass_nms``).
        nms_iou: class-wise NMS IoU (0.5 for RepPoints v1, 0.6 for v2).
        pre_nms: priors kept per level and image before NMS, by their max class probability.
    """

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
                (``x -> W - x``); None reads it off the priors (``image_frame``).

        Returns:
            B ``Detections`` of at most ``k`` boxes (xyxy input pixels), scores and labels, by decreasing score.
        """
        detections = []
        for b in range(outputs.scores.shape[0]):
            frame = image_size or image_frame(outputs.priors[b], outputs.strides[b])
            boxes, scores = self.candidates(outputs, b, frame)
            if flipped is not None:
                mirrored, mirrored_scores = self.candidates(flipped, b, frame)
                mirrored = mirrored[:, [2, 1, 0, 3]] * mirrored.new_tensor([-1.0, 1.0, -1.0, 1.0])
                mirrored = mirrored + mirrored.new_tensor([frame[1], 0.0, frame[1], 0.0])
                boxes, scores = torch.cat([boxes, mirrored]), torch.cat([scores, mirrored_scores])
            detections.append(self.select(boxes, scores, k))
        return detections

    def candidates(self, outputs: RepPointsOutputs, b: int, frame: tuple[float, float]) -> tuple[Tensor, Tensor]:
        """Image ``b``'s per-level top ``pre_nms`` priors: (Q, 4) clipped boxes and (Q, C) class probabilities."""
        scores = outputs.scores[b].detach().float().sigmoid()  # (P, C)
        points = outputs.points_refine[b].detach().float()
        points = points.view(points.shape[0], -1, 2)  # (P, N, 2)
        boxes = points_to_boxes(points, self.transform, outputs.moment_transfer[b].detach().float())  # (P, 4)
        keep, start = [], 0
        for count in level_counts(outputs.strides[b]):
            level_scores = scores[start : start + count].max(dim=1).values
            top = min(self.pre_nms, count) if self.pre_nms > 0 else count
            keep.append(level_scores.topk(top).indices + start)
            start += count
        keep = torch.cat(keep)
        height, width = frame
        limits = boxes.new_tensor([width, height, width, height])
        return boxes[keep].clamp(min=0).minimum(limits), scores[keep]

    def select(self, boxes: Tensor, scores: Tensor, k: int) -> Detections:
        """Every (candidate, class) pair above the threshold, class-wise NMS, the top ``k``.

        Args:
            boxes: (Q, 4) xyxy candidates.
            scores: (Q, C) class probabilities.
            k: detections kept.
        """
        index, labels = (scores > self.score_threshold).nonzero(as_tuple=True)
        boxes, scores = boxes[index], scores[index, labels]
        keep = batched_nms(boxes, scores, labels, self.nms_iou)[:k]
        return Detections(boxes[keep], scores[keep], labels[keep])
