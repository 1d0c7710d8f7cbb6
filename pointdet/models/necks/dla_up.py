"""DLA-up with deformable aggregation nodes, CenterNet's DLA-34 neck (METHODS.md §1.13; S:002 Fig. 6).

Iterative deep aggregation (IDA) fuses levels 2-5 (strides 4-32) back to stride 4: every projection and
aggregation node is a 3x3 DCNv2 + BN + ReLU, every up-sampling a depthwise transposed conv with fixed
bilinear init. Verified against xingyizhou/CenterNet ``networks/pose_dla_dcn.py`` (DLAUp, IDAUp, DLASeg).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from pointdet.models.necks.blocks import bilinear_upsampling_, deform_conv_bn_relu
from pointdet.structures import FeatureShape


class IDAUp(nn.Module):
    """Fuse maps ``[start, end)`` of a list in place: each is projected, up-sampled and merged with its left
    neighbour, so the last entry ends up holding the aggregate at the resolution of ``start``.

    Args:
        channels: output channels of the fused maps.
        in_channels: channels of the maps being fused (the first is the anchor and is not projected).
        up_factors: resolution factor of each map relative to the anchor.
    """

    def __init__(self, channels: int, in_channels: Sequence[int], up_factors: Sequence[int]) -> None:
        super().__init__()
        self.projections = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        self.nodes = nn.ModuleList()
        for in_ch, factor in zip(in_channels[1:], up_factors[1:], strict=True):
            self.projections.append(deform_conv_bn_relu(in_ch, channels))
            up = nn.ConvTranspose2d(
                channels, channels, factor * 2, stride=factor, padding=factor // 2, groups=channels, bias=False
            )
            self.upsamplers.append(bilinear_upsampling_(up))
            self.nodes.append(deform_conv_bn_relu(channels, channels))

    def forward(self, layers: list[Tensor], start: int, end: int) -> None:
        for i in range(start + 1, end):
            j = i - start - 1
            layers[i] = self.nodes[j](self.upsamplers[j](self.projections[j](layers[i])) + layers[i - 1])


class DLAUpsampler(nn.Module):
    """DLA-up over backbone levels ``first_level..5`` followed by a final IDA to stride 4.

    Args:
        in_channels: channels of all six DLA levels.
        first_level: 2 for output stride 4.

    Shapes:
        six maps -> [(B, in_channels[first_level], H/4, W/4)].
    """

    def __init__(self, in_channels: Sequence[int], first_level: int = 2) -> None:
        super().__init__()
        self.first_level = first_level
        channels = list(in_channels[first_level:])
        scales = [2**i for i in range(len(channels))]
        running_in = list(channels)
        self.dla_up = nn.ModuleList()
        for i in range(len(channels) - 1):
            j = -i - 2
            self.dla_up.append(IDAUp(channels[j], running_in[j:], [s // scales[j] for s in scales[j:]]))
            scales[j + 1 :] = [scales[j]] * len(scales[j + 1 :])
            running_in[j + 1 :] = [channels[j]] * len(running_in[j + 1 :])
        # The final IDA fuses the three finest outputs of DLA-up (strides 4, 8, 16) to stride 4.
        self.ida_up = IDAUp(channels[0], channels[:-1], [2**i for i in range(len(channels) - 1)])
        self.feature_shapes = (FeatureShape(f"up{2**first_level}", channels[0], 2**first_level),)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        layers = list(features[self.first_level :])
        outputs = [layers[-1]]
        for i, ida in enumerate(self.dla_up):
            ida(layers, len(layers) - i - 2, len(layers))
            outputs.insert(0, layers[-1])
        fused = outputs[:-1]
        self.ida_up(fused, 0, len(fused))
        return [fused[-1]]
