"""ResNet backbones with torchvision's definitions (He et al., CVPR 2016, "Deep Residual Learning for Image
Recognition"), returning C2..C5, with the detection options of mmdetection's ``ResNet`` (METHODS.md §1.13):
frozen early stages, frozen batch norm and DCNv2 (METHODS.md §1.9) in the 3x3 convs of chosen stages.

Options follow mmdetection ``mmdet/models/backbones/resnet.py`` (``frozen_stages``, ``stage_with_dcn``) and
torchvision ``FrozenBatchNorm2d``; with the defaults the module and its state_dict keys are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.ops import FrozenBatchNorm2d

from pointdet.models.backbones.weights import IMAGENET, imagenet_weights_file, load_backbone_weights
from pointdet.ops.dcn import ModulatedDeformConv2d
from pointdet.ops.frozen_norm import cache_frozen_norms
from pointdet.structures import FeatureShape

_BUILDERS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}
# ``model.backbone`` names -> ``ResNet`` arguments: ResNeXt-101 64x4d is ResNet-101 with 64 groups of 4 channels in
# its 3x3 convs (torchvision's ``resnext101_64x4d``, mmdetection's ``ResNeXt(depth=101, groups=64, base_width=4)``).
RESNETS: dict[str, dict[str, int]] = {
    **{f"resnet{depth}": {"depth": depth} for depth in _BUILDERS},
    "resnext101_64x4d": {"depth": 101, "groups": 64, "width_per_group": 4},
}


def _deformable_like(conv: nn.Conv2d) -> ModulatedDeformConv2d:
    """A DCNv2 with ``conv``'s geometry that reuses ``conv.weight`` (the same Parameter, so the key
    ``...conv2.weight`` and any loaded ImageNet values are kept); its offset/mask conv is new and zero."""
    geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    if any(height != width for height, width in geometry):
        raise ValueError(f"DCN replaces square convs only, got {conv}")
    deformable = ModulatedDeformConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        stride=conv.stride[0],
        padding=conv.padding[0],
        dilation=conv.dilation[0],
        bias=conv.bias is not None,
        groups=conv.groups,
    )
    deformable.weight = conv.weight
    if conv.bias is not None:
        deformable.bias = conv.bias
    return deformable


class StagedBackbone(nn.Module):
    """A stem and four stages ``layer1``..``layer4`` returning C2..C5, the first ``frozen_stages`` kept fixed: what
    ``ResNet`` and ``backbones.res2net.Res2Net`` share. A subclass builds the modules, then calls ``_freeze``."""

    stem: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    layer4: nn.Module

    def _freeze(self, frozen_stages: int) -> None:
        self.frozen_stages = frozen_stages
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.train()

    def _stages(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def _frozen_modules(self) -> list[nn.Module]:
        return self._stages()[: self.frozen_stages + 1] if self.frozen_stages > 0 else []

    def train(self, mode: bool = True) -> StagedBackbone:
        """Set train/eval mode, keeping the frozen stages in eval mode (their batch-norm statistics fixed)."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]


class ResNet(StagedBackbone):
    """torchvision ResNet (or ResNeXt) without its classifier.

    Args:
        depth: 18, 34, 50 or 101.
        weights: optional local torchvision/timm ImageNet checkpoint (``resnet18-f37072fd.pth`` etc.), or
            ``imagenet`` for torchvision's ``IMAGENET1K_V1`` file from torch's cache (downloaded once).
        frozen_stages: 0 freezes nothing; n in 1..4 freezes the stem and ``layer1``..``layer<n>``: their
            parameters get ``requires_grad=False`` and their batch norms stay in eval mode even under
            ``train()`` (mmdetection's ``frozen_stages`` for n >= 1; the RepPoints/LSNet recipes use 1).
        norm: ``bn`` (``nn.BatchNorm2d``) or ``frozen_bn`` (``torchvision.ops.FrozenBatchNorm2d`` everywhere:
            fixed statistics and affine, same buffer names, no ``num_batches_tracked``).
        stride_in_1x1: put each stage's stride on its first block's 1x1 ``conv1`` instead of the 3x3 ``conv2``
            (the Caffe / Detectron ResNet of CPM R-CNN's release; torchvision and mmdetection's ``pytorch`` style
            stride the 3x3 conv, the default). The weights and their names are the same; the arithmetic differs.
        dcn_stages: per stage ``layer1``..``layer4``, replace the 3x3 ``conv2`` of every block by a DCNv2
            (``(False, True, True, True)`` for the "-DCN" models). At initialisation its offsets are 0 and its
            modulation is sigmoid(0) = 0.5, so each replaced conv outputs half the plain conv's response (as
            mmcv's ``ModulatedDeformConv2dPack`` and CenterNet's DCNv2 do). A grouped conv stays grouped.
        groups, width_per_group: ResNeXt's cardinality and channels per group in the bottlenecks' 3x3 convs
            (torchvision's arguments; 1 and 64 = ResNet).

    Shapes:
        (B, 3, H, W) -> [C2, C3, C4, C5] at strides 4, 8, 16, 32.
    """

    def __init__(
        self,
        depth: int = 18,
        weights: str | Path | None = None,
        *,
        frozen_stages: int = 0,
        norm: Literal["bn", "frozen_bn"] = "bn",
        dcn_stages: tuple[bool, bool, bool, bool] = (False, False, False, False),
        stride_in_1x1: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        if depth not in _BUILDERS:
            raise ValueError(f"ResNet depth must be one of {sorted(_BUILDERS)}, got {depth}")
        if not 0 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in 0..4, got {frozen_stages}")
        if norm not in ("bn", "frozen_bn"):
            raise ValueError(f"norm must be 'bn' or 'frozen_bn', got {norm!r}")
        if len(dcn_stages) != 4:
            raise ValueError(f"dcn_stages needs one flag per stage layer1..layer4, got {dcn_stages}")
        norm_layer = FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
        net = cache_frozen_norms(
            _BUILDERS[depth](weights=None, norm_layer=norm_layer, groups=groups, width_per_group=width_per_group)
        )
        if weights == IMAGENET:
            name = f"resnet{depth}" if groups == 1 else f"resnext{depth}_{groups}x{width_per_group}d"
            weights = imagenet_weights_file(name)
        if weights is not None:
            # Loaded before the DCN swap, so the file's conv2 weights land in the DCN weights; a frozen_bn
            # model has no num_batches_tracked buffers, so those keys of the file are not read.
            load_backbone_weights(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if stride_in_1x1:
            if depth < 50:
                raise ValueError(f"stride_in_1x1 applies to bottleneck ResNets (50, 101), got depth {depth}")
            for stage in self._stages()[2:]:
                stage[0].conv1.stride, stage[0].conv2.stride = stage[0].conv2.stride, (1, 1)
        for stage, deformable in zip(self._stages()[1:], dcn_stages, strict=True):
            if deformable:
                for block in stage:
                    block.conv2 = _deformable_like(block.conv2)
        self._freeze(frozen_stages)
        width = 64 * (1 if depth < 50 else 4)
        self.feature_shapes = tuple(
            FeatureShape(f"c{level}", width * 2 ** (level - 2), 2**level) for level in range(2, 6)
        )
        self.size_divisor = 32
