"""``build_model``: the one place where a ``ModelConfig`` becomes modules (jump-to-definition friendly)."""

from __future__ import annotations

from collections.abc import Sequence

from pointdet.configs.schema import ModelConfig
from pointdet.models.backbones import DLA34, ResNet
from pointdet.models.detector import Detector
from pointdet.models.heads import CenterNetHead, Mono3DHead, PoseHead
from pointdet.models.necks import DeconvUpsampler, DLAUpsampler


def build_model(
    config: ModelConfig, num_classes: int, num_joints: int = 0, flip_pairs: Sequence[tuple[int, int]] = ()
) -> Detector:
    """CenterNet for ``config.task`` with the configured backbone: ResNet + DCN deconv up-sampler, or DLA-34 +
    deformable DLA-up.

    Args:
        config: the model section of the experiment.
        num_classes: C.
        num_joints, flip_pairs: keypoints of the dataset (pose only).
    """
    if config.backbone == "dla34":
        backbone = DLA34(weights=config.backbone_weights)
        neck = DLAUpsampler(backbone.out_channels)
        default_head_conv = 256
    elif config.backbone.startswith("resnet"):
        backbone = ResNet(int(config.backbone.removeprefix("resnet")), weights=config.backbone_weights)
        neck = DeconvUpsampler(backbone.out_channels[-1])
        default_head_conv = 64
    else:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose resnet18, resnet50, resnet101 or dla34")
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
