"""Task heads: ``forward`` returns raw maps, ``loss`` and ``decode`` consume them."""

from pointdet.decoders.point_sets import RepPointsOutputs
from pointdet.models.heads.centernet import CenterNetHead, CenterNetOutputs
from pointdet.models.heads.corner import CornerHead
from pointdet.models.heads.lsnet import LSNetHead, LSNetOutputs
from pointdet.models.heads.mono3d import Mono3DHead, Mono3DOutputs
from pointdet.models.heads.pose import PoseHead, PoseOutputs
from pointdet.models.heads.reppoints import RepPointsHead
from pointdet.models.heads.stacked import StackedHead

__all__ = [
    "CenterNetHead",
    "CenterNetOutputs",
    "CornerHead",
    "LSNetHead",
    "LSNetOutputs",
    "Mono3DHead",
    "Mono3DOutputs",
    "PoseHead",
    "PoseOutputs",
    "RepPointsHead",
    "RepPointsOutputs",
    "StackedHead",
]
