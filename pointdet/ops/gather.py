"""Reading dense maps at flat positions (object slots, top-K peaks)."""

from __future__ import annotations

from torch import Tensor


def gather_at(maps: Tensor, flat_index: Tensor) -> Tensor:
    """Values of ``maps`` (B, D, H, W) at positions ``flat_index`` (B, K) -> (B, K, D)."""
    batch, channels = maps.shape[:2]
    flat = maps.reshape(batch, channels, -1)
    return flat.gather(2, flat_index.unsqueeze(1).expand(-1, channels, -1)).transpose(1, 2)
