"""LSNet head ("Location-Sensitive Visual Recognition with Cross-IOU Loss", Duan et al. 2021, §3.2-3.4, eq. 2;
METHODS.md CARD 4) for every landmark task (``targets.lsnet_tasks``: extreme points for detection, 36 contour points
for instance segmentation); the task is data the head reads, not a branch.

Per FPN level (shared weights): a classification tower and a landmark (regression) tower, 3 x [DCNv2 3x3 or
conv 3x3, GN(32), ReLU]. From the landmark tower the **init** stage regresses, from the anchor point (the prior
location), the task's V vectors (detection: top, left, bottom, right extreme points + box centre; segmentation: 36
contour points + the polygon-box centre) as 4 softplus "cross" components each (``losses.cross_iou``), plus the
task's free (dy, dx) points (4 for detection). The task's 9 DCN vectors (detection: the 5 vectors and the 4 free
points; segmentation: contour points 0, 5, ..., 35 and the centre) are the sampling points of a point-guided DCN
(gradient_mul 0.1). The **refine** stage and the classifier read landmark features through a
**pyramid DCN**: the same DCN weights on levels l-1, l, l+1 with the sampling positions rescaled to each level
(``ops.dcn.deform_conv(scale=...)``), concatenated -> 1x1 conv + ReLU, plus a 3x3 conv of the level's tower
feature -> GN -> ReLU -> 1x1 conv. Refine components = softplus(raw + init.detach()).

Loss: sigmoid focal (alpha 0.25, gamma 2, / #refine positives) + 1 x cross-IoU(init, / #init positives) +
2 x cross-IoU(refine, / #refine positives), with the task's aggregation (``bbox`` / ``polygon``); init positives by
the point assigner, refine positives and labels by ATSS (k = 9) on the boxes of the detached init landmarks
(``targets.lsnet``), against the task's GT boxes (segmentation: the contour's extent).

Facts derived from Duankaiwen/LSNet code/mmdet/models/dense_heads/lsnet_head.py (``_init_layers``,
``init_weights``, ``forward_single1/2``, ``get_pred_reg``, ``extreme_points2bbox``, ``loss_single``) and
configs/lsnet/lsnet_bbox_r50_fpn_1x_coco.py, as summarised in METHODS.md CARD 4; no code of theirs was copied.
One deliberate difference: the code rescales the pyramid offsets in place on a shared view, so the third level it
reads (l+1) gets the offsets scaled by 2 x 0.5 = 1 instead of 0.5; here every level gets its own size ratio (the
card's and the paper's pyramid DCN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from pointdet.distributed import mean_over_processes
from pointdet.losses.cross_iou import cross_iou_loss, decode_components, softened_targets
from pointdet.models.heads.reppoints import CLASS_PRIOR, FOCAL_ALPHA, FOCAL_GAMMA, GROUPS, conv_tower, dcn_base_offset
from pointdet.ops.dcn import ModulatedDeformConv2d, deform_conv
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.lsnet import build_lsnet_targets
from pointdet.targets.lsnet_tasks import DCN_POINTS, ExtremePoints, LandmarkTask

Tower = Literal["dcn", "conv"]
KERNEL = 3  # the landmark DCN is 3 x 3


class LSNetOutputs(NamedTuple):
    """Raw head outputs, flattened over levels (p3..p7, row-major within a level, as ``ops.priors.level_points``).

    Attributes:
        scores: (B, P, C) class logits.
        components_init: (B, P, V, 4) init cross components ``[top, bottom, left, right]`` in image pixels
            (softplus output x stride) of the task's V vectors (detection: top, left, bottom, right extreme points,
            centre; segmentation: 36 contour points, centre).
        components_refine: (B, P, V, 4) refine components, same convention.
        priors: (B, P, 2) anchor points, xy image pixels (an expanded view).
        strides: (B, P) float stride of each prior.
    """

    scores: Tensor
    components_init: Tensor
    components_refine: Tensor
    priors: Tensor
    strides: Tensor


def landmarks_of(components: Tensor, priors: Tensor) -> Tensor:
    """(B, P, V, 4) pixel components and (B, P, 2) priors -> (B, P, V, 2) xy landmarks in image pixels."""
    return decode_components(components) + priors[:, :, None]


def dcn_tower(in_channels: int, channels: int, depth: int) -> nn.Sequential:
    """``depth`` x (DCNv2 3x3 without bias -> GN(32) -> ReLU), the LSNet towers (``DCNConvModule``)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        dcn = ModulatedDeformConv2d(in_channels if i == 0 else channels, channels, bias=False)
        layers += [dcn, nn.GroupNorm(GROUPS, channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def pyramid_levels(level: int, num_levels: int) -> list[int]:
    """The levels a pyramid DCN reads for ``level``: itself and its neighbours, {0, 1, 2} at the bottom and
    {L-1, L-2, L-3} at the top (the code's order)."""
    if level == 0:
        return [0, 1, 2]
    if level == num_levels - 1:
        return [level, level - 1, level - 2]
    return [level, level - 1, level + 1]


class LandmarkFeatureConv(nn.Module):
    """Landmark features of one level: a (pyramid) point-guided DCNv1 fused with a 3x3 conv of the level, then the
    output 1x1 conv.

    Args:
        channels: D, of the tower maps and of the hidden layers.
        out_channels: outputs of the final 1x1 conv.
        pyramid: read levels l-1, l, l+1 (LSNet) or level l alone (the paper's single-level ablation, Table 3).
        out_bias: initial bias of the output conv.
    """

    def __init__(self, channels: int, out_channels: int, pyramid: bool = True, out_bias: float = 0.0) -> None:
        super().__init__()
        self.pyramid = pyramid
        self.dcn_weight = nn.Parameter(torch.empty(channels, channels, KERNEL, KERNEL))
        self.fuse = nn.Conv2d((3 if pyramid else 1) * channels, channels, 1)
        self.level_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.out = nn.Conv2d(channels, out_channels, 1)
        nn.init.kaiming_uniform_(self.dcn_weight, a=math.sqrt(5))  # mmcv's kaiming_init of the DCN
        for conv in (self.fuse, self.level_conv, self.out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.out.bias, out_bias)

    def forward(self, features: Sequence[Tensor], level: int, offset_yx: Tensor) -> Tensor:
        """Tower maps of every level [(B, D, H_l, W_l)], this level's index and its (B, 18, H, W) DCN offsets ->
        (B, out_channels, H, W)."""
        height, width = features[level].shape[-2:]
        levels = pyramid_levels(level, len(features)) if self.pyramid else [level]
        sampled = []
        for other in levels:
            scale = (features[other].shape[-2] / height, features[other].shape[-1] / width)
            sampled.append(deform_conv(features[other], offset_yx, self.dcn_weight, None, padding=1, scale=scale))
        fused = F.relu(self.fuse(torch.cat(sampled, dim=1)))
        return self.out(F.relu(self.norm(fused + self.level_conv(features[level]))))


class LSNetHead(nn.Module):
    """LSNet head with its loss, for one landmark task.

    Args:
        in_channels: channels of every FPN level.
        num_classes: C.
        task: the landmarks regressed (``targets.lsnet_tasks``; extreme points by default).
        strides: strides of the FPN levels, finest first (3 or more levels for the pyramid DCN).
        tower: ``dcn`` (DCNv2 towers, LSNet) or ``conv`` (plain 3x3 convs, the faster option).
        channels: width of the towers and of the landmark-feature convs (a multiple of 32, GroupNorm 32).
        pyramid: pyramid DCN (levels l-1, l, l+1) or a single-level landmark DCN.
        stacked_convs: layers per tower.
        box_penalty: add the code's CIoU-style box penalty to the cross-IoU loss (METHODS.md App. A #12).
        gradient_mul: share of the DCN-offset gradient that reaches the init vectors.
        init_weight, refine_weight: cross-IoU loss weights (1 and 2).
        point_base_scale: the init point assigner's scale.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        task: LandmarkTask | None = None,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        tower: Tower = "dcn",
        channels: int = 256,
        pyramid: bool = True,
        stacked_convs: int = 3,
        box_penalty: bool = True,
        gradient_mul: float = 0.1,
        init_weight: float = 1.0,
        refine_weight: float = 2.0,
        point_base_scale: int = 4,
    ) -> None:
        super().__init__()
        if tower not in ("dcn", "conv"):
            raise ValueError(f"tower must be 'dcn' or 'conv', got {tower!r}")
        if pyramid and len(strides) < 3:
            raise ValueError(f"the pyramid DCN needs 3 or more levels, got strides {tuple(strides)}")
        self.task = ExtremePoints() if task is None else task
        if len(self.task.dcn_vectors) + self.task.free_points != DCN_POINTS:
            raise ValueError(f"the landmark DCN samples {DCN_POINTS} points, the task gives another number")
        self.num_classes, self.strides = num_classes, tuple(strides)
        self.gradient_mul, self.point_base_scale = gradient_mul, point_base_scale
        self.init_weight, self.refine_weight, self.box_penalty = init_weight, refine_weight, box_penalty
        make_tower = dcn_tower if tower == "dcn" else lambda i, c, d: conv_tower(i, c, d, "gn")
        self.cls_tower = make_tower(in_channels, channels, stacked_convs)
        self.reg_tower = make_tower(in_channels, channels, stacked_convs)
        for layer in (*self.cls_tower, *self.reg_tower):  # normal(0, 0.01); a DCN's offset conv stays at zero
            if isinstance(layer, nn.Conv2d | ModulatedDeformConv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        num_vectors = self.task.num_vectors
        self.init_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.init_out = nn.Conv2d(channels, 4 * num_vectors + 2 * self.task.free_points, 1)
        for conv in (self.init_conv, self.init_out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        prior_bias = -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR)
        self.cls_refine = LandmarkFeatureConv(channels, num_classes, pyramid, out_bias=prior_bias)
        self.reg_refine = LandmarkFeatureConv(channels, 4 * num_vectors, pyramid)
        self.register_buffer("dcn_base_offset", dcn_base_offset(KERNEL).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("dcn_vectors", torch.tensor(self.task.dcn_vectors), persistent=False)

    def init_level(self, reg_features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, H, W) landmark-tower map -> init components (B, 4V, H, W) (softplus, stride units, vector after
        vector, ``[top, bottom, left, right]``) and the (B, 18, H, W) (dy, dx) offsets of the landmark DCN (the
        task's DCN vectors, then its free points)."""
        num_vectors = self.task.num_vectors
        raw = self.init_out(F.relu(self.init_conv(reg_features)))
        components = F.softplus(raw[:, : 4 * num_vectors])
        batch, _, height, width = components.shape
        per_vector = components.view(batch, num_vectors, 4, height, width)[:, self.dcn_vectors]
        per_vector = per_vector.permute(0, 1, 3, 4, 2)  # (B, 9 - free, H, W, 4)
        # (B, 9 - free, 2, H, W) signed (dy, dx); explicit permutes: ONNX's Transpose takes no negative axis
        vectors_yx = decode_components(per_vector).flip(-1).permute(0, 1, 4, 2, 3)
        points_yx = torch.cat([vectors_yx.reshape(batch, -1, height, width), raw[:, 4 * num_vectors :]], dim=1)
        # The DCN sees the landmarks, but passes only gradient_mul of its gradient back to them.
        guided = (1 - self.gradient_mul) * points_yx.detach() + self.gradient_mul * points_yx
        return components, guided - self.dcn_base_offset.to(guided.dtype)

    def forward(self, features: list[Tensor]) -> LSNetOutputs:
        """FPN levels [(B, D, H_l, W_l)], finest first -> ``LSNetOutputs`` (see its fields)."""
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels (strides {self.strides}), got {len(features)}")
        sizes = [tuple(x.shape[-2:]) for x in features]
        priors, strides = level_points(sizes, self.strides, features[0].device)
        cls_features = [self.cls_tower(x) for x in features]
        reg_features = [self.reg_tower(x) for x in features]
        scores, components_init, components_refine = [], [], []
        for level, stride in enumerate(self.strides):
            init, offset_yx = self.init_level(reg_features[level])
            logits = self.cls_refine(cls_features, level, offset_yx)
            refine = F.softplus(self.reg_refine(reg_features, level, offset_yx) + init.detach())
            scores.append(logits.flatten(2).transpose(1, 2))  # (B, H*W, C)
            components_init.append(self._per_prior(init) * stride)
            components_refine.append(self._per_prior(refine) * stride)
        batch = features[0].shape[0]
        per_level = (scores, components_init, components_refine)
        return LSNetOutputs(
            *(torch.cat(parts, dim=1) for parts in per_level), priors.expand(batch, -1, -1), strides.expand(batch, -1)
        )

    @staticmethod
    def _per_prior(components: Tensor) -> Tensor:
        """(B, 4V, H, W) -> (B, H*W, V, 4)."""
        batch, channels, height, width = components.shape
        return components.view(batch, channels // 4, 4, height * width).permute(0, 3, 1, 2)

    def loss(self, outputs: LSNetOutputs, instances: list[Instances]) -> dict[str, Tensor]:
        """``loss_cls`` (focal / #refine positives), ``loss_landmarks_init`` and ``loss_landmarks_refine``
        (weighted cross-IoU, each averaged over its stage's positives), in float32.

        A normaliser is the batch's ``sum over images of max(#positives, 1)`` (mmdetection), averaged over
        processes and clamped at 1.
        """
        scores, priors = outputs.scores.float(), outputs.priors.float()
        components_init, components_refine = outputs.components_init.float(), outputs.components_refine.float()
        boxes_init = self.task.boxes(landmarks_of(components_init, priors))  # (B, P, 4)
        instances, landmarks = zip(*(self.task.ground_truth_landmarks(gt) for gt in instances), strict=True)
        targets = build_lsnet_targets(
            priors[0], outputs.strides[0].float(), boxes_init.detach(), list(instances), list(landmarks),
            self.num_classes, self.point_base_scale,
        )  # fmt: skip
        num_init = mean_over_processes(targets.init_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)
        num_refine = mean_over_processes(targets.refine_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)

        one_hot = F.one_hot(targets.labels, self.num_classes + 1)[..., : self.num_classes].to(scores.dtype)
        loss_cls = sigmoid_focal_loss(scores, one_hot, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum")
        loss_init = self._landmark_loss(
            components_init, priors, targets.init_positive, targets.init_landmarks, targets.init_boxes
        )
        loss_refine = self._landmark_loss(
            components_refine, priors, targets.refine_positive, targets.refine_landmarks, targets.refine_boxes
        )
        return {
            "loss_cls": loss_cls / num_refine,
            "loss_landmarks_init": self.init_weight * loss_init / num_init,
            "loss_landmarks_refine": self.refine_weight * loss_refine / num_refine,
        }

    def _landmark_loss(
        self, components: Tensor, priors: Tensor, positive: Tensor, gt_landmarks: Tensor, gt_boxes: Tensor
    ) -> Tensor:
        """Summed cross-IoU loss of the positives: (B, P, V, 4) components, (B, P, 2) priors, (B, P) positives,
        (B, P, V, 2) GT landmarks and (B, P, 4) GT boxes."""
        pred = components[positive]  # (Q, V, 4)
        anchors = priors[positive][:, None]  # (Q, 1, 2)
        target = softened_targets(gt_landmarks[positive] - anchors)
        aggregation = self.task.aggregation
        if not self.box_penalty:
            return cross_iou_loss(pred, target, aggregation).sum()
        pred_boxes = self.task.boxes(decode_components(pred) + anchors)
        return cross_iou_loss(pred, target, aggregation, pred_boxes, gt_boxes[positive]).sum()
