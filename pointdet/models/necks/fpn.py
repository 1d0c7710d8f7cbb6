"""Feature Pyramid Network (Lin et al., CVPR 2017, "Feature Pyramid Networks for Object Detection") as configured
by mmdetection for RepPoints v2 and LSNet (METHODS.md §1.13, "FPN P3-P7"), plus the P2-P6 variant of two-stage
detectors.

The lateral 1x1 convs, nearest top-down upsampling + add and 3x3 output convs are torchvision's
``FeaturePyramidNetwork``; the extra levels follow mmdetection ``mmdet/models/necks/fpn.py`` (v2.x):
``add_extra_convs="on_input"`` (P6 = 3x3 stride-2 conv on C5), ``relu_before_extra_convs=False`` (P7 = 3x3
stride-2 conv on P6 with no ReLU between, unlike torchvision's ``LastLevelP6P7``), the norm on every conv
(laterals and extra convs included, ``no_norm_on_lateral=False``) and no activation anywhere. P2-P6 takes P6 by
max-pooling P5 with kernel 1 and stride 2 (torchvision ``LastLevelMaxPool``, Detectron's FPN, mmdetection with
``add_extra_convs=False``).

Exact top-down addition needs input sides that are multiples of 32 (the detector zero-pads to the backbone's
``size_divisor``); other sizes still run, the coarser map being resized to the finer one's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool

from pointdet.structures import FeatureShape

# (levels, extra_from) -> how P6 (and P7) are made.
_SUPPORTED = {
    ((3, 7), "c5"): "P6 = conv(C5), P7 = conv(P6)",
    ((3, 7), "p5"): "P6 = conv(P5), P7 = conv(P6)",
    ((2, 6), "p5"): "P6 = max-pool(P5)",
}


class ExtraConvs(ExtraFPNBlock):
    """P6 = 3x3 stride-2 conv on C5 (or on P5), P7 = 3x3 stride-2 conv on P6, with no ReLU between.

    Args:
        in_channels: channels of the map P6 is computed from (C5's, or ``out_channels`` for P5).
        out_channels: D of P6 and P7.
        from_input: compute P6 from the last backbone map (C5) rather than the last pyramid output (P5).
        norm_layer: norm after each conv (the convs then have no bias), or None.

    Shapes:
        C5 (B, in_channels, H, W) -> P6 (B, D, ceil(H/2), ceil(W/2)) -> P7 (B, D, ceil(H/4), ceil(W/4)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        from_input: bool,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.from_input = from_input
        conv = partial(Conv2dNormActivation, kernel_size=3, stride=2, norm_layer=norm_layer, activation_layer=None)
        self.p6 = conv(in_channels, out_channels)
        self.p7 = conv(out_channels, out_channels)

    def forward(self, results: list[Tensor], inputs: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        """Append P6 and P7 to the pyramid outputs ``results`` (``inputs`` are the backbone maps it used)."""
        p6 = self.p6(inputs[-1] if self.from_input else results[-1])
        p7 = self.p7(p6)  # mmdetection's relu_before_extra_convs=False
        return [*results, p6, p7], [*names, "p6", "p7"]


class FPN(nn.Module):
    """Feature pyramid P3-P7 (RepPoints, LSNet) or P2-P6 (two-stage detectors) over a backbone's maps.

    Args:
        in_shapes: the backbone's ``feature_shapes``; the maps at strides 8, 16, 32 (and 4 for P2) are used, so
            a ResNet's C2 is skipped for P3-P7 (mmdetection's ``start_level=1``).
        out_channels: D of every pyramid level.
        levels: first and last pyramid level, (3, 7) or (2, 6).
        norm: ``gn`` puts GroupNorm(32 groups) after every conv (the RepPoints v2 / LSNet recipes), ``none``
            gives plain convs with bias.
        extra_from: with levels (3, 7), P6 is a 3x3 stride-2 conv on ``c5`` (mmdetection ``on_input``, the
            recipes) or on ``p5`` (``on_output``); levels (2, 6) need ``p5``: P6 is P5 max-pooled with stride 2.

    Shapes:
        list of backbone maps in ``in_shapes`` order -> [(B, D, ceil(H/s), ceil(W/s)) for s in the level strides]
        for an input image of H x W whose sides are multiples of 32.
    """

    def __init__(
        self,
        in_shapes: Sequence[FeatureShape],
        out_channels: int = 256,
        levels: tuple[int, int] = (3, 7),
        norm: Literal["gn", "none"] = "none",
        extra_from: Literal["c5", "p5"] = "c5",
    ) -> None:
        super().__init__()
        if (tuple(levels), extra_from) not in _SUPPORTED:
            choices = "; ".join(f"levels={lv}, extra_from={src!r} ({how})" for (lv, src), how in _SUPPORTED.items())
            raise ValueError(f"unsupported FPN levels={levels}, extra_from={extra_from!r}; supported: {choices}")
        if norm not in ("gn", "none"):
            raise ValueError(f"FPN norm must be 'gn' or 'none', got {norm!r}")
        first, last = levels
        index_by_stride = {shape.stride: index for index, shape in enumerate(in_shapes)}
        backbone_levels = range(first, 6)  # C<first>..C5
        missing = [2**level for level in backbone_levels if 2**level not in index_by_stride]
        if missing:
            strides = [shape.stride for shape in in_shapes]
            raise ValueError(f"FPN levels {levels} need backbone maps at strides {missing}; in_shapes has {strides}")
        self.num_inputs = len(in_shapes)
        self.input_indices = tuple(index_by_stride[2**level] for level in backbone_levels)
        in_channels = [in_shapes[index].channels for index in self.input_indices]
        norm_layer = partial(nn.GroupNorm, 32) if norm == "gn" else None
        extra: ExtraFPNBlock
        if last == 7:
            extra_in = in_channels[-1] if extra_from == "c5" else out_channels
            extra = ExtraConvs(extra_in, out_channels, from_input=extra_from == "c5", norm_layer=norm_layer)
        else:
            extra = LastLevelMaxPool()
        self.pyramid = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra, norm_layer=norm_layer)
        # mmdetection initialises FPN convs with xavier_uniform and zero bias (torchvision: kaiming_uniform a=1).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.feature_shapes = tuple(
            FeatureShape(f"p{level}", out_channels, 2**level) for level in range(first, last + 1)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Pyramid maps in level order (``feature_shapes``) from the backbone maps (``in_shapes`` order)."""
        if len(features) != self.num_inputs:
            raise ValueError(f"FPN expects {self.num_inputs} backbone maps, got {len(features)}")
        selected = {f"input{index}": features[index] for index in self.input_indices}
        return list(self.pyramid(selected).values())
