"""``python tests/interrupted_child.py ARGS...``: ``pointdet ARGS...`` that can wait at one chosen point for the
test to signal it (the interruption tests send real SIGINT / SIGKILL to real processes).

``POINTDET_TEST_PAUSE`` picks the point, ``POINTDET_TEST_MARKER`` is the file touched on arrival:
``step:N`` inside the N-th training step, after the forward pass (BatchNorm statistics already updated) and
before the backward pass and the optimizer step; ``eval:N`` at the start of the N-th evaluation; ``save:N`` in
the N-th save of ``last.pt``, once its temporary file is written and before it replaces ``last.pt``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _wait_for_signal() -> None:
    Path(os.environ["POINTDET_TEST_MARKER"]).touch()
    for _ in range(1200):  # SIGKILL ends the wait; after a SIGINT the step goes on once the handler has run
        handler = signal.getsignal(signal.SIGINT)
        if getattr(getattr(handler, "__self__", None), "requested", False):
            return
        time.sleep(0.05)
    raise TimeoutError("no signal came")


def _pause_at(point: str, count: int) -> None:
    import pointdet.engine.trainer as trainer
    from pointdet.engine import train_step

    calls = {"n": 0}

    def arrive() -> bool:
        calls["n"] += 1
        return calls["n"] == count

    if point == "step":
        forward = train_step.TrainStep.forward

        def paused_forward(self, images, instances):
            losses = forward(self, images, instances)
            if arrive():
                _wait_for_signal()
            return losses

        train_step.TrainStep.forward = paused_forward
    elif point == "eval":
        evaluate = trainer.evaluate_model

        def paused_evaluate(*args, **kwargs):
            if arrive():
                _wait_for_signal()
            return evaluate(*args, **kwargs)

        trainer.evaluate_model = paused_evaluate
    elif point == "save":
        replace = os.replace

        def paused_replace(source, target):
            if Path(target).name == "last.pt" and arrive():
                _wait_for_signal()
            return replace(source, target)

        os.replace = paused_replace
    else:
        raise ValueError(f"unknown pause point {point!r}")


if __name__ == "__main__":
    if os.environ.get("POINTDET_TEST_PAUSE"):
        name, number = os.environ["POINTDET_TEST_PAUSE"].split(":")
        _pause_at(name, int(number))
    from pointdet.cli import main

    main(sys.argv[1:])
