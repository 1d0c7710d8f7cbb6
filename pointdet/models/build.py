"""``build_model``: the one place where a ``ModelConfig`` becomes modules (jump-to-definition friendly)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pointdet.configs.schema import CenterNetConfig, CornerConfig, ModelConfig
from pointdet.models.backbones import DLA34, ResNet, hourglass52, hourglass104, hourglass_small
from pointdet.models.detector import Detector
from pointdet.models.heads import CenterNetHead, CornerHead, Mono3DHead, PoseHead
from pointdet.models.necks import DeconvUpsampler, DLAUpsampler

HOURGLASSES = {"hourglass104": hourglass104, "hourglass52": hourglass52, "hourglass_small": hourglass_small}


def build_model(
    config: ModelConfig, num_classes: int, num_joints: int = 0, flip_pairs: Sequence[tuple[int, int]] = ()
) -> Detector:
    """The detector of ``config``: CenterNet (ResNet + DCN deconv up-sampler or DLA-34 + deformable DLA-up)
    for ``config.task``, or a corner detector on a stacked hourglass.

    Args:
        config: the model section of the experiment.
        num_classes: C.
        num_joints, flip_pairs: keypoints of the dataset (pose only).
    """
    if isinstance(config, CornerConfig):
        return _build_corner_model(config, num_classes)
    if not isinstance(config, CenterNetConfig):
        raise TypeError(f"no model builder for {type(config).__name__}")
    if config.backbone == "dla34":
        backbone = DLA34(weights=config.backbone_weights)
        neck = DLAUpsampler([shape.channels for shape in backbone.feature_shapes])
        default_head_conv = 256
    else:
        backbone = ResNet(int(config.backbone.removeprefix("resnet")), weights=config.backbone_weights)
        neck = DeconvUpsampler(backbone.feature_shapes[-1].channels)
        default_head_conv = 64
    (feature,) = neck.feature_shapes
    common = {
        "head_conv": config.head_conv or default_head_conv,
        "stride": feature.stride,
        "size_weight": config.size_weight,
        "offset_weight": config.offset_weight,
        "min_overlap": config.min_overlap,
        "radius_mode": config.radius_mode,
    }
    if config.task == "pose":
        head = PoseHead(feature.channels, num_classes, num_joints, flip_pairs, snap=config.snap_joints, **common)
    elif config.task == "mono3d":
        head = Mono3DHead(feature.channels, num_classes, **common)
    else:
        head = CenterNetHead(feature.channels, num_classes, **common)
    return Detector(backbone, neck, head)


def _build_corner_model(config: CornerConfig, num_classes: int) -> Detector:
    """CornerNet (associative embedding) or CentripetalNet on an hourglass; the stacks feed the head directly."""
    backbone = HOURGLASSES[config.backbone]()
    channels = backbone.feature_shapes[-1].channels
    head = CornerHead(
        channels,
        num_classes,
        len(backbone.feature_shapes),
        matching="centripetal" if config.method == "centripetalnet" else "embedding",
        cross_star=config.cross_star,
        head_conv=config.head_conv or channels,
        guiding_weight=config.guiding_weight,
        pair_score=config.pair_score,
        central_region=config.central_region,
        soft_nms_sigma=config.soft_nms_sigma,
        with_mask=config.mask_head,
    )
    return Detector(backbone, nn.Identity(), head)


def apply_decoding_options(model: Detector, config: ModelConfig) -> None:
    """Set the decode-time options of ``config`` on a built ``model`` (they need no retraining): pose joint
    snapping, and the corner methods' pair score, central region and soft-NMS sigma."""
    head = model.head
    if isinstance(head, PoseHead):
        head.snap = config.snap_joints
    if isinstance(head, CornerHead):
        head.pair_score, head.central_region = config.pair_score, config.central_region
        head.soft_nms_sigma = config.soft_nms_sigma
