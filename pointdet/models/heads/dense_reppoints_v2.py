"""Dense RepPoints v2 head (METHODS.md CARD 5 §5.2; RepPoints v2 supplementary §C): objects as dense point sets
(729 points in 9 groups by default) with a mask score per point, verified by a class-agnostic **contour** heatmap
(+ offsets) and the semantic **foreground** map, both fused into the point stages as in RepPoints v2.

Dataflow per FPN level (shared weights), from Scalsol/RepPointsV2 ``dense_reppoints_v2_head.py``
(``_init_layers``, ``init_weights``, ``forward``, ``forward_pts_head_single``, ``forward_mask_head``) as
summarised here, no code copied::

    cls_f = cls_tower(x);  pts_f = reg_tower(x);  shared = ConvNormReLU3x3(pts_f)
    sem_score, sem_f = ForegroundVerification(shared)                    # RepPoints v2's module, C channels
    cls_f += sem_f;  pts_f += sem_f;  cont_f = shared + sem_f
    ct_score = Conv3x3(cont_f -> 1);  ct_offset = Conv3x3(cont_f -> 2)   # contour verification
    v = cat(ct_score, ct_offset)                                          # 3 raw channels, fused below
    init = Conv1x1(ReLU(Conv3x3(pts_f))) + grid                           # N (dy, dx), stride units
    guided = 0.9 init.detach() + 0.1 init                                 # gradient_mul
    cls_out = Conv1x1(ReLU(Conv1x1(cat_g sample(cat(cls_f, v), first point of group g))))   # group pooling
    refine = sample_k(Conv1x1(ReLU(Conv3x3(cat(pts_f, v))))[k], guided point k) + guided  # per-point offset field
    mask: 7 x ConvNormReLU3x3(x) + sem_f, every level brought to P3's size, + P3's, Conv3x3 (fuse);
          Conv1x1(ReLU(Conv3x3 -> G = 121 position-sensitive score maps)); each point reads the map of the cell it
          falls in on a sqrt(G) x sqrt(G) grid over its set's box, at its position (training: the guided init
          points; test: the refine points; detached). The official code adds sem_f to P3's feature only and reads
          a point at its level-cell position normalised by its level's size: ``mask_fusion="finest"``,
          ``score_sampling="level"``, the options of converted models (``PointScoreBranch``)

``grid`` is the regular sqrt(N) x sqrt(N) grid scaled to ±``point_base_scale / 2`` strides, its points row by row
(``point_grid="row_major"``; the official head's order is its transpose, ``column_major``). ``sample`` is bilinear
with border padding (``grid_sample``, corner-aligned). Boxes are ``minmax`` of the points. Without
``contour_verification`` (the ablation) there is no contour branch, no contour loss and nothing is fused.

Loss (card §5.2, the code's weights)::

    L = L_cls + 0.5 L_box,init + 1.0 L_box,refine + 0.5 L_chamfer,init + 1.0 L_chamfer,refine
        + 1.0 L_mask_score + 1.0 L_contour_heat + 1.0 L_contour_offset + 1.0 L_fg

- cls: sigmoid focal (α 0.25, γ 2) / #refine positives; boxes: smooth-L1 (β 0.11) of box / (4 stride), or GIoU
  (1 / 2); init positives from the point assigner, refine positives from ATSS on the init boxes (RepPoints' targets).
- Chamfer: ``chamfer_distance`` of the points and the GT contour points (``targets.dense_reppoints_v2``), both
  / (4 stride), summed over the stage's positives / their number.
- mask score: BCE of each refine positive's point scores against whether its init point lies inside the GT mask,
  summed / N / #refine positives, over the positives with at least one point inside.
- contour: sigmoid focal (α 0.25, γ 2) of the heatmap over every location, smooth-L1 (β 1/9) of the offsets at
  positives, each / the batch's ``sum over images of max(#contour cells, 1)``.
- foreground: sigmoid focal (α 0.25, γ 2) of the one-hot semantic map over every location and class / #foreground
  entries (the dense code's ``loss_sem``, weight 1.0; RepPoints v2 detection's 1/area-weighted loss is not used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from pointdet.decoders.point_sets import RepPointsOutputs, points_to_boxes
from pointdet.distributed import mean_over_processes
from pointdet.losses import chamfer_distance, masked_smooth_l1
from pointdet.losses.box import giou_box_loss, smooth_l1_box_loss
from pointdet.models.heads.reppoints import (
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    SMOOTH_L1_BETA,
    class_norm,
    conv_tower,
    dcn_base_offset,
    offsets_to_points,
)
from pointdet.models.heads.reppoints_v2 import (
    CORNER_OFFSET_BETA,
    PRIOR_BIAS,
    ForegroundVerification,
    flatten_levels,
    output_conv,
)
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.dense_reppoints_v2 import (
    band_point_sets,
    build_contour_targets,
    build_semantic_targets,
    contour_point_sets,
    point_mask_labels,
)
from pointdet.targets.reppoints import build_reppoints_targets

CONTOUR_CHANNELS = 3  # ct_score (1) + ct_offset (2), fused into the classifier and the refine field

DenseRepPointsV2Outputs = NamedTuple(  # noqa: UP014 - the fields extend RepPointsOutputs' without restating them
    "DenseRepPointsV2Outputs",
    [
        *((name, Tensor) for name in RepPointsOutputs._fields),
        ("point_scores", Tensor),
        ("contour_scores", Tensor),
        ("contour_offsets", Tensor),
        ("foreground", Tensor),
    ],
)
DenseRepPointsV2Outputs.__doc__ = """``RepPointsOutputs``' fields (N points per set; ``moment_transfer`` zeros)
followed by the per-point mask scores and the verification maps, flattened over levels like ``scores``.

Attributes:
    point_scores: (B, P, N) mask-score logit of each point (of the guided init points in training, of the refine
        points at test).
    contour_scores: (B, P, 1) contour logits, (B, P, 0) without contour verification.
    contour_offsets: (B, P, 2) ``(dx, dy)`` from the location to the contour, stride units; (B, P, 0) without.
    foreground: (B, P, C) semantic foreground logits.
"""


def warp(maps: Tensor, offsets_yx: Tensor) -> Tensor:
    """``maps`` read at every cell moved by its offset: bilinear, border padding, corner-aligned (cell ``(i, j)`` at
    ``(j, i)``).

    Args:
        maps: (M, D, H, W).
        offsets_yx: (M, 2, H, W) ``(dy, dx)`` in cells.

    Returns:
        (M, D, H, W).
    """
    height, width = offsets_yx.shape[-2:]
    rows = torch.arange(height, device=maps.device, dtype=offsets_yx.dtype)[:, None]
    columns = torch.arange(width, device=maps.device, dtype=offsets_yx.dtype)[None]
    x = (columns + offsets_yx[:, 1]) * (2 / max(width - 1, 1)) - 1
    y = (rows + offsets_yx[:, 0]) * (2 / max(height - 1, 1)) - 1
    return F.grid_sample(maps, torch.stack([x, y], dim=-1), padding_mode="border", align_corners=True)


def score_groups(points: Tensor, groups: int) -> Tensor:
    """Position-sensitive group of every point: the cell of a ``sqrt(groups)`` square grid over its set's extent.

    Args:
        points: (..., N, 2) xy.
        groups: G, a square.

    Returns:
        (..., N) float group index ``row * sqrt(G) + column`` in ``[0, G)``.
    """
    side = math.isqrt(groups)
    low, high = points.amin(dim=-2, keepdim=True), points.amax(dim=-2, keepdim=True)
    cell = ((points - low) / (high - low + 1e-6) * side).floor().clamp(0, side - 1)
    return cell[..., 1] * side + cell[..., 0]


class ContourVerification(nn.Module):
    """The class-agnostic contour score (1 channel) and offset (2 channels) 3x3 convs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = output_conv(channels, 1, 3, PRIOR_BIAS)
        self.offset = output_conv(channels, 2, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, H, W) -> ``ct_score`` (B, 1, H, W) logits, ``ct_offset`` (B, 2, H, W) ``(dx, dy)`` strides."""
        return self.score(x), self.offset(x)


MaskFusion = Literal["every_level", "finest"]
PointGrid = Literal["row_major", "column_major"]
ScoreSampling = Literal["image", "level"]


class PointScoreBranch(nn.Module):
    """The mask branch: fused position-sensitive score maps at P3's size, read at the points (module docstring).

    Args:
        fusion: ``every_level`` adds each level's foreground embedding to its mask feature before bringing it to
            P3's size (pointdet's reading of the code's intent); ``finest``: only P3's embedding enters, as the
            official code computes (it forms the other levels' sums, then up-samples their maps without them).
        sampling: where a point reads its level's score maps: ``image``, at its image position (pixels / P3's
            stride); ``level``, as the official code does: its position in its own level's cells normalised by
            that level's size (``(j + dx) / (w_l - 1)``), which stretches levels whose size is not P3's / 2^l
            exactly (by ``1 / (2 (w_l - 1))`` when it is ``(W_3 + 1) / 2^l``).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        depth: int,
        groups: int,
        norm: Literal["gn", "none"],
        fusion: MaskFusion = "every_level",
        sampling: ScoreSampling = "image",
    ) -> None:
        super().__init__()
        if fusion not in ("every_level", "finest") or sampling not in ("image", "level"):
            raise ValueError(f"fusion must be every_level|finest, sampling image|level; got {fusion!r}, {sampling!r}")
        self.groups, self.fusion, self.sampling = groups, fusion, sampling
        self.tower = conv_tower(in_channels, channels, depth, norm)
        self.fuse = output_conv(channels, channels, 3)
        self.hidden = output_conv(channels, channels, 3)
        self.out = output_conv(channels, groups, 1)

    def score_maps(self, features: list[Tensor], embeddings: list[Tensor]) -> list[Tensor]:
        """Per level (B, G, H_3, W_3) score-map logits at the finest level's size."""
        towers = [self.tower(x) for x in features]
        finest = towers[0] + embeddings[0]
        coarser = towers[1:]
        if self.fusion == "every_level":
            coarser = [t + e for t, e in zip(coarser, embeddings[1:], strict=True)]
        size = finest.shape[-2:]
        upsampled = [finest] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in coarser]
        return [self.out(F.relu(self.hidden(self.fuse(f + finest)))) for f in upsampled]

    def forward(self, maps: Tensor, points: Tensor, strides: tuple[int, int], level_size: tuple[int, int]) -> Tensor:
        """Score logits of point sets on one level's map.

        Args:
            maps: (B, G, H, W) the level's score maps at the finest level's size.
            points: (B, Q, N, 2) xy image pixels (read detached).
            strides: the finest level's stride and the points' level's.
            level_size: (H_l, W_l) of the points' level.

        Returns:
            (B, Q, N) logits.
        """
        points = points.detach()
        if self.sampling == "image":
            stride, (height, width) = strides[0], maps.shape[-2:]
        else:
            stride, (height, width) = strides[1], level_size
        cells = points / stride  # the groups are formed in these units too, as the official code's (its 1e-6)
        x = cells[..., 0] * (2 / max(width - 1, 1)) - 1
        y = cells[..., 1] * (2 / max(height - 1, 1)) - 1
        z = score_groups(cells, self.groups) * (2 / max(self.groups - 1, 1)) - 1
        grid = torch.stack([x, y, z], dim=-1)[:, :, :, None]  # (B, Q, N, 1, 3)
        sampled = F.grid_sample(maps[:, None], grid.to(maps.dtype), padding_mode="border", align_corners=True)
        return sampled[:, 0, ..., 0]  # (B, 1, Q, N, 1) -> (B, Q, N)


class DenseRepPointsV2Head(nn.Module):
    """Dense RepPoints v2 head with its loss (decoding: ``decoders.dense_reppoints_v2.DenseRepPointsV2Postprocess``).

    Args:
        in_channels: channels of every FPN level.
        num_classes: C.
        strides: FPN strides, finest first (the finest must be 8, the semantic map's).
        channels: width of the towers and the point convs.
        stacked_convs: convs per tower (3).
        stacked_mask_convs: convs of the mask branch's tower (7).
        num_points: N, an odd square divisible by ``num_groups`` (729).
        num_groups: groups of the classifier's group pooling (9).
        num_score_groups: position-sensitive score maps, a square (121).
        norm: the towers' norm, ``gn`` or ``none``.
        box_loss: ``smooth_l1`` (weights 0.5 / 1) or ``giou`` (1 / 2).
        gradient_mul: share of the guided points' gradient that reaches the init points (0.1).
        point_base_scale: the point assigner's scale and the box / Chamfer normaliser (x stride) (4).
        contour_verification: the contour branch, its loss and its fusion (false: the ablation).
        chamfer_init_weight, chamfer_refine_weight, mask_score_weight, contour_heatmap_weight, contour_offset_weight,
            foreground_weight: loss weights (0.5, 1, 1, 1, 1, 1).
        cls_weight: weight of the focal class loss (1.0, the official).
        point_targets: the Chamfer loss's GT points, ``contour`` (on the contour, for the hull masks) or ``band``
            (random in the contour band, the code's, for its triangulation masks); ``targets.dense_reppoints_v2``.
        band_distance: the band's half-width beyond the contour, in cells of the 56 grid (2).
        mask_fusion, score_sampling: ``PointScoreBranch``'s ``fusion`` and ``sampling`` (pointdet's defaults;
            ``finest`` and ``level`` are the official code's, used by converted models).
        point_grid: the order of the regular init grid's points: ``row_major`` (point k in row k // sqrt(N),
            column k % sqrt(N)) or ``column_major`` (the transpose: the official head's, which lays points x first
            and adds the grid laid y first; used by converted models).
        cls_norm: ``none`` (the official head) or ``gn``: GroupNorm between the group-pooling conv of the class
            branch and its ReLU, as ``RepPointsHead``'s ``cls_norm``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        channels: int = 256,
        stacked_convs: int = 3,
        stacked_mask_convs: int = 7,
        num_points: int = 729,
        num_groups: int = 9,
        num_score_groups: int = 121,
        norm: Literal["gn", "none"] = "gn",
        box_loss: Literal["smooth_l1", "giou"] = "smooth_l1",
        gradient_mul: float = 0.1,
        point_base_scale: int = 4,
        contour_verification: bool = True,
        chamfer_init_weight: float = 0.5,
        chamfer_refine_weight: float = 1.0,
        mask_score_weight: float = 1.0,
        contour_heatmap_weight: float = 1.0,
        contour_offset_weight: float = 1.0,
        foreground_weight: float = 1.0,
        cls_weight: float = 1.0,
        point_targets: Literal["band", "contour"] = "contour",
        band_distance: float = 2.0,
        mask_fusion: MaskFusion = "every_level",
        score_sampling: ScoreSampling = "image",
        point_grid: PointGrid = "row_major",
        cls_norm: Literal["none", "gn"] = "none",
    ) -> None:
        super().__init__()
        kernel = math.isqrt(num_points)
        if kernel * kernel != num_points or kernel % 2 == 0 or num_points % num_groups:
            raise ValueError(f"num_points must be an odd square divisible by num_groups={num_groups}, got {num_points}")
        if math.isqrt(num_score_groups) ** 2 != num_score_groups:
            raise ValueError(f"num_score_groups must be a square, got {num_score_groups}")
        if box_loss not in ("smooth_l1", "giou"):
            raise ValueError(f"box_loss must be 'smooth_l1' or 'giou', got {box_loss!r}")
        if point_grid not in ("row_major", "column_major"):
            raise ValueError(f"point_grid must be 'row_major' or 'column_major', got {point_grid!r}")
        if point_targets not in ("band", "contour"):
            raise ValueError(f"point_targets must be 'band' or 'contour', got {point_targets!r}")
        self.num_classes, self.strides, self.num_points, self.num_groups = (
            num_classes,
            tuple(strides),
            num_points,
            num_groups,
        )
        self.box_loss, self.gradient_mul, self.point_base_scale = box_loss, gradient_mul, point_base_scale
        self.init_weight, self.refine_weight = (0.5, 1.0) if box_loss == "smooth_l1" else (1.0, 2.0)
        self.chamfer_weights = (chamfer_init_weight, chamfer_refine_weight)
        self.mask_score_weight, self.foreground_weight = mask_score_weight, foreground_weight
        self.cls_weight = cls_weight
        self.contour_heatmap_weight, self.contour_offset_weight = contour_heatmap_weight, contour_offset_weight
        self.point_targets, self.band_distance = point_targets, band_distance

        self.cls_tower = conv_tower(in_channels, channels, stacked_convs, norm)
        self.reg_tower = conv_tower(in_channels, channels, stacked_convs, norm)
        self.shared = conv_tower(channels, channels, 1, norm)
        nn.init.normal_(self.shared[0].weight, std=0.01)
        self.foreground = ForegroundVerification(channels, num_classes, norm)
        self.contour = ContourVerification(channels) if contour_verification else None
        fused = channels + (CONTOUR_CHANNELS if contour_verification else 0)
        self.init_conv = output_conv(channels, channels, 3)
        self.init_out = output_conv(channels, 2 * num_points, 1)
        self.cls_conv = output_conv(fused * num_groups, channels, 1)
        self.cls_norm = class_norm(cls_norm, channels)
        self.cls_out = output_conv(channels, num_classes, 1, PRIOR_BIAS)
        self.refine_conv = output_conv(fused, channels, 3)
        self.refine_out = output_conv(channels, 2 * num_points, 1)
        self.point_scores = PointScoreBranch(
            in_channels, channels, stacked_mask_convs, num_score_groups, norm, mask_fusion, score_sampling
        )
        grid = dcn_base_offset(kernel)
        if point_grid == "column_major":  # the official order: (dy, dx) pairs of the row-major grid read x first
            grid = grid.view(-1, 2).flip(1).reshape(-1)
        # The grid's integer steps; scaled to +-point_base_scale / 2 in the features' dtype (exact in float64).
        self.register_buffer("init_grid", grid.view(1, -1, 1, 1), False)
        self.grid_scale = point_base_scale / 2 / (kernel // 2)

    @property
    def contour_verification(self) -> bool:
        return self.contour is not None

    def forward_level(self, x: Tensor) -> tuple[Tensor, ...]:
        """One level (B, D, H, W) -> class logits (B, C, H, W), init and refine (dy, dx) offsets (B, 2N, H, W) in
        stride units, the guided init offsets (B, 2N, H, W), ``ct_score`` (B, 1|0, H, W), ``ct_offset``
        (B, 2|0, H, W), ``sem_score`` (B, C, H, W) and ``sem_f`` (B, D, H, W)."""
        cls_features, pts_features = self.cls_tower(x), self.reg_tower(x)
        shared = self.shared(pts_features)
        foreground, embedding = self.foreground(shared)
        cls_features, pts_features = cls_features + embedding, pts_features + embedding
        init_yx = self.init_out(F.relu(self.init_conv(pts_features))) + self.init_grid.to(x.dtype) * self.grid_scale
        if self.contour is not None:
            contour_score, contour_offset = self.contour(shared + embedding)
            guide = torch.cat([contour_score, contour_offset], dim=1)
            cls_features, pts_features = torch.cat([cls_features, guide], 1), torch.cat([pts_features, guide], 1)
        else:
            contour_score = contour_offset = x.new_zeros(x.shape[0], 0, *x.shape[-2:])
        guided_yx = (1 - self.gradient_mul) * init_yx.detach() + self.gradient_mul * init_yx
        batch, _, height, width = x.shape
        firsts = guided_yx.view(batch, self.num_groups, -1, 2, height, width)[:, :, 0].flatten(0, 1)
        repeated = cls_features[:, None].expand(-1, self.num_groups, -1, -1, -1).flatten(0, 1)
        pooled = warp(repeated, firsts).view(batch, -1, height, width)  # (B, G * D', H, W)
        logits = self.cls_out(F.relu(self.cls_norm(self.cls_conv(pooled))))
        field = self.refine_out(F.relu(self.refine_conv(pts_features)))
        moved = warp(field.view(-1, 2, height, width), guided_yx.view(-1, 2, height, width))
        refine_yx = moved.view(batch, -1, height, width) + guided_yx
        return logits, init_yx, refine_yx, guided_yx, contour_score, contour_offset, foreground, embedding

    def forward(self, features: list[Tensor]) -> DenseRepPointsV2Outputs:
        """FPN levels [(B, D, H_l, W_l)], finest first -> ``DenseRepPointsV2Outputs``."""
        if len(features) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels (strides {self.strides}), got {len(features)}")
        levels = [self.forward_level(x) for x in features]
        sizes = [tuple(x.shape[-2:]) for x in features]
        priors, strides = level_points(sizes, self.strides, features[0].device)
        batch, start = features[0].shape[0], 0
        points = {"init": [], "refine": [], "guided": []}
        for level, stride, (height, width) in zip(levels, self.strides, sizes, strict=True):
            level_priors = priors[start : start + height * width]
            start += height * width
            for name, offsets in zip(points, level[1:4], strict=True):
                points[name].append(offsets_to_points(offsets, level_priors, stride))
        maps = self.point_scores.score_maps(features, [level[7] for level in levels])
        scored = points["guided"] if self.training else points["refine"]
        point_scores = [
            self.point_scores(m, p.unflatten(-1, (-1, 2)), (self.strides[0], stride), size)
            for m, p, stride, size in zip(maps, scored, self.strides, sizes, strict=True)
        ]
        return DenseRepPointsV2Outputs(
            flatten_levels([level[0] for level in levels]),
            torch.cat(points["init"], dim=1),
            torch.cat(points["refine"], dim=1),
            priors.expand(batch, -1, -1),
            strides.expand(batch, -1),
            priors.new_zeros(batch, 2),
            torch.cat(point_scores, dim=1),
            *(flatten_levels([level[i] for level in levels]) for i in (4, 5, 6)),
        )

    def loss(self, outputs: DenseRepPointsV2Outputs, instances: list[Instances]) -> dict[str, Tensor]:
        """The weighted terms of the module docstring, in float32: ``loss_cls``, ``loss_box_init``,
        ``loss_box_refine``, ``loss_chamfer_init``, ``loss_chamfer_refine``, ``loss_mask_score``,
        ``loss_foreground`` and, with contour verification, ``loss_contour_heatmap`` and ``loss_contour_offset``."""
        if any(inst.masks is None for inst in instances):
            raise ValueError("Dense RepPoints v2 trains on instance masks; these instances have none")
        batch, num_priors = outputs.scores.shape[:2]
        points_init = outputs.points_init.float().view(batch, num_priors, -1, 2)
        points_refine = outputs.points_refine.float().view(batch, num_priors, -1, 2)
        boxes_init, boxes_refine = points_to_boxes(points_init, "minmax"), points_to_boxes(points_refine, "minmax")
        priors, strides = outputs.priors[0].float(), outputs.strides[0].float()
        targets = build_reppoints_targets(
            priors, strides, boxes_init.detach(), instances, self.num_classes, "atss", self.point_base_scale
        )
        num_init = mean_over_processes(targets.init_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)
        num_refine = mean_over_processes(targets.refine_positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)
        scores = outputs.scores.float()
        one_hot = F.one_hot(targets.labels, self.num_classes + 1)[..., : self.num_classes].to(scores.dtype)
        focal = sigmoid_focal_loss(scores, one_hot, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="none")
        loss_cls = torch.where(targets.label_valid[..., None], focal, 0.0).sum() / num_refine
        losses = {"loss_cls": self.cls_weight * loss_cls}
        scale = (self.point_base_scale * strides).expand(batch, -1)  # (B, P)
        stages = (
            ("init", boxes_init, points_init, targets.init_boxes, targets.init_positive, targets.init_assigned,
             num_init),
            ("refine", boxes_refine, points_refine, targets.refine_boxes, targets.refine_positive,
             targets.refine_assigned, num_refine),
        )  # fmt: skip
        contours = [self.point_set_targets(inst).to(priors) for inst in instances]
        for (name, boxes, points, box_targets, positive, assigned, count), box_weight, chamfer_weight in zip(
            stages, (self.init_weight, self.refine_weight), self.chamfer_weights, strict=True
        ):
            if self.box_loss == "smooth_l1":
                box = smooth_l1_box_loss(boxes, box_targets, positive, scale, count, SMOOTH_L1_BETA)
            else:
                box = giou_box_loss(boxes, box_targets, positive, count)
            chamfer = sum(
                chamfer_distance(
                    points[b][positive[b]] / scale[b][positive[b], None, None],
                    contours[b][assigned[b][positive[b]]] / scale[b][positive[b], None, None],
                ).sum()
                for b in range(batch)
            )
            losses[f"loss_box_{name}"] = box_weight * box
            losses[f"loss_chamfer_{name}"] = chamfer_weight * chamfer / count
        losses["loss_mask_score"] = (
            self.mask_score_weight
            * self.mask_score_loss(
                outputs.point_scores.float(), points_init, targets.refine_positive, targets.refine_assigned, instances
            )
            / num_refine
        )
        if self.contour_verification:
            losses.update(self.contour_loss(outputs, instances))
        semantic = build_semantic_targets(instances, self.num_classes, priors, strides)
        count = mean_over_processes((semantic > 0).sum().float()).clamp(min=1)
        foreground = sigmoid_focal_loss(outputs.foreground.float(), semantic, FOCAL_ALPHA, FOCAL_GAMMA, "sum")
        losses["loss_foreground"] = self.foreground_weight * foreground / count
        return losses

    def point_set_targets(self, instances: Instances) -> Tensor:
        """(G, N, 2) GT points of one image's objects for the Chamfer loss (``point_targets``)."""
        if self.point_targets == "contour":
            return contour_point_sets(instances, self.num_points)
        return band_point_sets(instances.masks, instances.boxes.float(), self.num_points, self.band_distance)

    def mask_score_loss(
        self, logits: Tensor, points: Tensor, positive: Tensor, assigned: Tensor, instances: list[Instances]
    ) -> Tensor:
        """Sum over the refine positives holding a point inside their GT mask of the mean BCE of their point
        scores (B, P, N) against the init points' (B, P, N, 2) inside / outside labels."""
        total = logits.new_zeros(())
        for b, inst in enumerate(instances):
            labels = point_mask_labels(points[b][positive[b]], inst.masks, assigned[b][positive[b]])
            valid = labels.sum(dim=1) > 0
            bce = F.binary_cross_entropy_with_logits(logits[b][positive[b]][valid], labels[valid], reduction="sum")
            total = total + bce / self.num_points
        return total

    def contour_loss(self, outputs: DenseRepPointsV2Outputs, instances: list[Instances]) -> dict[str, Tensor]:
        """Contour heatmap (focal) and offset (smooth-L1 at positives) terms, each / the positive count."""
        targets = build_contour_targets(outputs.priors[0].float(), outputs.strides[0].float(), instances)
        count = mean_over_processes(targets.positive.sum(dim=1).clamp(min=1).sum().float()).clamp(min=1)
        scores = outputs.contour_scores.float()[..., 0]
        heatmap = sigmoid_focal_loss(scores, targets.heatmap, FOCAL_ALPHA, FOCAL_GAMMA, "sum") / count
        offset = masked_smooth_l1(
            outputs.contour_offsets.float(), targets.offset, targets.positive, count, CORNER_OFFSET_BETA
        )
        return {
            "loss_contour_heatmap": self.contour_heatmap_weight * heatmap,
            "loss_contour_offset": self.contour_offset_weight * offset,
        }
