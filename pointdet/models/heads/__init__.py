"""Task heads: ``forward`` returns raw maps, ``loss`` and ``decode`` consume them."""

from pointdet.models.heads.centernet import CenterNetHead, CenterNetOutputs

__all__ = ["CenterNetHead", "CenterNetOutputs"]
