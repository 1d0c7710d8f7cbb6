"""Test-side statements of what the official CenterNet code computes, written from reading it (never run here:
it needs PyTorch 0.4 and a compiled DCNv2). Sources: xingyizhou/CenterNet@4c50fd3,
``src/lib/models/networks/DCNv2/dcn_v2.py`` + ``src/cuda/dcn_v2_im2col_cuda.cu`` and ``pose_dla_dcn.py``.

- DCNv2 (class ``DCN``): ``conv_offset_mask`` (3x3, 27 channels for a 3x3 kernel) is chunked in three along the
  channels, ``o1, o2, m``; offset = cat(o1, o2), mask = sigmoid(m). In the im2col kernel, offset channel
  ``2k`` is the row (y) shift and ``2k + 1`` the column (x) shift of kernel point ``k = i * kw + j``, mask channel
  ``k`` its modulation; a sample at (h, w) is zero unless -1 < h < H and -1 < w < W, and each of its four bilinear
  corners counts only where it lies inside the map. The layer adds its bias to every output.
- DLA ``Tree``: every node with ``in != out`` channels holds a ``project`` (1x1 conv + BN) and computes it on its
  (down-sampled) input; a node of two or more levels then calls its first sub-tree, which computes its own
  projection again and ignores the residual passed in, so the outer node's projection never reaches the output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def dcnv2_reference(x: Tensor, offset_mask: Tensor, weight: Tensor, bias: Tensor, padding: int = 1) -> Tensor:
    """DCNv2's forward by loops over output pixels and kernel points (stride 1, dilation 1, one deformable group).

    Args:
        x: (B, D_in, H, W).
        offset_mask: (B, 3*k*k, H, W) the output of ``conv_offset_mask``.
        weight: (D_out, D_in, k, k); bias: (D_out,).
    """
    batch, channels, height, width = x.shape
    kernel = weight.shape[-1]
    points = kernel * kernel
    o1, o2, m = offset_mask.chunk(3, dim=1)
    offset, mask = torch.cat([o1, o2], 1), m.sigmoid()
    out_h, out_w = offset_mask.shape[-2:]
    columns = torch.zeros(batch, channels, points, out_h, out_w, dtype=x.dtype)
    for b in range(batch):
        for y in range(out_h):
            for x_col in range(out_w):
                for i in range(kernel):
                    for j in range(kernel):
                        k = i * kernel + j
                        h = y - padding + i + offset[b, 2 * k, y, x_col].item()
                        w = x_col - padding + j + offset[b, 2 * k + 1, y, x_col].item()
                        value = _bilinear(x[b], h, w) if -1 < h < height and -1 < w < width else 0.0
                        columns[b, :, k, y, x_col] = value * mask[b, k, y, x_col]
    out = torch.einsum("bckhw,ock->bohw", columns, weight.reshape(len(weight), channels, points))
    return out + bias.view(1, -1, 1, 1)


def _bilinear(image: Tensor, h: float, w: float) -> Tensor:
    """(C,) value of a (C, H, W) map at (h, w); corners outside the map count as zero."""
    height, width = image.shape[-2:]
    h_low, w_low = math.floor(h), math.floor(w)
    lh, lw = h - h_low, w - w_low
    value = torch.zeros(image.shape[0], dtype=image.dtype)
    for row, col, factor in (
        (h_low, w_low, (1 - lh) * (1 - lw)),
        (h_low, w_low + 1, (1 - lh) * lw),
        (h_low + 1, w_low, lh * (1 - lw)),
        (h_low + 1, w_low + 1, lh * lw),
    ):
        if 0 <= row < height and 0 <= col < width:
            value = value + factor * image[:, row, col]
    return value
