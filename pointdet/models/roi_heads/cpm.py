"""CPM R-CNN's RoI heads ("CPM R-CNN: Calibrating Point-guided Misalignment in Object Detection", Zhu et al.,
WACV 2021; METHODS.md CARD 6): a classification branch without box regression, a cascade of Grid R-CNN Plus grid
branches with decreasing mapping ratios (CMM), an IoU scoring module (ISM) and a re-scoring module (RSM), fused
into one score (eq. 4). With CMM, ISM and RSM off it is Grid R-CNN Plus (one grid stage, mapping ratio 2).

Losses (eq. 2, 5-7): ``L_cls`` and ``L_RSM`` softmax CE; ``L_CMM = Σ_j β_j ω [BCE(fused_j) + BCE(unfused_j)]`` with
β = (1, 0.5, 0.25), ω = 15; ``L_ISM = 0.5 (ŝ - t)²`` on ``t = [1 - IoU, IoU]``. Facts derived from
zhubinQAQ/CPM-R-CNN (``grid_cascade_rcnn.py``, ``loss.py``, ``inference.py``) as summarised in the card.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import clip_boxes_to_image

from pointdet.decoders.grid import CPMPostprocess, decode_grid_boxes, fused_score
from pointdet.models.roi_heads.grid import GridBranch
from pointdet.models.roi_heads.pooling import SAMPLING_RATIO, LevelRule, MLPClassifier, RoIPooler
from pointdet.structures import Detections, Instances
from pointdet.targets.grid import build_grid_targets, iou_targets
from pointdet.targets.roi_sampling import sample_batch_rois, select_matched_rois, threshold_matcher

CLASSIFIER_ROI = 7
GRID_ROI = 14
FOREGROUND_IOU = 0.5
GRID_LOSS_WEIGHT = 15.0  # ω
PLAIN_GRID_MAPPING = 2.0  # Grid R-CNN's single stage


class CPMRoIHeads(nn.Module):
    """Classification branch, grid cascade, ISM and RSM over FPN maps.

    Args:
        level_names: names of the detector's maps (``feature_shapes``), finest first; P2-P5 are pooled.
        in_channels: D of the maps.
        num_classes: C.
        hidden: width of the FC layers (1024).
        point_channels: channels per grid point (64).
        grid_convs: 3x3 convs of each grid branch (8).
        mapping_ratios: m of each grid stage; (2.0,) is Grid R-CNN Plus, (2, 1.5, 1.25) the cascade (CMM).
        stage_ious: IoU a stage's training RoIs need with their GT (0.5, 0.6, 0.7).
        stage_weights: β of each stage (1, 0.5, 0.25).
        iou_scoring: ISM on; rescoring: RSM on.
        roi_batch, positive_fraction: RoIs sampled per image for the classifier and the RSM (512, 0.25).
        max_grid_rois: at most this many training RoIs per image and grid stage (96).
        sampling_ratio: RoIAlign's bilinear samples per bin and axis (2; 0 = adaptive).
        roi_aligned, roi_level_rule: half-pixel aligned RoIAlign, and how a RoI's pyramid level is rounded
            (``pooling.RoIPooler``).
        grid_conv_bias, grid_fusion: the grid branches' conv bias and point fusion (``grid.GridBranch``).
    """

    def __init__(
        self,
        level_names: Sequence[str],
        in_channels: int,
        num_classes: int,
        *,
        hidden: int = 1024,
        point_channels: int = 64,
        grid_convs: int = 8,
        mapping_ratios: Sequence[float] = (2.0, 1.5, 1.25),
        stage_ious: Sequence[float] = (0.5, 0.6, 0.7),
        stage_weights: Sequence[float] = (1.0, 0.5, 0.25),
        iou_scoring: bool = True,
        rescoring: bool = True,
        roi_batch: int = 512,
        positive_fraction: float = 0.25,
        max_grid_rois: int = 96,
        sampling_ratio: int = SAMPLING_RATIO,
        roi_aligned: bool = False,
        roi_level_rule: LevelRule = "torchvision",
        grid_conv_bias: bool = False,
        grid_fusion: bool = True,
    ) -> None:
        super().__init__()
        if not len(mapping_ratios) == len(stage_ious) == len(stage_weights):
            raise ValueError(
                f"mapping_ratios {tuple(mapping_ratios)}, stage_ious {tuple(stage_ious)} and stage_weights "
                f"{tuple(stage_weights)} must have one entry per grid stage"
            )
        self.mapping_ratios, self.stage_ious = tuple(mapping_ratios), tuple(stage_ious)
        self.stage_weights, self.max_grid_rois = tuple(stage_weights), max_grid_rois
        pooling = {"sampling_ratio": sampling_ratio, "aligned": roi_aligned, "level_rule": roi_level_rule}
        self.classifier_pool = RoIPooler(level_names, CLASSIFIER_ROI, **pooling)
        self.grid_pool = RoIPooler(level_names, GRID_ROI, **pooling)
        pooled = in_channels * CLASSIFIER_ROI**2
        self.classifier = MLPClassifier(pooled, hidden, num_classes + 1)
        self.grids = nn.ModuleList(
            GridBranch(in_channels, point_channels, grid_convs, grid_conv_bias, grid_fusion)
            for _ in self.mapping_ratios
        )
        grid_features = 9 * point_channels * (GRID_ROI // 2) ** 2
        self.iou_scorer = MLPClassifier(grid_features, hidden, 2) if iou_scoring else None
        self.rescorer = MLPClassifier(pooled, hidden, num_classes + 1) if rescoring else None
        self.matcher = threshold_matcher(FOREGROUND_IOU)
        self.sampler = BalancedPositiveNegativeSampler(roi_batch, positive_fraction)

    def _classify(self, head: nn.Module, features: Sequence[Tensor], rois: list[Tensor], sizes: list) -> Tensor:
        return head(self.classifier_pool(features, rois, sizes))

    def loss(
        self,
        features: Sequence[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        instances: list[Instances],
    ) -> dict[str, Tensor]:
        """Named, weighted losses: ``loss_cls``, ``loss_grid_<j>`` per stage, ``loss_ism``, ``loss_rsm``.

        Args:
            features: the detector's maps in ``level_names`` order.
            proposals: B (P_b, 4) detached RPN boxes.
            image_sizes: B (H, W) of the images (boxes are clipped to them).
            instances: B ground truths.
        """
        candidates = [torch.cat([boxes.detach(), inst.boxes]) for boxes, inst in zip(proposals, instances, strict=True)]
        sampled, labels = sample_batch_rois(candidates, instances, self.matcher, self.sampler)
        negatives = [rois[roi_labels == 0] for rois, roi_labels in zip(sampled, labels, strict=True)]
        logits = self._classify(self.classifier, features, sampled, image_sizes)
        losses = {"loss_cls": F.cross_entropy(logits, torch.cat(labels))}
        stage_rois = [rois[roi_labels > 0] for rois, roi_labels in zip(sampled, labels, strict=True)]
        final_rois, grid_features = stage_rois, None
        for stage, grid in enumerate(self.grids):
            picked = [
                select_matched_rois(
                    rois, inst.boxes, self.stage_ious[stage], append_gt=stage > 0, max_rois=self.max_grid_rois
                )
                for rois, inst in zip(stage_rois, instances, strict=True)
            ]
            final_rois = [rois for rois, _ in picked]
            matched_gt = [inst.boxes[m] for (_, m), inst in zip(picked, instances, strict=True)]
            outputs = grid(self.grid_pool(features, final_rois, image_sizes))
            losses[f"loss_grid_{stage}"] = self._grid_loss(
                stage, outputs.fused, outputs.unfused, final_rois, matched_gt
            )
            grid_features = outputs.features
            boxes = decode_grid_boxes(outputs.fused.detach(), torch.cat(final_rois), self.mapping_ratios[stage])
            stage_rois = [
                clip_boxes_to_image(b, image_sizes[i]) for i, b in enumerate(boxes.split([len(r) for r in final_rois]))
            ]
        if self.iou_scorer is not None:
            predicted = self.iou_scorer(grid_features)
            targets = torch.cat([iou_targets(r, inst.boxes) for r, inst in zip(final_rois, instances, strict=True)])
            losses["loss_ism"] = 0.5 * ((predicted.float() - targets) ** 2).mean()
        if self.rescorer is not None:
            losses["loss_rsm"] = self._rescore_loss(features, final_rois, negatives, image_sizes, instances)
        return losses

    def _grid_loss(
        self, stage: int, fused: Tensor, unfused: Tensor | None, rois: list[Tensor], gt_boxes: list[Tensor]
    ) -> Tensor:
        """β_j ω [BCE(fused) + BCE(unfused)], means over all N x 9 x 28 x 28 logits (β_j ω BCE of the one heatmap
        without fusion); zero (still connected to the branch's parameters) when no image has a RoI for this
        stage."""
        weight = self.stage_weights[stage] * GRID_LOSS_WEIGHT
        heatmaps = [fused] if unfused is None else [fused, unfused]
        if sum(len(r) for r in rois) == 0:
            return sum(heatmap.sum() for heatmap in heatmaps) * 0.0
        targets = build_grid_targets(torch.cat(rois), torch.cat(gt_boxes), self.mapping_ratios[stage])
        return weight * sum(F.binary_cross_entropy_with_logits(heatmap.float(), targets) for heatmap in heatmaps)

    def _rescore_loss(
        self,
        features: Sequence[Tensor],
        final_rois: list[Tensor],
        negatives: list[Tensor],
        image_sizes: list[tuple[int, int]],
        instances: list[Instances],
    ) -> Tensor:
        """RSM: the final-stage RoIs as positives and the classifier's sampled negatives, re-matched (0.5) and
        re-sampled (``roi_batch``, ``positive_fraction``), softmax CE."""
        candidates = [torch.cat([positive, negative]) for positive, negative in zip(final_rois, negatives, strict=True)]
        rois, labels = sample_batch_rois(candidates, instances, self.matcher, self.sampler)
        logits = self._classify(self.rescorer, features, rois, image_sizes)
        if sum(len(r) for r in rois) == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(logits, torch.cat(labels))

    @torch.no_grad()
    def predict(
        self,
        features: Sequence[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        postprocess: CPMPostprocess,
        k: int = 100,
    ) -> list[Detections]:
        """Detections of each image: classifier scores on the RPN boxes, class-wise NMS, the grid cascade, the
        fused score, the ``k`` best.

        Args:
            features: the detector's maps; proposals: B (P_b, 4) RPN boxes; image_sizes: B (H, W).
        """
        probabilities = self._classify(self.classifier, features, proposals, image_sizes).softmax(dim=1)
        selected = [
            postprocess.select(rois, p)
            for rois, p in zip(proposals, probabilities.split([len(r) for r in proposals]), strict=True)
        ]
        rois = [boxes for boxes, _, _ in selected]
        counts = [len(r) for r in rois]
        grid_features = None
        for stage, grid in enumerate(self.grids):
            outputs = grid(self.grid_pool(features, rois, image_sizes))
            grid_features = outputs.features
            boxes = decode_grid_boxes(outputs.fused, torch.cat(rois), self.mapping_ratios[stage]).split(counts)
            rois = [postprocess.clip(b, size) for b, size in zip(boxes, image_sizes, strict=True)]
        class_scores = torch.cat([scores for _, scores, _ in selected])
        labels = torch.cat([lab for _, _, lab in selected])
        iou_score = self.iou_scorer(grid_features)[:, 1].float() if self.iou_scorer is not None else None
        rescore = None
        if self.rescorer is not None:
            rescore_probabilities = self._classify(self.rescorer, features, rois, image_sizes).softmax(dim=1)
            rescore = rescore_probabilities[torch.arange(len(labels), device=labels.device), labels + 1]
        scores = fused_score(class_scores.float(), iou_score, rescore, postprocess.gamma).split(counts)
        detections = []
        for boxes, image_scores, image_labels in zip(rois, scores, labels.split(counts), strict=True):
            order = image_scores.argsort(descending=True)[:k]
            detections.append(Detections(boxes[order], image_scores[order], image_labels[order]))
        return detections
