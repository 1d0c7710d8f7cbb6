"""CenterNet's ResNet up-sampler (METHODS.md §1.13, "ResNet-DCN + deconv"; S:002 §5).

Three stages of [3x3 DCNv2 -> BN -> ReLU -> 4x4 stride-2 transposed conv (bilinear init) -> BN -> ReLU]
take C5 (stride 32) to stride 4. Verified against xingyizhou/CenterNet ``networks/resnet_dcn.py``. With
``deformable=False`` the 3x3 convs are plain convs (ours, not an official variant): the same layout at a
fraction of the CPU cost, for fine-tuning pretrained backbones on a CPU.

With ``skip_channels`` each stage also adds a lateral 3x3 conv + BN of the backbone map at its output stride
(16, 8, 4) before its last ReLU (ours, after TTFNet's shortcut connections, Liu et al. 2020): the official
up-sampler sees only C5, where an object of 8-30 px is at most one cell, and fine-tuned on little data it does not
learn to place small objects (docs/real_photos.md, "CenterNet's up-sampler takes skips").
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pointdet.models.necks.blocks import bilinear_upsampling_, deform_conv_bn_relu
from pointdet.ops.layers import BN_MOMENTUM, conv_bn_relu
from pointdet.structures import FeatureShape

_LAYERS_PER_STAGE = 4  # 3x3 conv block, transposed conv, BN, ReLU


class DeconvUpsampler(nn.Module):
    """C5 -> stride-4 map through three DCN + transposed-conv stages, optionally with skips from C4, C3, C2.

    Args:
        in_channels: channels of the last backbone map (512 for ResNet-18, 2048 for ResNet-50/101).
        channels: output channels of the three stages.
        deformable: DCNv2 3x3 convs (the official network); False: plain 3x3 convs.
        skip_channels: channels of the backbone maps at strides 16, 8 and 4, one per stage, for the lateral skips;
            None: no skips (the official network).
        skip_init: initial BN scale of the skips: 0 starts as the official up-sampler and learns how much of the
            finer maps to add, 1 is BatchNorm's usual start.

    Shapes:
        backbone maps, the last (B, in_channels, H/32, W/32) and with skips the ones at strides 16, 8, 4 the
        ``len(skip_channels) + 1`` before it -> [(B, channels[-1], H/4, W/4)].
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (256, 128, 64),
        deformable: bool = True,
        skip_channels: Sequence[int] | None = None,
        skip_init: float = 0.0,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        for out_channels in channels:
            up = nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1, bias=False)
            if deformable:
                conv = deform_conv_bn_relu(in_channels, out_channels)
            else:
                conv = nn.Sequential(*conv_bn_relu(in_channels, out_channels))
            stages += [
                conv,
                bilinear_upsampling_(up),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        self.layers = nn.Sequential(*stages)
        self.skips = None
        if skip_channels is not None:
            self.skips = nn.ModuleList(
                _lateral(skip, out, skip_init) for skip, out in zip(skip_channels, channels, strict=True)
            )
        self.feature_shapes = (FeatureShape("up4", channels[-1], 4),)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if self.skips is None:
            return [self.layers(features[-1])]
        x = features[-1]
        laterals = features[-1 - len(self.skips) : -1][::-1]  # strides 16, 8, 4
        for i, (skip, lateral) in enumerate(zip(self.skips, laterals, strict=True)):
            conv, up, norm, relu = self.layers[_LAYERS_PER_STAGE * i : _LAYERS_PER_STAGE * (i + 1)]
            x = relu(norm(up(conv(x))) + skip(lateral))
        return [x]


def _lateral(in_channels: int, out_channels: int, scale: float) -> nn.Sequential:
    """A skip's 3x3 conv + BN, the BN scale starting at ``scale`` (the ReLU is the stage's, after the sum)."""
    conv, norm, _ = conv_bn_relu(in_channels, out_channels)
    nn.init.constant_(norm.weight, scale)
    return nn.Sequential(conv, norm)
