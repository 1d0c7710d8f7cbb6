"""``build_model``: the one place where a model config becomes modules (jump-to-definition friendly).

One builder per method family; ``build_postprocess`` makes the decode-time part alone, so that decoding
options (``model.pair_score=code``, ``model.snap_joints=false``) apply to a trained model without retraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from pointdet.configs.schema import (
    CenterNetConfig,
    CornerConfig,
    CPMRCNNConfig,
    DenseRepPointsV2Config,
    FCOSConfig,
    LSNetConfig,
    ModelConfig,
    RepPointsConfig,
    RepPointsV2Config,
)
from pointdet.decoders.centernet import CenterNetPostprocess
from pointdet.decoders.corners import CornerPostprocess
from pointdet.decoders.dense_reppoints_v2 import DenseRepPointsV2Postprocess
from pointdet.decoders.fcos import FCOSPostprocess
from pointdet.decoders.grid import CPMPostprocess
from pointdet.decoders.lsnet import LSNetPostprocess
from pointdet.decoders.mono3d import Mono3DPostprocess
from pointdet.decoders.pose import PosePostprocess
from pointdet.decoders.reppoints import RepPointsPostprocess
from pointdet.decoders.reppoints_v2 import RepPointsV2Postprocess
from pointdet.errors import ConfigError
from pointdet.models.backbones import DLA34, ResNet, TimmBackbone, hourglass52, hourglass104, hourglass_small
from pointdet.models.backbones.res2net import RES2NETS, Res2Net
from pointdet.models.backbones.resnet import RESNETS
from pointdet.models.detector import Detector
from pointdet.models.heads import (
    CenterNetHead,
    CornerHead,
    LSNetHead,
    Mono3DHead,
    PoseHead,
    RepPointsHead,
    StackedHead,
)
from pointdet.models.heads.dense_reppoints_v2 import DenseRepPointsV2Head
from pointdet.models.heads.fcos import FCOSPeerHead
from pointdet.models.heads.reppoints_v2 import VERIFICATION_CHANNELS, RepPointsV2Head
from pointdet.models.init_from import initialise_from
from pointdet.models.necks import FPN, DeconvUpsampler, DLAUpsampler
from pointdet.models.roi_heads.cpm import PLAIN_GRID_MAPPING, CPMRoIHeads
from pointdet.models.roi_heads.mask import MaskHead
from pointdet.models.roi_heads.reclassify import RoIReclassifier
from pointdet.models.two_stage import TwoStageDetector
from pointdet.structures import FeatureShape
from pointdet.targets.lsnet_tasks import LandmarkTask, landmark_task

HOURGLASSES = {"hourglass104": hourglass104, "hourglass52": hourglass52, "hourglass_small": hourglass_small}
TIMM_PREFIX = "timm:"


def build_model(
    config: ModelConfig,
    num_classes: int,
    num_joints: int = 0,
    flip_pairs: Sequence[tuple[int, int]] = (),
    with_backbone_weights: bool = True,
) -> Detector:
    """The detector of ``config``.

    Args:
        config: the model section of the experiment (its class selects the method family).
        num_classes: C.
        num_joints, flip_pairs: keypoints of the dataset (pose only).
        with_backbone_weights: load the initial weights, ``config.backbone_weights`` and then ``config.init_from``
            (a trained checkpoint replaces them anyway).
    """
    weights = getattr(config, "backbone_weights", None) if with_backbone_weights else None
    if isinstance(config, CenterNetConfig):
        model = _build_centernet(config, num_classes, num_joints, flip_pairs, weights)
    elif isinstance(config, CornerConfig):
        model = _build_corner_model(config, num_classes)
    elif isinstance(config, DenseRepPointsV2Config):
        model = _build_dense_reppoints_v2(config, num_classes, weights)
    elif isinstance(config, RepPointsConfig):
        model = _build_reppoints(config, num_classes, weights)
    elif isinstance(config, LSNetConfig):
        model = _build_lsnet(config, num_classes, num_joints, flip_pairs, weights)
    elif isinstance(config, CPMRCNNConfig):
        model = _build_cpm_rcnn(config, num_classes, weights)
    elif isinstance(config, FCOSConfig):
        model = _build_fcos(config, num_classes, weights)
    else:
        raise TypeError(f"no model builder for {type(config).__name__}")
    if with_backbone_weights and getattr(config, "init_from", None):
        initialise_from(model, config.init_from)
    return model


def build_postprocess(
    config: ModelConfig,
    feature_shapes: Sequence[FeatureShape],
    flip_pairs: Sequence[tuple[int, int]] = (),
    num_joints: int = 0,
) -> Any:
    """The post-processor of ``config`` for a network whose head reads ``feature_shapes`` (``num_joints`` and
    ``flip_pairs``: the data set's keypoints, for pose)."""
    if isinstance(config, CenterNetConfig):
        stride = feature_shapes[0].stride
        if config.task == "pose":
            return PosePostprocess(stride, flip_pairs, snap=config.snap_joints)
        return Mono3DPostprocess(stride) if config.task == "mono3d" else CenterNetPostprocess(stride)
    if isinstance(config, CornerConfig):
        return CornerPostprocess(
            feature_shapes[-1].stride,
            matching="centripetal" if config.method == "centripetalnet" else "embedding",
            pair_score=config.pair_score,
            central_region=config.central_region,
            soft_nms_sigma=config.soft_nms_sigma,
        )
    if isinstance(config, DenseRepPointsV2Config):
        return DenseRepPointsV2Postprocess(
            config.score_threshold,
            config.nms_iou,
            config.pre_nms,
            config.joint_inference,
            config.contour_threshold,
            config.mask_size,
            config.mask_rule,
        )
    if isinstance(config, RepPointsV2Config):
        return RepPointsV2Postprocess(
            config.transform, config.score_threshold, config.nms_iou, config.pre_nms, config.joint_inference
        )
    if isinstance(config, RepPointsConfig):
        return RepPointsPostprocess(config.transform, config.score_threshold, config.nms_iou, config.pre_nms)
    if isinstance(config, LSNetConfig):
        task = _lsnet_task(config, num_joints, flip_pairs)
        return LSNetPostprocess(
            task, config.score_threshold, config.nms_iou, config.pre_nms, stage=config.decode_stage,
            joint_inference=config.joint_inference,
        )  # fmt: skip
    if isinstance(config, CPMRCNNConfig):
        return CPMPostprocess(**{name: getattr(config, name) for name in config.DECODE_OPTIONS})
    if isinstance(config, FCOSConfig):
        strides = [shape.stride for shape in feature_shapes]
        return FCOSPostprocess(strides, **{name: getattr(config, name) for name in config.DECODE_OPTIONS})
    raise TypeError(f"no post-processor for {type(config).__name__}")


def _skip_channels(shapes: Sequence[FeatureShape]) -> list[int]:
    """Channels of the backbone maps at strides 16, 8 and 4, the up-sampler's skips: the three maps before the
    stride-32 one, which must be at exactly those strides."""
    strides = [shape.stride for shape in shapes[-4:]]
    if strides != [4, 8, 16, 32]:
        raise ConfigError(
            f"model.upsampler_skips needs backbone maps at strides 4, 8, 16 and 32 as its last four, got {strides}"
        )
    return [shape.channels for shape in shapes[-2:-5:-1]]


def _build_centernet(
    config: CenterNetConfig,
    num_classes: int,
    num_joints: int,
    flip_pairs: Sequence[tuple[int, int]],
    weights: str | None,
) -> Detector:
    """CenterNet: ResNet or a timm model + DCN up-sampler, DLA-34 + deformable DLA-up, or an hourglass with a head
    per stack (no neck), and the head of ``config.task``."""
    neck = None
    own_neck = config.backbone in HOURGLASSES or config.backbone == "dla34"  # not the ResNet / timm up-sampler
    if config.upsampler_conv != "dcn" and own_neck:
        raise ConfigError(
            f"model.backbone={config.backbone}: upsampler_conv applies to the ResNet and timm up-sampler; "
            "set model.upsampler_conv=dcn"
        )
    if config.upsampler_skips and own_neck:
        raise ConfigError(
            f"model.backbone={config.backbone}: upsampler_skips applies to the ResNet and timm up-sampler (DLA-up "
            "already fuses every level); set model.upsampler_skips=false"
        )
    if (config.frozen_stages or config.frozen_bn) and own_neck:
        raise ConfigError(
            f"model.backbone={config.backbone}: frozen_stages and frozen_bn apply to ResNet and timm backbones; "
            "set model.frozen_stages=0 model.frozen_bn=false"
        )
    if config.backbone in HOURGLASSES:
        if weights is not None:
            raise ConfigError(
                f"model.backbone_weights: {config.backbone} has no ImageNet weights (it trains from scratch, or from "
                "another run with model.init_from=RUN)"
            )
        backbone = HOURGLASSES[config.backbone]()
        # The code's hourglass heads are 3x3 conv (the stack's 256 channels) -> ReLU -> 1x1, whatever --head_conv.
        default_head_conv = backbone.feature_shapes[-1].channels
    elif config.backbone == "dla34":
        backbone = DLA34(weights=weights)
        neck = DLAUpsampler([shape.channels for shape in backbone.feature_shapes])
        default_head_conv = 256
    else:
        frozen = {"frozen_stages": config.frozen_stages, "norm": "frozen_bn" if config.frozen_bn else "bn"}
        if config.backbone.startswith(TIMM_PREFIX):
            backbone = TimmBackbone(config.backbone.removeprefix(TIMM_PREFIX), weights=weights, **frozen)
        else:
            backbone = ResNet(int(config.backbone.removeprefix("resnet")), weights=weights, **frozen)
        neck = DeconvUpsampler(
            backbone.feature_shapes[-1].channels,
            deformable=config.upsampler_conv == "dcn",
            skip_channels=_skip_channels(backbone.feature_shapes) if config.upsampler_skips else None,
            skip_init=config.upsampler_skip_init,
        )
        default_head_conv = 64
    shapes = (neck or backbone).feature_shapes
    feature = shapes[-1]
    common = {
        "head_conv": config.head_conv or default_head_conv,
        "stride": feature.stride,
        "size_weight": config.size_weight,
        "offset_weight": config.offset_weight,
        "min_overlap": config.min_overlap,
        "radius_mode": config.radius_mode,
    }

    def make_head() -> nn.Module:
        if config.task == "pose":
            return PoseHead(feature.channels, num_classes, num_joints, **common)
        if config.task == "mono3d":
            return Mono3DHead(feature.channels, num_classes, normalisation=config.mono3d_normalisation, **common)
        return CenterNetHead(feature.channels, num_classes, **common)

    head = make_head() if len(shapes) == 1 else StackedHead([make_head() for _ in shapes])
    detector_postprocess = build_postprocess(config, shapes, flip_pairs)
    return Detector(backbone, neck, head, detector_postprocess, **_normalisation(config, backbone))


def _build_corner_model(config: CornerConfig, num_classes: int) -> Detector:
    """CornerNet (associative embedding) or CentripetalNet on an hourglass; the stacks feed the head directly,
    and the mask head, when asked for, is the RoI stage."""
    backbone = HOURGLASSES[config.backbone]()
    last = backbone.feature_shapes[-1]
    head = CornerHead(
        last.channels,
        num_classes,
        len(backbone.feature_shapes),
        matching="centripetal" if config.method == "centripetalnet" else "embedding",
        cross_star=config.cross_star,
        head_conv=config.head_conv or last.channels,
        stride=last.stride,
        guiding_weight=config.guiding_weight,
    )
    masks = MaskHead(last.channels, num_classes, last.stride, hidden=last.channels) if config.mask_head else None
    return Detector(backbone, None, head, build_postprocess(config, backbone.feature_shapes), roi_heads=masks)


def _fpn_backbone(
    config: RepPointsConfig | LSNetConfig | CPMRCNNConfig | FCOSConfig,
    weights: str | None,
    stride_in_1x1: bool = False,
) -> tuple[nn.Module, FPN]:
    """ResNet (frozen stem + stage 1, frozen BN, optional DCN in c3-c5) or a timm model, and an FPN on its maps:
    ``config.fpn_levels``, P3-P7 on strides 8/16/32 (the one-stage detectors' default) or P2-P6 on strides 4-32 (the
    two-stage detectors')."""
    norm = "frozen_bn" if config.frozen_bn else "bn"
    if config.backbone.startswith(TIMM_PREFIX):
        if config.backbone_dcn:
            raise ConfigError(
                f"model.backbone={config.backbone}: backbone_dcn applies to ResNets only; set model.backbone_dcn=false"
            )
        backbone = TimmBackbone(
            config.backbone.removeprefix(TIMM_PREFIX), weights=weights, norm=norm, frozen_stages=config.frozen_stages
        )
    else:
        if config.backbone in RES2NETS:
            resnet, arguments = Res2Net, RES2NETS[config.backbone]
        else:  # the config allows stride_in_1x1 with ResNet-50 / 101 only
            resnet, arguments = ResNet, {**RESNETS[config.backbone], "stride_in_1x1": stride_in_1x1}
        backbone = resnet(
            **arguments,
            weights=weights,
            frozen_stages=config.frozen_stages,
            norm=norm,
            dcn_stages=(False, True, True, True) if config.backbone_dcn else (False, False, False, False),
        )
    levels, extra_from = ((3, 7), "c5") if config.fpn_levels == "p3-p7" else ((2, 6), "p5")
    return backbone, FPN(
        backbone.feature_shapes, config.channels, levels=levels, norm=config.norm, extra_from=extra_from
    )


def _build_dense_reppoints_v2(config: DenseRepPointsV2Config, num_classes: int, weights: str | None) -> Detector:
    """Dense RepPoints v2: ``_fpn_backbone`` + the dense point-set head with its contour and foreground branches."""
    backbone, neck = _fpn_backbone(config, weights)
    head = DenseRepPointsV2Head(
        config.channels, num_classes, strides=[shape.stride for shape in neck.feature_shapes],
        channels=config.channels, stacked_convs=config.stacked_convs, stacked_mask_convs=config.stacked_mask_convs,
        num_points=config.num_points, num_groups=config.num_groups, num_score_groups=config.num_score_groups,
        norm=config.norm, box_loss=config.box_loss, gradient_mul=config.gradient_mul,
        contour_verification=config.contour_verification, chamfer_init_weight=config.chamfer_init_weight,
        chamfer_refine_weight=config.chamfer_refine_weight, mask_score_weight=config.mask_score_weight,
        contour_heatmap_weight=config.contour_heatmap_weight, contour_offset_weight=config.contour_offset_weight,
        foreground_weight=config.foreground_weight, point_targets=config.point_targets,
        band_distance=config.band_distance, mask_fusion=config.mask_fusion, score_sampling=config.score_sampling,
        point_grid=config.point_grid, cls_norm=config.cls_norm, cls_weight=config.cls_weight,
    )  # fmt: skip
    return Detector(
        backbone, neck, head, build_postprocess(config, neck.feature_shapes), **_normalisation(config, backbone)
    )


def _build_reppoints(config: RepPointsConfig, num_classes: int, weights: str | None) -> Detector:
    """RepPoints v1 or v2: ``_fpn_backbone`` + point head; v2's head wraps the point head with its verification
    branches."""
    backbone, neck = _fpn_backbone(config, weights)
    v2 = isinstance(config, RepPointsV2Config)
    head = RepPointsHead(
        config.channels,
        num_classes,
        strides=[shape.stride for shape in neck.feature_shapes],
        channels=config.channels,
        stacked_convs=config.stacked_convs,
        num_points=config.num_points,
        norm=config.norm,
        transform=config.transform,
        box_loss=config.box_loss,
        refine_assigner=config.refine_assigner,
        gradient_mul=config.gradient_mul,
        guide_channels=VERIFICATION_CHANNELS if v2 and config.corner_verification else 0,
        use_grid_points=config.use_grid_points,
        cls_norm=config.cls_norm,
        corner_start=config.corner_start,
        cls_branch=config.cls_branch,
        cls_weight=config.cls_weight,
    )
    if v2:
        head = RepPointsV2Head(
            head,
            config.channels,
            config.norm,
            heatmap_weight=config.heatmap_weight,
            corner_offset_weight=config.corner_offset_weight,
            foreground_weight=config.foreground_weight,
            corner_verification=config.corner_verification,
            foreground_verification=config.foreground_verification,
        )
    reclassifier = None
    if config.roi_classifier is True or (config.roi_classifier == "multi_class" and num_classes > 1):
        reclassifier = RoIReclassifier(
            [shape.name for shape in neck.feature_shapes], config.channels, num_classes, hidden=config.roi_hidden,
            roi_batch=config.roi_batch, sampling_ratio=config.roi_sampling_ratio,
            nms_iou=config.nms_iou,
        )  # fmt: skip
    return Detector(
        backbone,
        neck,
        head,
        build_postprocess(config, neck.feature_shapes),
        roi_heads=reclassifier,
        **_normalisation(config, backbone),
    )


def _build_lsnet(
    config: LSNetConfig,
    num_classes: int,
    num_joints: int,
    flip_pairs: Sequence[tuple[int, int]],
    weights: str | None,
) -> Detector:
    """LSNet: ``_fpn_backbone`` + landmark head of the config's task (extreme points, contours or keypoints), with
    RepPoints v2's verification branches for LSNet-CPV."""
    if config.task == "pose" and not num_joints:
        raise ConfigError("model.task=pose needs keypoints: the data set's categories define none")
    backbone, neck = _fpn_backbone(config, weights)
    task = _lsnet_task(config, num_joints, flip_pairs)
    head = LSNetHead(
        config.channels, num_classes, task=task,
        strides=[shape.stride for shape in neck.feature_shapes], tower=config.tower,
        channels=config.channels, landmark_features=config.landmark_features, pyramid_scaling=config.pyramid_scaling,
        stacked_convs=config.stacked_convs,
        box_penalty=config.box_penalty, gradient_mul=config.gradient_mul, init_weight=config.init_weight,
        refine_weight=config.refine_weight, init_loss=config.init_loss,
        corner_verification=config.corner_verification, foreground_verification=config.foreground_verification,
        heatmap_weight=config.heatmap_weight, corner_offset_weight=config.corner_offset_weight,
        foreground_weight=config.foreground_weight,
    )  # fmt: skip
    postprocess = build_postprocess(config, neck.feature_shapes, flip_pairs, num_joints)
    return Detector(backbone, neck, head, postprocess, **_normalisation(config, backbone))


def _lsnet_task(config: LSNetConfig, num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> LandmarkTask:
    """The landmark task of ``config`` (its ``task`` and ``pose_*`` keys; the data set's keypoints), for the head and
    the post-processor alike."""
    return landmark_task(
        config.task, num_joints, flip_pairs, config.pose_box, config.pose_aggregation, config.pose_offset_l1,
        config.detection_aggregation,
    )  # fmt: skip


def _build_cpm_rcnn(config: CPMRCNNConfig, num_classes: int, weights: str | None) -> TwoStageDetector:
    """CPM R-CNN (or Grid R-CNN Plus with its three modules off): ``_fpn_backbone`` with P2-P6, torchvision's RPN,
    the CPM RoI heads."""
    backbone, neck = _fpn_backbone(config, weights, stride_in_1x1=config.stride_in_1x1)
    anchors = AnchorGenerator(tuple((size,) for size in config.anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
    rpn = RegionProposalNetwork(
        anchors, RPNHead(config.channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
        pre_nms_top_n={"training": config.rpn_train_rois, "testing": config.rpn_test_rois},
        post_nms_top_n={"training": config.rpn_train_rois, "testing": config.rpn_test_rois}, nms_thresh=0.7,
    )  # fmt: skip
    mapping = config.mapping_ratios if config.cascade_mapping else (PLAIN_GRID_MAPPING,)
    roi_heads = CPMRoIHeads(
        [shape.name for shape in neck.feature_shapes], config.channels, num_classes, hidden=config.hidden,
        point_channels=config.point_channels, grid_convs=config.grid_convs, mapping_ratios=mapping,
        stage_ious=config.stage_ious[: len(mapping)],
        stage_weights=config.stage_weights[: len(mapping)], iou_scoring=config.iou_scoring,
        rescoring=config.rescoring, roi_batch=config.roi_batch, positive_fraction=config.positive_fraction,
        max_grid_rois=config.train_grid_rois or config.max_grid_rois, sampling_ratio=config.roi_sampling_ratio,
        roi_aligned=config.roi_aligned, roi_level_rule=config.roi_level_rule, grid_conv_bias=config.grid_conv_bias,
        grid_fusion=config.grid_fusion,
    )  # fmt: skip
    postprocess = build_postprocess(config, neck.feature_shapes)
    return TwoStageDetector(backbone, neck, rpn, roi_heads, postprocess, **_normalisation(config, backbone))


def _build_fcos(config: FCOSConfig, num_classes: int, weights: str | None) -> Detector:
    """The FCOS peer: ``_fpn_backbone`` (P3-P7) + torchvision's FCOS head, loss and decoding."""
    backbone, neck = _fpn_backbone(config, weights)
    strides = [shape.stride for shape in neck.feature_shapes]
    head = FCOSPeerHead(
        config.channels, num_classes, strides, config.num_convs, config.center_sampling_radius, config.cls_weight
    )
    postprocess = build_postprocess(config, neck.feature_shapes)
    return Detector(backbone, neck, head, postprocess, **_normalisation(config, backbone))


def _normalisation(
    config: CenterNetConfig | RepPointsConfig | LSNetConfig | CPMRCNNConfig | FCOSConfig, backbone: Any
) -> dict[str, tuple[float, ...]]:
    """A timm backbone configured with ImageNet weights normalises with its own mean/std (timm's data config); the
    other backbones, and timm ones trained from scratch, with CenterNet's constants (the Detector's defaults).

    The rule reads ``config.backbone_weights``, not whether weights were loaded, so that a trained model rebuilt
    without them (``with_backbone_weights=False``) keeps the normalisation it was trained with.
    """
    if isinstance(backbone, TimmBackbone) and config.backbone_weights is not None:
        return {"pixel_mean": backbone.pixel_mean, "pixel_std": backbone.pixel_std}
    return {}
