"""Pieces shared by the up-sampling necks: DCNv2 + BN + ReLU, and bilinear-initialised transposed convs."""

from __future__ import annotations

import math

import torch
from torch import nn

from pointdet.ops.dcn import ModulatedDeformConv2d
from pointdet.ops.layers import BN_MOMENTUM


def deform_conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 DCNv2 + BN + ReLU.

    The DCN keeps a bias although BN follows, because CenterNet's DCNv2 layer always has one: the official
    checkpoints then load one-to-one (``pointdet convert``). Checkpoints of config version < 3 had none; they load
    with zero biases (``engine.checkpoint.model_state``), which computes exactly what they computed.
    """
    return nn.Sequential(
        ModulatedDeformConv2d(in_channels, out_channels, 3, padding=1, bias=True),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
    )


def bilinear_upsampling_(deconv: nn.ConvTranspose2d) -> nn.ConvTranspose2d:
    """Initialise a transposed conv as channel-wise bilinear up-sampling (channel i -> channel i).

    Depthwise convs (DLA-up) get the bilinear filter in every group, as in the reference. For full
    convs the reference's ``fill_up_weights`` writes the filter into ``w[c, 0]`` only and leaves the rest
    random, which feeds all inputs into output 0; we use the identity mapping (zeros off the diagonal)
    instead, which is what "bilinear initialisation" means and trains faster from scratch.
    """
    kernel = deconv.weight.shape[-1]
    factor = math.ceil(kernel / 2)
    center = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    steps = torch.arange(kernel, dtype=torch.float32)
    profile = 1 - (steps / factor - center).abs()
    bilinear = profile[:, None] * profile[None, :]
    with torch.no_grad():
        if deconv.weight.shape[1] == 1:  # depthwise: (C, 1, k, k)
            deconv.weight.copy_(bilinear.expand_as(deconv.weight))
        else:  # (C_in, C_out, k, k)
            deconv.weight.zero_()
            channels = torch.arange(min(deconv.weight.shape[:2]))
            deconv.weight[channels, channels] = bilinear
    return deconv
