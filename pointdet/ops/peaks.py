"""Heatmap peak extraction: 3x3 max-pool "NMS" followed by top-K (METHODS.md §1.11)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Peaks(NamedTuple):
    """Top-K peaks of a batch of heatmaps; every field is (B, K)."""

    scores: Tensor
    labels: Tensor
    ys: Tensor
    xs: Tensor
    flat_index: Tensor  # y * W + x, for gathering regression maps


def peak_topk(heatmap: Tensor, k: int = 100, kernel: int = 3) -> Peaks:
    """Keep local maxima of ``heatmap`` and return the K highest over all classes and positions.

    CenterNet takes a per-class top-K then a global top-K of the C*K candidates; the result equals a
    single top-K over the flattened ``C*H*W`` map (every global top-K element is in its class's top-K).

    Args:
        heatmap: (B, C, H, W) scores in [0, 1] (after sigmoid).
        k: number of peaks, clipped to C*H*W.
        kernel: max-pool window.

    Returns:
        ``Peaks`` with (B, K) tensors.
    """
    batch, _, height, width = heatmap.shape
    pooled = F.max_pool2d(heatmap, kernel, stride=1, padding=(kernel - 1) // 2)
    peaks = heatmap * (pooled == heatmap)
    k = min(k, peaks[0].numel())
    scores, index = peaks.reshape(batch, -1).topk(k)
    labels = index // (height * width)
    flat_index = index % (height * width)
    return Peaks(scores, labels, flat_index // width, flat_index % width, flat_index)


def channel_peak_topk(heatmap: Tensor, k: int = 100, kernel: int = 3) -> Peaks:
    """Like ``peak_topk`` but K peaks for every channel separately: fields are (B, C, K).

    Used for joint heatmaps, where each joint type keeps its own candidates (METHODS.md §2b(d) step 2).
    """
    batch, channels, height, width = heatmap.shape
    pooled = F.max_pool2d(heatmap, kernel, stride=1, padding=(kernel - 1) // 2)
    peaks = heatmap * (pooled == heatmap)
    k = min(k, height * width)
    scores, flat_index = peaks.reshape(batch, channels, -1).topk(k)
    labels = torch.arange(channels, device=heatmap.device).view(1, -1, 1).expand_as(flat_index)
    return Peaks(scores, labels, flat_index // width, flat_index % width, flat_index)
