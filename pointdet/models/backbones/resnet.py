"""ResNet backbones with torchvision's definitions (He et al. 2016), returning C2..C5."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torchvision.models import resnet

from pointdet.models.backbones.weights import load_backbone_weights
from pointdet.structures import FeatureShape

_BUILDERS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}


class ResNet(nn.Module):
    """torchvision ResNet without its classifier.

    Args:
        depth: 18, 34, 50 or 101.
        weights: optional local torchvision/timm ImageNet checkpoint (``resnet18-f37072fd.pth`` etc.).

    Shapes:
        (B, 3, H, W) -> [C2, C3, C4, C5] at strides 4, 8, 16, 32.
    """

    def __init__(self, depth: int = 18, weights: str | Path | None = None) -> None:
        super().__init__()
        if depth not in _BUILDERS:
            raise ValueError(f"ResNet depth must be one of {sorted(_BUILDERS)}, got {depth}")
        net = _BUILDERS[depth](weights=None)
        if weights is not None:
            load_backbone_weights(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        width = 64 * (1 if depth < 50 else 4)
        self.feature_shapes = tuple(
            FeatureShape(f"c{level}", width * 2 ** (level - 2), 2**level) for level in range(2, 6)
        )
        self.size_divisor = 32

    def forward(self, x: Tensor) -> list[Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]
