"""One dense head per hourglass stack: CenterNet on Hourglass-104 ("Objects as Points" §5; METHODS.md CARD 2).

As the code (``large_hourglass.py``, ``trains/ctdet.py``): each stack has its own branches, every stack is
supervised during training with each loss term averaged over the stacks (``/ num_stacks``), and at inference
only the last stack's branches run (``model(images)[-1]``). The corner heads do the same inside ``CornerHead``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pointdet.structures import Instances


class StackedHead(nn.Module):
    """``heads[s]`` reads stack ``s``; outputs keep the type of one head's.

    In training the S stacks' outputs are concatenated along the batch (stack-major: ``S x B`` rows), at inference
    they are the last stack's alone (``B`` rows), so that decoders see the shapes of a single head; ``loss``
    splits them by the number of images.

    Args:
        heads: S heads of the same class, one per stack, each with ``forward([feature])`` and ``loss``.
    """

    def __init__(self, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a stacked head needs at least one head")
        self.stacks = nn.ModuleList(heads)
        self.Outputs = type(heads[-1]).Outputs

    def forward(self, features: list[Tensor]) -> NamedTuple:
        """S stack features (B, D, H, W) -> ``Outputs`` of (S x B) rows in training, of B rows (the last) otherwise."""
        if len(features) != len(self.stacks):
            raise ValueError(f"{len(self.stacks)} stacked heads got {len(features)} feature maps")
        used = range(len(features)) if self.training else [len(features) - 1]
        outputs = [self.stacks[s]([features[s]]) for s in used]
        if len(outputs) == 1:
            return outputs[0]
        return self.Outputs(*(torch.cat(maps, dim=0) for maps in zip(*outputs, strict=True)))

    def loss(self, outputs: NamedTuple, instances: list[Instances]) -> dict[str, Tensor]:
        """Each term averaged over the stacks present in ``outputs`` (the last ones: all in training)."""
        images = len(instances)
        count = outputs[0].shape[0] // images
        first = len(self.stacks) - count
        per_stack = [
            self.stacks[first + s].loss(self.Outputs(*(t[s * images : (s + 1) * images] for t in outputs)), instances)
            for s in range(count)
        ]
        return {name: sum(terms[name] for terms in per_stack) / count for name in per_stack[0]}
