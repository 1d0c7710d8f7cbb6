"""Necks turn backbone features into the maps heads read; each declares them in ``feature_shapes``."""

from pointdet.models.necks.deconv import DeconvUpsampler
from pointdet.models.necks.dla_up import DLAUpsampler
from pointdet.models.necks.fpn import FPN

__all__ = ["FPN", "DLAUpsampler", "DeconvUpsampler"]
