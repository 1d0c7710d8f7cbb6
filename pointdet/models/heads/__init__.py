"""Task heads: ``forward`` returns raw maps, ``loss`` and ``decode`` consume them."""

from pointdet.models.heads.centernet import CenterNetHead, CenterNetOutputs
from pointdet.models.heads.mono3d import Mono3DHead, Mono3DOutputs
from pointdet.models.heads.pose import PoseHead, PoseOutputs

__all__ = ["CenterNetHead", "CenterNetOutputs", "Mono3DHead", "Mono3DOutputs", "PoseHead", "PoseOutputs"]
