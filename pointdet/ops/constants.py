"""Constant tensors that depend only on shapes (prior grids, sampling grids), made once per shape and reused.

Rebuilding such a tensor costs a handful of aten operators (``arange``, ``meshgrid``, ``repeat``...) in every call,
which on a GPU are kernel launches for no new information. ``cached_constant`` keeps what ``make`` returns under a
key of plain Python values (shapes, strides, device, dtype) and the inference mode (a tensor made in inference
mode cannot enter autograd). Callers must not modify the returned tensors in place. While ``torch.compile``, a JIT
trace or the ONNX export traces, the tensors are made afresh: a cached tensor would enter the traced graph as a
constant of the traced size (an exported graph then gives wrong values at other sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

Constant = TypeVar("Constant")
MAX_ENTRIES = 256  # shapes kept; the cache starts over beyond (a model sees few input sizes)

_cache: dict[tuple, object] = {}


def cached_constant(key: tuple[Hashable, ...], make: Callable[[], Constant]) -> Constant:
    """``make()``, computed once per ``key`` (with the inference mode) and then returned as it is."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return make()  # traced: the ops that build it follow the input's size instead of one size baked in
    full_key = (*key, torch.is_inference_mode_enabled())
    if full_key not in _cache:
        if len(_cache) >= MAX_ENTRIES:
            _cache.clear()
        with torch.no_grad():
            _cache[full_key] = make()
    return _cache[full_key]
