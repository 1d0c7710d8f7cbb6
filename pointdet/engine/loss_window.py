"""The training losses of the last few steps, kept on the device and read by the host once per window.

Reading a loss (``.item()``, ``float()``, ``torch.isfinite(...)`` in an ``if``, a progress-bar postfix) makes the
host wait for the device to finish the step; done every step, it stops the host from queueing the next step's
kernels while the device runs this one. ``LossWindow`` keeps each step's loss terms as one detached tensor and
reads them all with one transfer when the trainer logs, saves or stops (every ``LOG_EVERY`` steps at most), so a
non-finite loss is still reported with the step and the terms where it first appeared.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pointdet.distributed import mean_over_processes


class LossWindow:
    """Loss terms of the steps since the last ``read``."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.steps: list[int] = []
        self.rows: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, losses: dict[str, Tensor]) -> None:
        """Keep the scalar ``losses`` of ``step`` (detached, on their device; no host sync)."""
        self.names = tuple(losses)
        self.steps.append(step)
        self.rows.append(torch.stack([value.detach().float() for value in losses.values()]))

    def read(self) -> dict[str, float]:
        """The terms of the last step kept, averaged over processes, after one host sync; empties the window.

        Raises:
            FloatingPointError: a step's total loss is not finite; the message names the first such step and its
                terms.
        """
        table = mean_over_processes(torch.stack(self.rows)).tolist()  # (steps, terms)
        steps, self.steps, self.rows = self.steps, [], []
        for step, row in zip(steps, table, strict=True):
            total = sum(row)
            if not math.isfinite(total):
                terms = dict(zip(self.names, row, strict=True))
                raise FloatingPointError(f"loss became {total} at step {step}: {terms}")
        return dict(zip(self.names, table[-1], strict=True))
