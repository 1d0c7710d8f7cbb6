"""Frozen BatchNorm whose scale and shift are computed once, not at every call.

torchvision's and timm's ``FrozenBatchNorm2d`` (timm's ``FrozenBatchNormAct2d`` also) recompute
``scale = weight * rsqrt(running_var + eps)`` and ``shift = bias - running_mean * scale`` from their fixed buffers
in every forward: 11 aten operators (4 reshapes, 7 kernels) per layer where 2 apply them, 700 per call of a
ResNet-50. ``cache_frozen_norms`` gives the frozen norms of a module a forward that reuses the scale and shift,
computed with the same operators (so the outputs are bitwise those of the original forward) and recomputed
whenever a buffer changes (``load_state_dict``, ``.to(...)``): the cache is keyed on the buffers' storage and
version counters. The modules keep their class hierarchy, attributes and state_dict keys.
"""

from __future__ import annotations

import functools
import sys

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d


def _scale_and_shift(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``(scale, shift)``, (1, C, 1, 1) each, exactly as torchvision's ``FrozenBatchNorm2d.forward`` computes them."""
    weight, bias = norm.weight.reshape(1, -1, 1, 1), norm.bias.reshape(1, -1, 1, 1)
    running_var, running_mean = norm.running_var.reshape(1, -1, 1, 1), norm.running_mean.reshape(1, -1, 1, 1)
    scale = weight * (running_var + norm.eps).rsqrt()
    return scale, bias - running_mean * scale


def cached_scale_and_shift(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``norm``'s ``(scale, shift)``, reused while its buffers, the autocast-free dtype and the inference mode stay
    the same (computed afresh while ``torch.compile`` traces, which folds them itself)."""
    if torch.compiler.is_compiling():
        return _scale_and_shift(norm)
    buffers = (norm.weight, norm.bias, norm.running_mean, norm.running_var)
    key = (*((t.data_ptr(), t._version, t.dtype) for t in buffers), torch.is_inference_mode_enabled())
    cached = norm.__dict__.get("_scale_and_shift")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, _scale_and_shift(norm))
        norm.__dict__["_scale_and_shift"] = cached
    return cached[1]


class CachedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` (also timm's) with its scale and shift cached."""

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = cached_scale_and_shift(self)
        return x * scale + shift


@functools.cache
def _timm_cached_classes() -> dict[type, type]:
    """timm's frozen norm with activation and its cached subclass (timm is imported only by models it builds)."""
    from timm.layers import FrozenBatchNormAct2d

    class CachedFrozenBatchNormAct2d(FrozenBatchNormAct2d):
        """timm's ``FrozenBatchNormAct2d`` (frozen BatchNorm, dropout, activation) with its scale and shift cached."""

        def forward(self, x: Tensor) -> Tensor:
            scale, shift = cached_scale_and_shift(self)
            return self.act(self.drop(x * scale + shift))

    return {FrozenBatchNormAct2d: CachedFrozenBatchNormAct2d}


def cache_frozen_norms(module: nn.Module) -> nn.Module:
    """Give every frozen BatchNorm of ``module`` (exactly torchvision's ``FrozenBatchNorm2d``, which timm also uses,
    or timm's ``FrozenBatchNormAct2d``) the cached forward, in place: its class becomes the subclass that overrides
    ``forward`` only. Returns ``module``."""
    cached_classes = {FrozenBatchNorm2d: CachedFrozenBatchNorm2d}
    if "timm" in sys.modules:
        cached_classes.update(_timm_cached_classes())
    for child in module.modules():
        cached = cached_classes.get(type(child))
        if cached is not None:
            child.__class__ = cached
    return module
