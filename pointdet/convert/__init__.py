"""Official model-zoo checkpoints as pointdet checkpoints (``pointdet convert``)."""

from pointdet.convert.centernet import ARCHITECTURES, ConversionError, convert_centernet

__all__ = ["ARCHITECTURES", "ConversionError", "convert_centernet"]
