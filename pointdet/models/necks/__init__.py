"""Necks turn backbone features into the single stride-4 map CenterNet's heads read."""

from pointdet.models.necks.deconv import DeconvUpsampler
from pointdet.models.necks.dla_up import DLAUpsampler

__all__ = ["DLAUpsampler", "DeconvUpsampler"]
