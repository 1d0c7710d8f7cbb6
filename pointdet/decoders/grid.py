"""Grid R-CNN (Plus) heatmaps -> boxes, CPM R-CNN's fused score and its test-time selection (METHODS.md CARD 6 (d)).

Each point's heatmap is arg-maxed inside its 28x28 sub-region; the location, moved by the sub-region's origin onto
the 56x56 virtual map, is mapped into the expanded RoI (``X1_exp + (x + 0.5) / 56 * W_exp``). A box edge is the
score-weighted mean of its edge's 3 points: x1 from points {0, 1, 2}, y1 from {0, 3, 6}, x2 from {6, 7, 8}, y2
from {2, 5, 8}. Derived from zhubinQAQ/CPM-R-CNN ``grid_rcnn/inference.py`` (``get_boxes``) as summarised in the
card; no code of theirs was copied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from pointdet.ops.nms import soft_nms
from pointdet.structures import Detections
from pointdet.targets.grid import HEATMAP_SIZE, VIRTUAL_SIZE, expand_boxes, subregion_origins

EDGE_POINTS = {"x1": (0, 1, 2), "y1": (0, 3, 6), "x2": (6, 7, 8), "y2": (2, 5, 8)}


def decode_grid_boxes(heatmaps: Tensor, rois: Tensor, mapping_ratio: float) -> Tensor:
    """Boxes from grid heatmaps.

    Args:
        heatmaps: (N, 9, 28, 28) logits or probabilities (only their order and, for the weights, their sigmoid
            matter: logits are expected).
        rois: (N, 4) xyxy RoIs the heatmaps were predicted for.
        mapping_ratio: the stage's m.

    Returns:
        (N, 4) xyxy boxes in input pixels (not clipped).
    """
    count = len(rois)
    probabilities = heatmaps.float().sigmoid().flatten(2)  # (N, 9, 784)
    scores, index = probabilities.max(dim=2)  # (N, 9)
    local = torch.stack([index % HEATMAP_SIZE, index // HEATMAP_SIZE], dim=-1).float()  # (N, 9, 2) xy
    virtual = local + subregion_origins(rois.device)  # (N, 9, 2) on the 56x56 map
    expanded = expand_boxes(rois.float(), mapping_ratio)
    size = expanded[:, 2:] - expanded[:, :2]
    points = expanded[:, None, :2] + (virtual + 0.5) / VIRTUAL_SIZE * size[:, None]  # (N, 9, 2)

    def edge(name: str, axis: int) -> Tensor:
        chosen = list(EDGE_POINTS[name])
        weights = scores[:, chosen].clamp(min=1e-12)
        return (points[:, chosen, axis] * weights).sum(dim=1) / weights.sum(dim=1)

    boxes = torch.stack([edge("x1", 0), edge("y1", 1), edge("x2", 0), edge("y2", 1)], dim=1)
    return boxes.reshape(count, 4)


def fused_score(class_score: Tensor, iou_score: Tensor | None, rescore: Tensor | None, gamma: float = 0.8) -> Tensor:
    """CPM R-CNN's eq. 4: ``(s_cls * s_ISM) ** gamma * s_RSM ** (1 - gamma)``.

    A disabled module contributes nothing: without ISM ``s_ISM = 1``; without RSM the score is ``s_cls * s_ISM``.
    ``s_ISM`` is the ISM's raw foreground output, clamped to [0, 1] here (the card's open question 4: a raw linear
    output can leave [0, 1], and a negative base has no real power).

    Args:
        class_score, iou_score, rescore: (N,) each; None for a module that is off.
    """
    base = class_score if iou_score is None else class_score * iou_score.clamp(0, 1)
    if rescore is None:
        return base
    return base.clamp(min=0) ** gamma * rescore.clamp(min=0) ** (1 - gamma)


@dataclass(frozen=True)
class CPMPostprocess:
    """Test-time options of CPM R-CNN, applied by its RoI heads (a plain object, rebuilt from the config at
    evaluation so that decode options need no retraining).

    Args:
        score_threshold: class probabilities kept after the classification branch (0.03).
        nms_iou: class-wise NMS IoU on the RPN boxes (0.3).
        max_grid_rois: RoIs per image kept after NMS for the grid stages (96).
        gamma: γ of the fused score (0.8).
        soft_nms: Gaussian soft-NMS (Bodla et al.) instead of the class-wise NMS, here and in the test-time merge
            (off, as the paper's main results).
        soft_nms_sigma: its σ (0.5).
        clip_boxes: clip each grid stage's boxes to the image (on); both official codes mean to but do not (their
            in-place clamp acts on a copy), so converted official models turn it off.
    """

    score_threshold: float = 0.03
    nms_iou: float = 0.3
    max_grid_rois: int = 96
    gamma: float = 0.8
    soft_nms: bool = False
    soft_nms_sigma: float = 0.5
    clip_boxes: bool = True

    def clip(self, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        """(N, 4) boxes of one image clipped to its (H, W) when ``clip_boxes``, else as they are."""
        return clip_boxes_to_image(boxes, image_size) if self.clip_boxes else boxes

    def suppress(self, boxes: Tensor, scores: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Class-wise NMS at ``nms_iou`` (or soft-NMS) of one image: (N, 4) boxes, (N,) scores and labels ->
        the indices of the ``k`` best kept, best first, and their (decayed, for soft-NMS) scores."""
        if self.soft_nms:
            return soft_nms(boxes.float(), scores.float(), labels, sigma=self.soft_nms_sigma, max_kept=k)
        keep = batched_nms(boxes.float(), scores.float(), labels, self.nms_iou)[:k]
        return keep, scores[keep]

    def merge_scales(self, parts: list[Detections], k: int = 100) -> Detections:
        """Detections of one image from several test passes (scales, the flip), in the same pixels: concatenated,
        then ``suppress``, the ``k`` best."""
        combined = Detections.cat(parts)
        keep, scores = self.suppress(combined.boxes, combined.scores, combined.labels, k)
        return replace(combined[keep], scores=scores)

    def select(self, rois: Tensor, probabilities: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Candidates of one image from its RoIs and their class probabilities.

        Args:
            rois: (R, 4) boxes; probabilities: (R, C + 1) softmax, column 0 the background.

        Returns:
            (K, 4) boxes, (K,) scores, (K,) labels ``0..C-1``; K <= ``max_grid_rois``, best first.
        """
        scores = probabilities[:, 1:]
        roi_index, labels = torch.where(scores > self.score_threshold)
        boxes, kept_scores = rois[roi_index], scores[roi_index, labels]
        keep, kept_scores = self.suppress(boxes, kept_scores, labels, self.max_grid_rois)
        return boxes[keep], kept_scores, labels[keep]
