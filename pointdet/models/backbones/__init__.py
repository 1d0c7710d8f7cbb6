"""Backbones return a list of feature maps and declare ``out_channels`` and ``strides`` for each."""

from pointdet.models.backbones.dla import DLA34
from pointdet.models.backbones.hourglass import Hourglass, hourglass52, hourglass104, hourglass_small
from pointdet.models.backbones.resnet import ResNet

__all__ = ["DLA34", "Hourglass", "ResNet", "hourglass52", "hourglass104", "hourglass_small"]
