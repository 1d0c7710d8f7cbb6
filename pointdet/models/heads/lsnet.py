"""LSNet head ("Location-Sensitive Visual Recognition with Cross-IOU Loss", Duan et al. 2021, §3.2-3.4, eq. 2;
METHODS.md CARD 4) for every landmark task (``targets.lsnet_tasks``: extreme points for detection, 36 contour points
for instance segmentation, 17 keypoints for pose); the task is data the head reads, not a branch.

Per FPN level (shared weights): a classification tower and a landmark (regression) tower, 3 x [DCNv2 3x3 or
conv 3x3, GN(32), ReLU]. From the landmark tower the **init** stage regresses, from the anchor point (the prior
location), the task's V vectors (detection: top, left, bottom, right extreme points + box centre; segmentation: 36
contour points + the polygon-box centre) as 4 softplus "cross" components each (``losses.cross_iou``), plus the
task's free (dy, dx) points (4 for detection). The task's 9 DCN vectors (detection: the 5 vectors and the 4 free
points; segmentation: contour points 0, 5, ..., 35 and the centre) are the sampling points of a point-guided DCN
(gradient_mul 0.1). The **refine** stage and the classifier read landmark features through a
**pyramid DCN**: the same DCN weights on levels l-1, l, l+1 with the sampling positions rescaled to each level
(``ops.dcn.deform_conv(scale=...)``), concatenated -> 1x1 conv + ReLU, plus a 3x3 conv of the level's tower
feature -> GN -> ReLU -> 1x1 conv. Refine components = softplus(raw + init.detach()). The landmark features have
two ablation options (paper Table 3): ``single`` (the DCN on level l alone) and ``none`` (no DCN: the refine stage and
the classifier read the 3x3 conv of the level's tower feature only).
The towers, the landmark-feature conv, the init stage and the box branch live in ``heads.lsnet_layers``.

A task with a box branch (pose obj-box: ``LandmarkTask.box_branch_vectors``) gets a second regression branch of the
same make (``BoxBranch``: its own tower, init convs regressing the box's 4 border centres + centre + 4 free DCN points,
its own landmark-feature conv); its vectors follow the task's main ones in the outputs. The classifier reads the main
(keypoint) branch's DCN offsets, as the code's ``pose_bbox`` head.

**LSNet-CPV** (detection only, ``corner_verification`` / ``foreground_verification``; METHODS.md CARD 4 (d) 9):
RepPoints v2's verification (``heads.reppoints_v2``: ``verify``, ``VerificationLoss``) on LSNet. Per level a shared
layer of the tower's make (DCNv2 or conv 3x3, GN, ReLU) reads the landmark tower; the foreground branch's embedding
is added to both towers (the init stage reads the landmark tower with it), the corner branch reads shared +
embedding, and its 6 maps (``hm_score``, ``hm_offset``) are concatenated to both towers wherever the classifier and
the refine stage read them: the pyramid DCN on every level it samples and the 3x3 conv of the level (D + 6 input
channels). Extra losses: 0.25 x corner heatmap + 1.0 x corner offset + 0.1 x foreground, as RepPoints v2. The
corner maps also refine the P4-P7 boxes at test time (``decoders.lsnet``'s joint inference). Facts derived from
Duankaiwen/LSNet code/mmdet/models/dense_heads/lscpvnet_head.py (``LSCPVHead``: ``_init_layers``,
``forward_single1/2``, ``loss``, ``_get_bboxes_single``) and configs/lsnet/lsnet_bbox_cpv_*_mstrain_2x_coco.py.

Loss: sigmoid focal (alpha 0.25, gamma 2, / #refine positives) + 1 x cross-IoU(init, / #init positives) +
2 x cross-IoU(refine, / #refine positives), the task's ``landmark_loss`` (``bbox`` / ``polygon`` / ``keypoint``
aggregation; pose obj-box adds 0.1 x its box branch's ``bbox`` loss); init positives by
the point assigner, refine positives and labels by ATSS (k = 9) on the boxes of the detached init landmarks
(``targets.lsnet``), against the task's GT boxes (segmentation: the contour's extent).

Facts derived from Duankaiwen/LSNet code/mmdet/models/dense_heads/lsnet_head.py (``_init_layers``,
``init_weights``, ``forward_single1/2``, ``get_pred_reg``, ``extreme_points2bbox``, ``loss_single``) and
configs/lsnet/lsnet_bbox_r50_fpn_1x_coco.py, as summarised in METHODS.md CARD 4; no code of theirs was copied.
One deliberate difference, an option: the code rescales the pyramid offsets in place on a shared view, so the third
level it reads gets the offsets scaled by the product of the two other levels' ratios (a middle level's l+1: 2 x 0.5
= 1 instead of 0.5); by default every level gets its own size ratio (``pyramid_scaling="paper"``, the card's and the
paper's pyramid DCN), and ``pyramid_scaling="code"`` computes what the official network computes (the models
``pointdet convert --from lsnet`` writes use it, so that the official weights see the features they were trained on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from pointdet.distributed import mean_over_processes
from pointdet.losses.box import giou_box_loss, smooth_l1_box_loss
from pointdet.losses.cross_iou import decode_components
from pointdet.models.heads.lsnet_layers import (
    KERNEL,
    BoxBranch,
    LandmarkFeatureConv,
    LandmarkFeatures,
    PyramidScaling,
    dcn_tower,
    init_convs,
    init_landmarks,
    normal_init_towers,
)
from pointdet.models.heads.reppoints import (
    CLASS_PRIOR,
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    SMOOTH_L1_BETA,
    conv_tower,
    dcn_base_offset,
)
from pointdet.models.heads.reppoints_v2 import (
    VERIFICATION_CHANNELS,
    VerificationLoss,
    flatten_levels,
    verification_branches,
    verify,
)
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.lsnet import build_lsnet_targets
from pointdet.targets.lsnet_tasks import (
    BOX_BRANCH_VECTORS,
    DCN_POINTS,
    ExtremePoints,
    LandmarkTask,
)

Tower = Literal["dcn", "conv"]
InitLoss = Literal["cross_iou", "smooth_l1", "giou"]
INIT_LOSSES: tuple[str, ...] = ("cross_iou", "smooth_l1", "giou")


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


LSNetCPVOutputs = NamedTuple(  # noqa: UP014 - the fields extend LSNetOutputs' without restating them
    "LSNetCPVOutputs",
    [
        *((name, Tensor) for name in LSNetOutputs._fields),
        ("corner_scores", Tensor),
        ("corner_offsets", Tensor),
        ("foreground", Tensor),
    ],
)
LSNetCPVOutputs.__doc__ = """LSNet-CPV's outputs: ``LSNetOutputs``' fields (same meaning) followed by RepPoints v2's
verification maps, flattened over levels like ``scores`` (0 channels for a branch switched off).

Attributes:
    corner_scores: (B, P, 2) top-left and bottom-right corner logits (``hm_score``).
    corner_offsets: (B, P, 4) ``(dx, dy)`` of the top-left then the bottom-right corner from the location, in
        stride units (``hm_offset``).
    foreground: (B, P, C) within-box foreground logits (``sem_score``).
"""


def landmarks_of(components: Tensor, priors: Tensor) -> Tensor:
    """(B, P, V, 4) pixel components and (B, P, 2) priors -> (B, P, V, 2) xy landmarks in image pixels."""
    return decode_components(components) + priors[:, :, None]


def box_from_sides(components: Tensor, priors: Tensor) -> Tensor:
    """The "rect" reading of the extreme-point vectors (top, left, bottom, right first): (B, P, V, 4) pixel components
    and (B, P, 2) priors -> (B, P, 4) xyxy ``(x - left, y - top, x + right, y + bottom)`` from the outward component of
    each side's vector, FCOS-style distances; always a valid box around the prior, so the GIoU ablation (paper
    Table 2's "GIoU (rect)") has a gradient from the start, where the signed decode may invert an untrained box."""
    x, y = priors.unbind(-1)
    top, left, bottom, right = (
        components[..., 0, 0],
        components[..., 1, 2],
        components[..., 2, 1],
        components[..., 3, 3],
    )
    return torch.stack([x - left, y - top, x + right, y + bottom], dim=-1)


class LSNetHead(nn.Module):
    """LSNet head with its loss, for one landmark task.

    Args:
        in_channels: channels of every FPN level.
        num_classes: C.
        task: the landmarks regressed (``targets.lsnet_tasks``; extreme points by default).
        strides: strides of the FPN levels, finest first (3 or more levels for the pyramid DCN).
        tower: ``dcn`` (DCNv2 towers, LSNet) or ``conv`` (plain 3x3 convs, the faster option).
        channels: width of the towers and of the landmark-feature convs (a multiple of 32, GroupNorm 32).
        landmark_features: ``pyramid`` DCN (levels l-1, l, l+1), ``single``-level landmark DCN or ``none``.
        pyramid_scaling: ``paper`` or ``code`` rescaling of the pyramid DCN's offsets (module docstring).
        stacked_convs: layers per tower.
        box_penalty: add the code's CIoU-style box penalty to the cross-IoU loss (METHODS.md App. A #12).
        gradient_mul: share of the DCN-offset gradient that reaches the init vectors.
        init_weight, refine_weight: cross-IoU loss weights (1 and 2).
        init_loss: the init (first) stage's loss: ``cross_iou`` on the task's landmarks (LSNet), or, for the extreme
            points only (the paper's Table 2 ablation), ``smooth_l1`` on the 4 extreme points (beta 0.11 on
            offsets / (4 x stride), as RepPoints' box loss) or ``giou`` on a box read as 4 side distances
            (``box_from_sides``, the paper's "rect").
        point_base_scale: the init point assigner's scale.
        corner_verification, foreground_verification: LSNet-CPV (extreme points only): RepPoints v2's corner and
            within-box foreground verification branches on a shared conv of the landmark tower (module docstring);
            both off: plain LSNet, its parameters and ``LSNetOutputs`` as they are.
        heatmap_weight, corner_offset_weight, foreground_weight: the verification loss weights (0.25, 1.0, 0.1).
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
        landmark_features: LandmarkFeatures = "pyramid",
        pyramid_scaling: PyramidScaling = "paper",
        stacked_convs: int = 3,
        box_penalty: bool = True,
        gradient_mul: float = 0.1,
        init_weight: float = 1.0,
        refine_weight: float = 2.0,
        init_loss: InitLoss = "cross_iou",
        point_base_scale: int = 4,
        corner_verification: bool = False,
        foreground_verification: bool = False,
        heatmap_weight: float = 0.25,
        corner_offset_weight: float = 1.0,
        foreground_weight: float = 0.1,
    ) -> None:
        super().__init__()
        if init_loss not in INIT_LOSSES:
            raise ValueError(f"init_loss must be one of {INIT_LOSSES}, got {init_loss!r}")
        if tower not in ("dcn", "conv"):
            raise ValueError(f"tower must be 'dcn' or 'conv', got {tower!r}")
        if landmark_features == "pyramid" and len(strides) < 3:
            raise ValueError(f"the pyramid DCN needs 3 or more levels, got strides {tuple(strides)}")
        self.task = ExtremePoints() if task is None else task
        if init_loss != "cross_iou" and not isinstance(self.task, ExtremePoints):
            raise ValueError(f"init_loss={init_loss} is an extreme-point ablation; the task is {self.task}")
        self.verified = corner_verification or foreground_verification
        if self.verified and not isinstance(self.task, ExtremePoints):
            raise ValueError(f"the CPV verification branches are LSNet's detection variant; the task is {self.task}")
        self.init_loss = init_loss
        if len(self.task.dcn_vectors) + self.task.free_points != DCN_POINTS:
            raise ValueError(f"the landmark DCN samples {DCN_POINTS} points, the task gives another number")
        self.num_classes, self.strides = num_classes, tuple(strides)
        self.gradient_mul, self.point_base_scale = gradient_mul, point_base_scale
        self.init_weight, self.refine_weight, self.box_penalty = init_weight, refine_weight, box_penalty
        make_tower = dcn_tower if tower == "dcn" else lambda i, c, d: conv_tower(i, c, d, "gn")
        self.cls_tower = make_tower(in_channels, channels, stacked_convs)
        self.reg_tower = make_tower(in_channels, channels, stacked_convs)
        towers = [self.cls_tower, self.reg_tower]
        self.box_branch = None
        if self.task.box_branch_vectors:
            if self.task.box_branch_vectors != BOX_BRANCH_VECTORS:
                raise ValueError(f"a box branch regresses {BOX_BRANCH_VECTORS} vectors")
            towers.append(make_tower(in_channels, channels, stacked_convs))
        normal_init_towers(towers)
        self.num_main_vectors = self.task.num_vectors - self.task.box_branch_vectors
        self.init_conv, self.init_out = init_convs(channels, 4 * self.num_main_vectors + 2 * self.task.free_points)
        prior_bias = -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR)
        fused = channels + (VERIFICATION_CHANNELS if corner_verification else 0)  # the corner maps join the towers
        refine = partial(
            LandmarkFeatureConv, mode=landmark_features, in_channels=fused, pyramid_scaling=pyramid_scaling
        )
        self.cls_refine = refine(channels, num_classes, out_bias=prior_bias)
        self.reg_refine = refine(channels, 4 * self.num_main_vectors)
        if len(towers) == 3:
            self.box_branch = BoxBranch(towers[2], channels, landmark_features, gradient_mul, pyramid_scaling)
        self.register_buffer("dcn_base_offset", dcn_base_offset(KERNEL).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("dcn_vectors", torch.tensor(self.task.dcn_vectors), persistent=False)
        self.shared, self.foreground, self.corners = verification_branches(
            lambda: normal_init_towers([make_tower(channels, channels, 1)]), channels, num_classes, "gn",
            corner_verification, foreground_verification,
        )  # fmt: skip
        self.verification_loss = VerificationLoss(
            num_classes, corner_verification, foreground_verification, heatmap_weight, corner_offset_weight,
            foreground_weight,
        )  # fmt: skip

    def init_level(self, reg_features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, H, W) landmark-tower map -> ``init_landmarks`` of the task's main vectors: init components
        (B, 4V, H, W) and the (B, 18, H, W) offsets of the landmark DCN (the task's DCN vectors, its free points)."""
        raw = self.init_out(F.relu(self.init_conv(reg_features)))
        return init_landmarks(raw, self.num_main_vectors, self.dcn_vectors, self.gradient_mul, self.dcn_base_offset)

    def forward(self, features: list[Tensor]) -> LSNetOutputs:
        """FPN levels [(B, D, H_l, W_l)], finest first -> ``LSNetOutputs`` (see its fields)."""
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels (strides {self.strides}), got {len(features)}")
        sizes = [tuple(x.shape[-2:]) for x in features]
        priors, strides = level_points(sizes, self.strides, features[0].device)
        cls_features = [self.cls_tower(x) for x in features]
        reg_features = [self.reg_tower(x) for x in features]
        box_features = [self.box_branch.tower(x) for x in features] if self.box_branch is not None else []
        init_features, verification = reg_features, []
        if self.verified:  # LSNet-CPV: fuse the verification maps into both towers (module docstring)
            verification = [verify(x, self.shared, self.foreground, self.corners) for x in reg_features]
            init_features = [maps.embed(x) for maps, x in zip(verification, reg_features, strict=True)]
            cls_features = [maps.fuse(x) for maps, x in zip(verification, cls_features, strict=True)]
            reg_features = [maps.fuse(x) for maps, x in zip(verification, reg_features, strict=True)]
        scores, components_init, components_refine = [], [], []
        for level, stride in enumerate(self.strides):
            init, offset_yx = self.init_level(init_features[level])
            logits = self.cls_refine(cls_features, level, offset_yx)
            refine = F.softplus(self.reg_refine(reg_features, level, offset_yx) + init.detach())
            if self.box_branch is not None:  # its vectors follow the main ones
                box_init, box_refine = self.box_branch(box_features, level)
                init, refine = torch.cat([init, box_init], dim=1), torch.cat([refine, box_refine], dim=1)
            scores.append(logits.flatten(2).transpose(1, 2))  # (B, H*W, C)
            components_init.append(self._per_prior(init) * stride)
            components_refine.append(self._per_prior(refine) * stride)
        batch = features[0].shape[0]
        per_level = (scores, components_init, components_refine)
        outputs = LSNetOutputs(
            *(torch.cat(parts, dim=1) for parts in per_level), priors.expand(batch, -1, -1), strides.expand(batch, -1)
        )
        if not self.verified:
            return outputs
        maps = (flatten_levels([level[i] for level in verification]) for i in (1, 2, 3))
        return LSNetCPVOutputs(*outputs, *maps)

    @staticmethod
    def _per_prior(components: Tensor) -> Tensor:
        """(B, 4V, H, W) -> (B, H*W, V, 4)."""
        batch, channels, height, width = components.shape
        return components.view(batch, channels // 4, 4, height * width).permute(0, 3, 1, 2)

    def loss(self, outputs: LSNetOutputs | LSNetCPVOutputs, instances: list[Instances]) -> dict[str, Tensor]:
        """``loss_cls`` (focal / #refine positives), ``loss_landmarks_init`` and ``loss_landmarks_refine``
        (weighted cross-IoU, each averaged over its stage's positives), LSNet-CPV's ``VerificationLoss`` terms, in
        float32.

        A normaliser is the batch's ``sum over images of max(#positives, 1)`` (mmdetection), averaged over
        processes and clamped at 1.
        """
        scores, priors = outputs.scores.float(), outputs.priors.float()
        components_init, components_refine = outputs.components_init.float(), outputs.components_refine.float()
        landmarks_init = landmarks_of(components_init, priors)  # (B, P, V, 2)
        boxes_init = self.task.boxes(landmarks_init)  # (B, P, 4)
        instances, landmarks = zip(*(self.task.ground_truth_landmarks(gt) for gt in instances), strict=True)
        targets = build_lsnet_targets(
            priors[0], outputs.strides[0].float(), boxes_init.detach(), list(instances), list(landmarks),
            self.num_classes, self.point_base_scale,
        )  # fmt: skip
        num_init = mean_over_processes(targets.init_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)
        num_refine = mean_over_processes(targets.refine_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)

        one_hot = F.one_hot(targets.labels, self.num_classes + 1)[..., : self.num_classes].to(scores.dtype)
        loss_cls = sigmoid_focal_loss(scores, one_hot, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum")
        if self.init_loss == "cross_iou":
            loss_init = self._landmark_loss(
                components_init, priors, targets.init_positive, targets.init_landmarks, targets.init_boxes
            )
        elif self.init_loss == "giou":
            sides = box_from_sides(components_init, priors)
            loss_init = giou_box_loss(sides, targets.init_boxes, targets.init_positive, 1.0)
        else:  # smooth-L1 on the 4 extreme points / (4 x stride), RepPoints' beta
            scale = self.point_base_scale * outputs.strides.float()
            extremes, gt_extremes = landmarks_init[:, :, :4].flatten(2), targets.init_landmarks[:, :, :4].flatten(2)
            loss_init = smooth_l1_box_loss(extremes, gt_extremes, targets.init_positive, scale, 1.0, SMOOTH_L1_BETA)
        loss_refine = self._landmark_loss(
            components_refine, priors, targets.refine_positive, targets.refine_landmarks, targets.refine_boxes
        )
        return {
            "loss_cls": loss_cls / num_refine,
            "loss_landmarks_init": self.init_weight * loss_init / num_init,
            "loss_landmarks_refine": self.refine_weight * loss_refine / num_refine,
            **self.verification_loss(outputs, list(instances)),
        }

    def _landmark_loss(
        self, components: Tensor, priors: Tensor, positive: Tensor, gt_landmarks: Tensor, gt_boxes: Tensor
    ) -> Tensor:
        """Summed ``task.landmark_loss`` of the positives: (B, P, V, 4) components, (B, P, 2) priors, (B, P)
        positives, (B, P, V, D) GT landmarks and (B, P, 4) GT boxes."""
        anchors = priors[positive][:, None]  # (Q, 1, 2)
        return self.task.landmark_loss(
            components[positive], gt_landmarks[positive], anchors, gt_boxes[positive], self.box_penalty
        ).sum()
