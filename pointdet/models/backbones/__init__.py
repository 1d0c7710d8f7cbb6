"""Backbones return a list of feature maps, declare each in ``feature_shapes`` (name, channels, stride), and the
multiple their input sides must be in ``size_divisor``."""

from pointdet.models.backbones.dla import DLA34
from pointdet.models.backbones.hourglass import Hourglass, hourglass52, hourglass104, hourglass_small
from pointdet.models.backbones.resnet import ResNet
from pointdet.models.backbones.timm_backbone import TimmBackbone

__all__ = ["DLA34", "Hourglass", "ResNet", "TimmBackbone", "hourglass52", "hourglass104", "hourglass_small"]
