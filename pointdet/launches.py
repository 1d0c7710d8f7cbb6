"""Host-side cost of a call: the aten operators it dispatches and its host milliseconds.

On a GPU every aten operator that computes is (at least) one kernel launch, and at batch 1 the launches, not the
arithmetic, set the speed. Counting operators on the CPU at a tiny input size, where compute is negligible,
measures that overhead without a GPU: ``count_ops`` counts every operator a call dispatches below autograd
(backward included) through a ``TorchDispatchMode``. View operators (``view``, ``permute``, ``select``, ``detach``...)
launch no kernel but still cost host time; they are counted apart.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from torch.utils._python_dispatch import TorchDispatchMode


class _Counting(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.operators: Counter[str] = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.operators[str(func.overloadpacket)] += 1
        self.views += func.is_view
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class OpCount:
    """Attributes:
    operators: aten operators one call dispatched, views included.
    views: how many of them were view operators (no kernel).
    by_name: the count per operator name (``aten.add``...), largest first.
    """

    operators: int
    views: int
    by_name: dict[str, int]


@dataclass(frozen=True)
class HostCost:
    """``OpCount`` of one call and its host milliseconds: the least of several timed calls (made without counting),
    the figure least disturbed by other work on the machine."""

    ops: OpCount
    host_ms: float


def count_ops(fn: Callable[[], object]) -> OpCount:
    """The aten operators one call of ``fn`` dispatches."""
    mode = _Counting()
    with mode:
        fn()
    return OpCount(sum(mode.operators.values()), mode.views, dict(mode.operators.most_common()))


def host_cost(fn: Callable[[], object], warmup: int = 1, iters: int = 3) -> HostCost:
    """``count_ops`` of one call after ``warmup`` calls, and the least wall time of ``iters`` further calls."""
    for _ in range(warmup):
        fn()
    ops = count_ops(fn)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return HostCost(ops, round(1000 * min(times), 2))
