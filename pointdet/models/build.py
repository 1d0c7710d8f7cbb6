"""``build_model``: the one place where a ``ModelConfig`` becomes modules (jump-to-definition friendly)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pointdet.configs.schema import ModelConfig
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
    if config.method in ("centripetalnet", "cornernet"):
        return _build_corner_model(config, num_classes)
    if config.method != "centernet":
        raise ValueError(f"unknown method {config.method!r}; choose centernet, centripetalnet or cornernet")
    if config.mask_head:
        raise ValueError("model.mask_head is CentripetalNet's mask head: use model.method=centripetalnet")
    if config.backbone == "dla34":
        backbone = DLA34(weights=config.backbone_weights)
        neck = DLAUpsampler(backbone.out_channels)
        default_head_conv = 256
    elif config.backbone.startswith("resnet"):
        backbone = ResNet(int(config.backbone.removeprefix("resnet")), weights=config.backbone_weights)
        neck = DeconvUpsampler(backbone.out_channels[-1])
        default_head_conv = 64
    else:
        raise ValueError(f"backbone {config.backbone!r} is not a CenterNet backbone; choose resnet18/50/101 or dla34")
    common = {
        "head_conv": config.head_conv or default_head_conv,
        "stride": neck.stride,
        "size_weight": config.size_weight,
        "offset_weight": config.offset_weight,
        "min_overlap": config.min_overlap,
        "radius_mode": config.radius_mode,
    }
    if config.task == "pose":
        head = PoseHead(neck.out_channels, num_classes, num_joints, flip_pairs, snap=config.snap_joints, **common)
    elif config.task == "mono3d":
        head = Mono3DHead(neck.out_channels, num_classes, **common)
    elif config.task == "detection":
        head = CenterNetHead(neck.out_channels, num_classes, **common)
    else:
        raise ValueError(f"unknown task {config.task!r}; choose detection, pose or mono3d")
    return Detector(backbone, neck, head)


def _build_corner_model(config: ModelConfig, num_classes: int) -> Detector:
    """CornerNet (associative embedding) or CentripetalNet on an hourglass; the stacks feed the head directly."""
    if config.backbone not in HOURGLASSES:
        raise ValueError(
            f"model.method={config.method} needs an hourglass backbone ({', '.join(HOURGLASSES)}), "
            f"got {config.backbone!r}"
        )
    if config.task != "detection":
        raise ValueError(f"model.method={config.method} does detection (and masks), not task={config.task}")
    if config.backbone_weights:
        raise ValueError("hourglass backbones train from scratch (no ImageNet weights exist); unset backbone_weights")
    backbone = HOURGLASSES[config.backbone]()
    head = CornerHead(
        backbone.out_channels[-1],
        num_classes,
        backbone.num_stacks,
        matching="centripetal" if config.method == "centripetalnet" else "embedding",
        cross_star=config.cross_star,
        head_conv=config.head_conv or backbone.out_channels[-1],
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
