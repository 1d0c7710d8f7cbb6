"""Modulated deformable convolution (DCNv2) (METHODS.md §1.9).

Two equivalent implementations (equal to 1e-14 in float64, tested):
- ``torchvision.ops.deform_conv2d``, used on CUDA;
- ``deform_conv2d_sampled``: bilinear sampling with ``F.grid_sample`` followed by one matmul (the
  "gather-then-matmul" form of METHODS.md §1.9). Measured on the 2-core CPU (batch 32, forward+backward):
  7-8x faster than torchvision's CPU kernel (0.16 s vs 1.36 s at 128 channels, 16x16), which is what makes
  the default CPU training fit in minutes; it is also made of standard ops, so it exports to ONNX.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from pointdet.ops.constants import cached_constant


def deform_conv2d_sampled(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int,
    padding: int,
    dilation: int,
    mask: Tensor | None,
    scale: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """Deformable convolution with torchvision's semantics, built from ``grid_sample`` and ``einsum``.

    With ``scale`` != 1 it is LSNet's pyramid DCN (METHODS.md §1.9): every sampling position of the output grid
    (kernel grid plus offset, in the output's units) is multiplied by ``scale``, so ``x`` may be a map of another
    pyramid level (``scale = (H_x / H_out, W_x / W_out)``) read at the same image locations; the output keeps the
    offset's resolution.

    Args:
        x: (B, D_in, H, W).
        offset: (B, 2*k*k, H', W') per kernel point ``(dy, dx)``, kernel points in row-major order.
        weight: (D_out, D_in / G, k, k): G groups of channels (a grouped convolution, as ResNeXt's) when
            D_in / G < D_in; every group samples at the same positions (one offset group).
        bias: (D_out,) or None.
        stride, padding, dilation: as ``nn.Conv2d`` (square).
        mask: (B, k*k, H', W') modulation, or None for DCNv1.
        scale: ``(scale_y, scale_x)`` from the output grid's units to ``x``'s.

    Returns:
        (B, D_out, H', W').
    """
    batch, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = offset.shape[-2:]
    points = kernel_h * kernel_w
    key = ("dcn_grid", kernel_h, kernel_w, out_h, out_w, stride, padding, dilation, str(x.device), x.dtype)
    grid_y, grid_x = cached_constant(
        key, lambda: _kernel_grid(kernel_h, kernel_w, out_h, out_w, stride, padding, dilation, x)
    )
    offset = offset.view(batch, points, 2, out_h, out_w)
    # Scaled unconditionally: a trace (the ONNX export) at a size where the scale is 1 (two 1 x 1 levels) must still
    # record the product, which other input sizes need.
    sample_y = (grid_y + offset[:, :, 0]) * scale[0]  # (B, k*k, H', W') pixel coordinates of x
    sample_x = (grid_x + offset[:, :, 1]) * scale[1]
    # Pixel index u maps to normalised (2u + 1) / size - 1 with align_corners=False; zero padding outside,
    # exactly torchvision's bilinear rule.
    grid = torch.stack([(2 * sample_x + 1) / width - 1, (2 * sample_y + 1) / height - 1], dim=-1)
    sampled = F.grid_sample(
        x, grid.view(batch, points * out_h, out_w, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    sampled = sampled.view(batch, channels, points, out_h, out_w)
    if mask is not None:
        sampled = sampled * mask.view(batch, 1, points, out_h, out_w)
    groups = channels // weight.shape[1]
    sampled = sampled.view(batch, groups, channels // groups, points, out_h, out_w)
    grouped_weight = weight.view(groups, out_channels // groups, channels // groups, points)
    out = torch.einsum("bgckhw,gock->bgohw", sampled, grouped_weight).reshape(batch, out_channels, out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _kernel_grid(
    kernel_h: int, kernel_w: int, out_h: int, out_w: int, stride: int, padding: int, dilation: int, like: Tensor
) -> tuple[Tensor, Tensor]:
    """(k*k, H', W') y and x input coordinates of every kernel point over the output grid, before the offsets."""
    points = kernel_h * kernel_w
    steps_y = torch.arange(kernel_h, device=like.device, dtype=like.dtype) * dilation
    steps_x = torch.arange(kernel_w, device=like.device, dtype=like.dtype) * dilation
    kernel_y = steps_y.repeat_interleave(kernel_w).view(points, 1, 1)
    kernel_x = steps_x.repeat(kernel_h).view(points, 1, 1)
    base_y = torch.arange(out_h, device=like.device, dtype=like.dtype).view(1, out_h, 1) * stride - padding
    base_x = torch.arange(out_w, device=like.device, dtype=like.dtype).view(1, 1, out_w) * stride - padding
    return base_y + kernel_y, base_x + kernel_x


class ModulatedDeformConv2d(nn.Module):
    """DCNv2: a zero-initialised conv predicts offsets and a sigmoid mask, so it starts as a plain convolution
    scaled by sigmoid(0) = 0.5 (as mmcv's ModulatedDeformConv2dPack and CenterNet's DCNv2).

    Args:
        in_channels: input channels D_in.
        out_channels: output channels D_out.
        kernel_size: square kernel size k.
        stride, padding, dilation: as ``nn.Conv2d``.
        bias: add a learned bias.
        groups: groups of channels of the convolution (its weight is (D_out, D_in / groups, k, k)); the offsets and
            the mask are shared by all groups, as mmcv's ``ModulatedDeformConv2dPack`` with ``deform_groups=1``.
        implementation: ``auto`` (torchvision on CUDA, sampling elsewhere), ``torchvision`` or ``sampled``.

    Shapes:
        input (B, D_in, H, W) -> output (B, D_out, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        bias: bool = True,
        groups: int = 1,
        implementation: Literal["auto", "torchvision", "sampled"] = "auto",
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.implementation = implementation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        num_points = kernel_size * kernel_size
        self.offset_mask = nn.Conv2d(in_channels, 3 * num_points, kernel_size, stride, padding, dilation)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset_mask = self.offset_mask(x)
        num_points = offset_mask.shape[1] // 3
        offset, mask_logits = offset_mask.split([2 * num_points, num_points], dim=1)
        mask = mask_logits.sigmoid()
        return deform_conv(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask, self.implementation
        )


def deform_conv(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
    mask: Tensor | None = None,
    implementation: Literal["auto", "torchvision", "sampled"] = "auto",
    scale: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """Deformable convolution (DCNv1 without ``mask``, DCNv2 with it) by ``torchvision.ops.deform_conv2d`` on
    CUDA and ``deform_conv2d_sampled`` elsewhere (``implementation="auto"``); shapes as ``deform_conv2d_sampled``.
    A pyramid DCN (``scale`` != 1) always samples: torchvision's output has its input's resolution."""
    if scale != (1.0, 1.0):
        if implementation == "torchvision":
            raise ValueError(f"torchvision's deform_conv2d cannot read another resolution (scale {scale})")
        implementation = "sampled"
    use_torchvision = implementation == "torchvision" or (implementation == "auto" and x.is_cuda)
    if use_torchvision:
        # Under autocast torchvision runs deform_conv2d in float32 (its registered autocast rule).
        return deform_conv2d(x, offset, weight, bias, (stride, stride), (padding, padding), (dilation, dilation), mask)
    dtype = x.dtype
    return deform_conv2d_sampled(
        x,
        offset.to(dtype),
        weight.to(dtype),
        None if bias is None else bias.to(dtype),
        stride,
        padding,
        dilation,
        None if mask is None else mask.to(dtype),
        scale,
    )
