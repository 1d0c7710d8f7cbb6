"""Official model-zoo checkpoints as pointdet checkpoints (``pointdet convert``)."""

from pointdet.convert.centernet import ARCHITECTURES, convert_centernet
from pointdet.convert.common import ConversionError
from pointdet.convert.corners import FRAMEWORKS as CORNER_FRAMEWORKS
from pointdet.convert.corners import convert_corners
from pointdet.convert.lsnet import convert_lsnet

__all__ = [
    "ARCHITECTURES", "CORNER_FRAMEWORKS", "ConversionError", "convert_centernet", "convert_corners", "convert_lsnet",
]  # fmt: skip
