"""CenterNet's ResNet up-sampler (METHODS.md §1.13, "ResNet-DCN + deconv"; S:002 §5).

Three stages of [3x3 DCNv2 -> BN -> ReLU -> 4x4 stride-2 transposed conv (bilinear init) -> BN -> ReLU]
take C5 (stride 32) to stride 4. Verified against xingyizhou/CenterNet ``networks/resnet_dcn.py``. With
``deformable=False`` the 3x3 convs are plain convs (ours, not an official variant): the same layout at a
fraction of the CPU cost, for fine-tuning pretrained backbones on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pointdet.models.necks.blocks import bilinear_upsampling_, deform_conv_bn_relu
from pointdet.ops.layers import BN_MOMENTUM, conv_bn_relu
from pointdet.structures import FeatureShape


class DeconvUpsampler(nn.Module):
    """C5 -> stride-4 map through three DCN + transposed-conv stages.

    Args:
        in_channels: channels of the last backbone map (512 for ResNet-18, 2048 for ResNet-50/101).
        channels: output channels of the three stages.
        deformable: DCNv2 3x3 convs (the official network); False: plain 3x3 convs.

    Shapes:
        list of backbone maps, last (B, in_channels, H/32, W/32) -> [(B, channels[-1], H/4, W/4)].
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (256, 128, 64), deformable: bool = True) -> None:
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
        self.feature_shapes = (FeatureShape("up4", channels[-1], 4),)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [self.layers(features[-1])]
