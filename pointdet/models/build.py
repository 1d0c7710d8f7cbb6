"""``build_model``: the one place where a ``ModelConfig`` becomes modules (jump-to-definition friendly)."""

from __future__ import annotations

from pointdet.configs.schema import ModelConfig
from pointdet.models.backbones import DLA34, ResNet
from pointdet.models.detector import Detector
from pointdet.models.heads import CenterNetHead
from pointdet.models.necks import DeconvUpsampler, DLAUpsampler


def build_model(config: ModelConfig, num_classes: int) -> Detector:
    """CenterNet with the configured backbone: ResNet + DCN deconv up-sampler, or DLA-34 + deformable DLA-up."""
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
    head = CenterNetHead(
        neck.out_channels,
        num_classes,
        head_conv=config.head_conv or default_head_conv,
        stride=neck.stride,
        size_weight=config.size_weight,
        offset_weight=config.offset_weight,
        min_overlap=config.min_overlap,
        radius_mode=config.radius_mode,
    )
    return Detector(backbone, neck, head)
