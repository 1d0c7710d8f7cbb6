"""RepPoints v1 head ("RepPoints: Point Set Representation for Object Detection", Yang et al. ICCV 2019;
METHODS.md CARD 5 §5.0).

Per FPN level (shared weights): a classification tower and a regression tower; from the regression tower, the
**init** point set R = {(x_k, y_k)} as offsets from the prior location ("center_init"); a point-guided DCNv1
(§1.9) whose 9 kernel samples sit at the init points reads both towers, giving the class logits and the **refine**
offsets, R_r = {(x_k + Δx_k, y_k + Δy_k)} (refine = Δ + init.detach()). Pseudo boxes come from a point-set
transform (``decoders.point_sets.points_to_boxes``); the loss is
``L = L_cls + γ1·L_box_init + γ2·L_box_refine`` (sigmoid focal, §1.3; smooth-L1 on box / (4·stride), §1.5, or
GIoU, §1.6). The v1 paper text is not among ../papers, so the numbers above are read from the code below.

Facts derived from mmdetection v2.x ``mmdet/models/dense_heads/reppoints_head.py`` (``RepPointsHead``:
``_init_layers``, ``init_weights``, ``forward_single``, ``offset_to_pts``, ``points2bbox``, ``loss``,
``loss_single``, ``_get_bboxes_single``) and Scalsol/RepPointsV2's copy of it (``exact_minmax``; the ATSS refine
assigner of its configs), as summarised in METHODS.md CARD 5; no code of theirs was copied or run.
Replicated: GN towers without conv bias, normal(0.01) init with the 0.01-prior class bias, DCNs without bias, the
``gradient_mul`` mix, the ``moment_mul`` gradient scaling of the moment transfer, per-image ``max(#pos, 1)``
normalisers, and unbiased std in the moment transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from pointdet.decoders.point_sets import (
    CORNER_POINTS,
    CORNER_TRANSFORMS,
    TRANSFORMS,
    RepPointsOutputs,
    Transform,
    points_to_boxes,
)
from pointdet.distributed import mean_over_processes
from pointdet.losses.box import giou_box_loss, smooth_l1_box_loss
from pointdet.ops.dcn import deform_conv
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.reppoints import RefineAssigner, build_reppoints_targets

CLASS_PRIOR = 0.01  # bias -4.595 (RetinaNet's prior, mmcv's bias_init_with_prob(0.01))
MOMENT_MUL = 0.01  # gradient multiplier of the moment transfer (mmdetection's moment_mul)
GROUPS = 32  # GroupNorm groups of the towers
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
SMOOTH_L1_BETA = 0.11


def conv_tower(in_channels: int, channels: int, depth: int, norm: Literal["gn", "none"]) -> nn.Sequential:
    """``depth`` x (3x3 conv [+ GN(32), conv without bias] + ReLU); convs start at normal(0, 0.01), bias 0."""
    layers: list[nn.Module] = []
    for i in range(depth):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=norm == "none")
        layers += [conv, nn.GroupNorm(GROUPS, channels)] if norm == "gn" else [conv]
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def class_norm(kind: Literal["none", "gn"], channels: int) -> nn.Module:
    """The layer between a class branch's hidden conv and its ReLU: GroupNorm(32) for ``gn``, nothing for ``none``
    (the official heads, whose parameter names it leaves as they are)."""
    if kind not in ("none", "gn"):
        raise ValueError(f"cls_norm must be 'none' or 'gn', got {kind!r}")
    return nn.GroupNorm(GROUPS, channels) if kind == "gn" else nn.Identity()


def dcn_base_offset(kernel: int) -> Tensor:
    """(2 * kernel², ) the regular kernel grid as (dy, dx) pairs, row-major: y repeats, x tiles (METHODS.md §1.9).

    Subtracted from the predicted point offsets so the deformable kernel samples exactly at the points.
    """
    steps = torch.arange(kernel, dtype=torch.float32) - (kernel - 1) // 2
    return torch.stack([steps.repeat_interleave(kernel), steps.repeat(kernel)], dim=1).reshape(-1)


def offsets_to_points(offsets_yx: Tensor, priors: Tensor, stride: int) -> Tensor:
    """(B, 2N, H, W) (dy, dx) offsets in stride units -> (B, H*W, 2N) xy image pixels (``priors``: (H*W, 2))."""
    batch, channels, height, width = offsets_yx.shape
    offsets = offsets_yx.permute(0, 2, 3, 1).reshape(batch, height * width, channels // 2, 2).flip(-1)
    return (offsets * stride + priors[None, :, None, :]).reshape(batch, height * width, channels)


def grid_from_regression(regression: Tensor, boxes: Tensor, kernel: int) -> tuple[Tensor, Tensor]:
    """The box-regression form of the points (mmdetection's ``use_grid_points``, ``gen_grid_from_reg``): a box
    moved and scaled from ``boxes`` and the regular ``kernel x kernel`` grid spanning it.

    Args:
        regression: (B, 4, H, W) ``(dx, dy, log sw, log sh)``: the centre moves by ``(dx w, dy h)``, the size is
            scaled by ``(exp(sw), exp(sh))``.
        boxes: (B | 1, 4, H | 1, W | 1) previous xyxy boxes (widths and heights clamped at 1e-6).
        kernel: points per side.

    Returns:
        (B, 2 kernel², H, W) the grid's (dy, dx) pairs, rows slowest, and (B, 4, H, W) its xyxy box.
    """
    batch, _, height, width = regression.shape
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    new_size = size * regression[:, 2:].exp()
    top_left = centre + size * regression[:, :2] - 0.5 * new_size
    steps = torch.linspace(0, 1, kernel, dtype=regression.dtype, device=regression.device).view(1, kernel, 1, 1)
    xs = top_left[:, 0:1] + new_size[:, 0:1] * steps  # (B, k, H, W): column c
    ys = top_left[:, 1:2] + new_size[:, 1:2] * steps  # row r
    grid_y = ys[:, :, None].expand(-1, -1, kernel, -1, -1)  # (B, r, c, H, W)
    grid_x = xs[:, None].expand(-1, kernel, -1, -1, -1)
    grid = torch.stack([grid_y, grid_x], dim=3).reshape(batch, 2 * kernel * kernel, height, width)
    return grid, torch.cat([top_left, top_left + new_size], dim=1)


class RepPointsHead(nn.Module):
    """RepPoints v1 head with its loss and decoder.

    Args:
        in_channels: channels of every FPN level.
        num_classes: C.
        strides: strides of the FPN levels, finest first.
        channels: width of the towers, the point convs and the DCNs.
        stacked_convs: convs per tower.
        num_points: N points per set, an odd square (the DCN kernel is sqrt(N) x sqrt(N)).
        norm: ``gn`` (GroupNorm(32), channels divisible by 32) or ``none`` in the towers.
        transform: point-set-to-box transform (``decoders.point_sets.points_to_boxes``).
        box_loss: ``smooth_l1`` (beta 0.11 on box / (point_base_scale * stride)) or ``giou``.
        refine_assigner: ``max_iou`` (v1) or ``atss`` (RepPointsV2's repo).
        gradient_mul: share of the DCN-offset gradient that reaches the init points.
        point_base_scale: the point assigner's scale and the smooth-L1 normaliser (x stride).
        init_weight, refine_weight: box loss weights; None gives 0.5 / 1.0 (smooth_l1) or 1.0 / 2.0 (giou).
        cls_weight: weight of the focal class loss (1.0, the official).
        guide_channels: extra input channels of both point-guided DCNs, concatenated to the towers' features by the
            caller of ``point_stage`` (RepPoints v2's 6 verification channels); 0 for v1.
        cls_norm: ``none`` (the official head: the class DCN feeds its ReLU directly) or ``gn`` (GroupNorm(32) between
            the class DCN and its ReLU, as LSNet's class branch has; a pointdet departure that keeps the classes
            apart on small multi-class sets, docs/real_photos.md). ``none`` keeps the official parameter names.
        corner_start: strides by which the init points 0 and 1 start up-left and down-right of their location, the
            bias of the init output (0: the official zero bias). With the corner transforms (``exact_minmax``,
            ``corner_minmax``) the box is the extent of points 0 and 1, which point takes which corner is free, and
            the init and refine stages each pick it at random early in training; where they pick differently, the
            refine stage has to move its points across the whole box and its boxes end no better than the init ones
            (docs/real_photos.md). A start of 0.5 gives both stages the same corners from the first step.
        cls_branch: ``points`` (the official head: the class DCN samples the class tower at the init points, then
            a ReLU and a 1x1 conv) or ``dense`` (a pointdet departure: the class tower one conv deeper, GN and ReLU
            like the others, read by a 3x3 conv at the location, as FCOS's and RetinaNet's class heads; it reads
            neither the points nor RepPoints v2's verification maps). On small multi-class sets ``points`` calls
            the rare classes by the frequent one and ``dense`` keeps them apart (docs/real_photos.md). ``cls_norm``
            applies to ``points`` only; ``points`` keeps the official parameter names.
        use_grid_points: regress boxes instead of points (mmdetection's ``use_grid_points``): the init branch moves
            and scales the box ±``point_base_scale / 2`` strides around the location, the refine branch the init
            box (detached), and the points are the regular grid on each box (``grid_from_regression``); pair it with
            the ``minmax`` transform, whose box is then the regressed one.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        channels: int = 256,
        stacked_convs: int = 3,
        num_points: int = 9,
        norm: Literal["gn", "none"] = "gn",
        transform: Transform = "moment",
        box_loss: Literal["smooth_l1", "giou"] = "smooth_l1",
        refine_assigner: RefineAssigner = "max_iou",
        gradient_mul: float = 0.1,
        point_base_scale: int = 4,
        init_weight: float | None = None,
        refine_weight: float | None = None,
        cls_weight: float = 1.0,
        guide_channels: int = 0,
        use_grid_points: bool = False,
        cls_norm: Literal["none", "gn"] = "none",
        corner_start: float = 0.0,
        cls_branch: Literal["points", "dense"] = "points",
    ) -> None:
        super().__init__()
        kernel = math.isqrt(num_points)
        if kernel * kernel != num_points or kernel % 2 == 0:
            raise ValueError(f"num_points must be an odd square (the DCN kernel), got {num_points}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if corner_start and (transform not in CORNER_TRANSFORMS or use_grid_points):
            raise ValueError(f"corner_start places the corner points of {CORNER_TRANSFORMS}, not {transform!r} ones")
        if cls_branch not in ("points", "dense"):
            raise ValueError(f"cls_branch must be 'points' or 'dense', got {cls_branch!r}")
        if cls_branch == "dense" and cls_norm != "none":
            raise ValueError(f"cls_norm={cls_norm!r} normalises the points class branch; cls_branch='dense' has none")
        if box_loss not in ("smooth_l1", "giou"):
            raise ValueError(f"box_loss must be 'smooth_l1' or 'giou', got {box_loss!r}")
        self.num_classes, self.strides, self.num_points = num_classes, tuple(strides), num_points
        self.transform, self.box_loss, self.refine_assigner = transform, box_loss, refine_assigner
        self.gradient_mul, self.point_base_scale = gradient_mul, point_base_scale
        default_weights = (0.5, 1.0) if box_loss == "smooth_l1" else (1.0, 2.0)
        self.init_weight = default_weights[0] if init_weight is None else init_weight
        self.refine_weight = default_weights[1] if refine_weight is None else refine_weight
        self.cls_weight = cls_weight

        self.cls_branch = cls_branch
        class_depth = stacked_convs + (cls_branch == "dense")
        self.cls_tower = conv_tower(in_channels, channels, class_depth, norm)
        self.reg_tower = conv_tower(in_channels, channels, stacked_convs, norm)
        self.init_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.kernel, self.use_grid_points, self.corner_start = kernel, use_grid_points, corner_start
        outputs = 4 if use_grid_points else 2 * num_points
        self.init_out = nn.Conv2d(channels, outputs, 1)
        if cls_branch == "points":
            self.cls_dcn_weight = nn.Parameter(torch.empty(channels, channels + guide_channels, kernel, kernel))
            self.cls_dcn_norm = class_norm(cls_norm, channels)
            self.cls_out = nn.Conv2d(channels, num_classes, 1)
        else:
            self.cls_out = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.refine_dcn_weight = nn.Parameter(torch.empty(channels, channels + guide_channels, kernel, kernel))
        self.refine_out = nn.Conv2d(channels, outputs, 1)
        if transform == "moment":
            self.moment_transfer = nn.Parameter(torch.zeros(2))
        self.register_buffer("dcn_base_offset", dcn_base_offset(kernel).view(1, -1, 1, 1), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmdetection's ``init_weights``: every conv and DCN normal(0, 0.01), biases 0, class bias at prior 0.01."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.cls_branch == "points":
            nn.init.normal_(self.cls_dcn_weight, std=0.01)
        nn.init.normal_(self.refine_dcn_weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR))
        with torch.no_grad():  # (dy, dx) of point 0, then of point 1
            self.init_out.bias[: 2 * CORNER_POINTS] = torch.tensor([-1.0, -1.0, 1.0, 1.0]) * self.corner_start

    def forward_level(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One level (B, D, H, W) -> class logits (B, C, H, W), init and refine (dy, dx) offsets (B, 2N, H, W)
        in stride units from the prior."""
        return self.point_stage(self.cls_tower(x), self.reg_tower(x))

    def point_stage(
        self, cls_features: Tensor, reg_features: Tensor, guide: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Init points from ``reg_features``, then the point-guided DCNs -> ``forward_level``'s three maps.

        Args:
            cls_features, reg_features: (B, D, H, W) tower outputs.
            guide: (B, ``guide_channels``, H, W) maps concatenated to both DCN inputs (not to the init branch), or
                None when ``guide_channels`` is 0; the ``dense`` class branch does not read it.
        """
        init_yx = self.init_out(F.relu(self.init_conv(reg_features)))
        if self.use_grid_points:
            half = self.point_base_scale / 2
            prior_box = init_yx.new_tensor([-half, -half, half, half]).view(1, 4, 1, 1)
            init_yx, init_box = grid_from_regression(init_yx, prior_box, self.kernel)
        # The DCN sees the init points, but passes only gradient_mul of its gradient back to them.
        guided_yx = (1 - self.gradient_mul) * init_yx.detach() + self.gradient_mul * init_yx
        offset_yx = guided_yx - self.dcn_base_offset.to(guided_yx.dtype)
        if guide is not None:
            reg_features = torch.cat([reg_features, guide], 1)
        padding = (self.refine_dcn_weight.shape[-1] - 1) // 2
        if self.cls_branch == "points":
            cls_input = cls_features if guide is None else torch.cat([cls_features, guide], 1)
            cls_hidden = deform_conv(cls_input, offset_yx, self.cls_dcn_weight, None, padding=padding)
            logits = self.cls_out(F.relu(self.cls_dcn_norm(cls_hidden)))
        else:
            logits = self.cls_out(cls_features)
        reg_hidden = F.relu(deform_conv(reg_features, offset_yx, self.refine_dcn_weight, None, padding=padding))
        refine = self.refine_out(reg_hidden)
        if self.use_grid_points:
            return logits, init_yx, grid_from_regression(refine, init_box.detach(), self.kernel)[0]
        return logits, init_yx, refine + init_yx.detach()

    def forward(self, features: list[Tensor]) -> RepPointsOutputs:
        """FPN levels [(B, D, H_l, W_l)], finest first -> ``RepPointsOutputs`` (see its fields)."""
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels (strides {self.strides}), got {len(features)}")
        return self.collect(features, [self.forward_level(x) for x in features])

    def collect(self, features: list[Tensor], levels: list[tuple[Tensor, Tensor, Tensor]]) -> RepPointsOutputs:
        """``RepPointsOutputs`` of the per-level ``forward_level`` maps of ``features``."""
        sizes = [tuple(x.shape[-2:]) for x in features]
        priors, strides = level_points(sizes, self.strides, features[0].device)
        scores, points_init, points_refine, start = [], [], [], 0
        for (logits, init_yx, refine_yx), stride, (height, width) in zip(levels, self.strides, sizes, strict=True):
            level_priors = priors[start : start + height * width]
            start += height * width
            scores.append(logits.flatten(2).transpose(1, 2))  # (B, H*W, C)
            points_init.append(offsets_to_points(init_yx, level_priors, stride))
            points_refine.append(offsets_to_points(refine_yx, level_priors, stride))
        batch = features[0].shape[0]
        if self.transform == "moment":
            transfer = self.moment_transfer * MOMENT_MUL + self.moment_transfer.detach() * (1 - MOMENT_MUL)
        else:
            transfer = priors.new_zeros(2)
        return RepPointsOutputs(
            torch.cat(scores, dim=1),
            torch.cat(points_init, dim=1),
            torch.cat(points_refine, dim=1),
            priors.expand(batch, -1, -1),
            strides.expand(batch, -1),
            transfer.expand(batch, -1),
        )

    def boxes(self, points: Tensor, moment_transfer: Tensor) -> Tensor:
        """(B, P, 2N) xy points and (B, 2) transfer -> (B, P, 4) xyxy pseudo boxes in the same units."""
        batch, num_priors, _ = points.shape
        return points_to_boxes(points.view(batch, num_priors, -1, 2), self.transform, moment_transfer[:, None])

    def loss(self, outputs: RepPointsOutputs, instances: list[Instances]) -> dict[str, Tensor]:
        """``loss_cls`` (focal / #refine positives), ``loss_box_init`` and ``loss_box_refine`` (weighted, each
        averaged over its stage's positives), in float32 whatever the autocast dtype of ``outputs``.

        A normaliser is the batch's ``sum over images of max(#positives, 1)`` (mmdetection), averaged over
        processes and clamped at 1.
        """
        scores, transfer = outputs.scores.float(), outputs.moment_transfer.float()
        boxes_init = self.boxes(outputs.points_init.float(), transfer)  # (B, P, 4)
        boxes_refine = self.boxes(outputs.points_refine.float(), transfer)
        strides = outputs.strides[0].float()
        targets = build_reppoints_targets(
            outputs.priors[0].float(),
            strides,
            boxes_init.detach(),
            instances,
            self.num_classes,
            self.refine_assigner,
            self.point_base_scale,
        )
        num_init = mean_over_processes(targets.init_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)
        num_refine = mean_over_processes(targets.refine_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)

        one_hot = F.one_hot(targets.labels, self.num_classes + 1)[..., : self.num_classes].to(scores.dtype)
        focal = sigmoid_focal_loss(scores, one_hot, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="none")
        loss_cls = torch.where(targets.label_valid[..., None], focal, 0.0).sum() / num_refine

        if self.box_loss == "smooth_l1":
            scale = (self.point_base_scale * strides).expand_as(targets.init_positive)
            loss_init = smooth_l1_box_loss(
                boxes_init, targets.init_boxes, targets.init_positive, scale, num_init, SMOOTH_L1_BETA
            )
            loss_refine = smooth_l1_box_loss(
                boxes_refine, targets.refine_boxes, targets.refine_positive, scale, num_refine, SMOOTH_L1_BETA
            )
        else:
            loss_init = giou_box_loss(boxes_init, targets.init_boxes, targets.init_positive, num_init)
            loss_refine = giou_box_loss(boxes_refine, targets.refine_boxes, targets.refine_positive, num_refine)
        return {
            "loss_cls": self.cls_weight * loss_cls,
            "loss_box_init": self.init_weight * loss_init,
            "loss_box_refine": self.refine_weight * loss_refine,
        }
