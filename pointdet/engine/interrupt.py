"""Ctrl-C during training: stop at a step boundary, so that the saved state is one an uninterrupted run passes
through (a step cut in half has already moved BatchNorm's running statistics but not the step counter)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from pointdet.distributed import any_process, is_main_process


class StepBoundaryInterrupt:
    """SIGINT handler of a training run (a context manager; a no-op outside the main thread).

    Inside ``deferred()`` a first Ctrl-C only sets ``requested``: the loop finishes its step, saves and stops.
    A second Ctrl-C, or one outside ``deferred()`` (an evaluation, which a resumed run repeats), raises
    ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.requested, self._deferring, self._previous, self._installed = False, False, None, False

    def __enter__(self) -> StepBoundaryInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a first Ctrl-C waits for the next ``agreed()``."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def agreed(self) -> bool:
        """Whether any process was asked to stop (every process gets the same answer, so all stop together)."""
        self.requested = any_process(self.requested)
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested or not self._deferring:
            raise KeyboardInterrupt
        self.requested = True
        if is_main_process():
            tqdm.write("\nCtrl-C: stopping after this step and saving last.pt (Ctrl-C again stops at once)")
