"""Runs stopped in every way and continued with ``--resume`` end exactly as an uninterrupted run: every tensor of
``last.pt`` ``torch.equal``, the same metrics history and final metrics.

Real processes and real signals: the child (``interrupted_child.py``) only waits at the chosen point, so that the
signal lands there. 16 images in batches of 4, 2 epochs (8 steps), an evaluation after each epoch.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from pointdet.engine.checkpoint import load_checkpoint

from .helpers import child_output, launch_child, paused_child, tiny_data_overrides


def _train_args(shapes, run_dir: Path, *extra: str) -> list[str]:
    settings = ["optim.batch_size=4", "optim.base_batch=4", "optim.epochs=2", "optim.lr_steps=[1]", "eval.every=1"]
    common = ["eval.batch_size=8", "device=cpu", "num_visualizations=0", f"run_dir={run_dir}"]
    common.append("model.backbone_weights=null")  # a child process: no ImageNet file (tests/conftest.py)
    return ["train", "centernet_r18", *tiny_data_overrides(shapes), *settings, *common, *extra]


def _run(args: list[str], logs: Path) -> str:
    process, _ = launch_child(args, logs)
    assert process.wait(timeout=300) == 0, child_output(logs)
    return child_output(logs)


def _stop(args: list[str], logs: Path, pause: str, sig: signal.Signals) -> tuple[int, str]:
    """Run until the child waits at ``pause``, send ``sig``, and return its exit status and output."""
    process = paused_child(args, logs, pause)
    process.send_signal(sig)
    return process.wait(timeout=300), child_output(logs)


@pytest.fixture(scope="module")
def straight(tiny_shapes, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("straight") / "run"
    _run(_train_args(tiny_shapes, run), run.parent / "log")
    return run


def _assert_same_run(run: Path, straight: Path) -> None:
    got, want = load_checkpoint(run / "last.pt"), load_checkpoint(straight / "last.pt")
    assert (got["epoch"], got["step_in_epoch"], got["global_step"]) == (want["epoch"], 0, want["global_step"])
    assert got["model"].keys() == want["model"].keys()
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    for index, state in want["optimizer"]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(got["optimizer"]["state"][index][name], tensor), (index, name)
    got_metrics, want_metrics = (json.loads((r / "metrics.json").read_text()) for r in (run, straight))
    assert [h["step"] for h in want_metrics["history"]] == [4, 8]
    assert got_metrics["history"] == want_metrics["history"]
    assert got_metrics["final"] == want_metrics["final"] == want_metrics["history"][-1]["metrics"]


def test_ctrl_c_mid_step_then_resume_is_exact(tiny_shapes, tmp_path, straight):
    run = tmp_path / "run"
    # Ctrl-C lands inside step 3 (mid-epoch 1), after its forward pass has updated BatchNorm's statistics.
    status, output = _stop(_train_args(tiny_shapes, run), tmp_path / "first", "step:3", signal.SIGINT)
    assert status == 130, output
    assert "Ctrl-C: stopping after this step" in output
    assert f"stopped after step 3, saved in {run / 'last.pt'}; continue with: pointdet train --resume {run}" in output
    assert "Traceback" not in output
    state = load_checkpoint(run / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    _run(["train", "--resume", str(run)], tmp_path / "resumed")
    _assert_same_run(run, straight)


def test_sigkill_during_the_last_evaluation_then_resume_evaluates_it(tiny_shapes, tmp_path, straight):
    run = tmp_path / "run"
    status, output = _stop(_train_args(tiny_shapes, run), tmp_path / "first", "eval:2", signal.SIGKILL)
    assert status == -signal.SIGKILL, output
    state = load_checkpoint(run / "last.pt")
    assert (state["global_step"], state["eval_due"]) == (8, True)
    assert not (run / "metrics.json").exists()
    output = _run(["train", "--resume", str(run)], tmp_path / "resumed")
    assert "the evaluation of step 8 was interrupted: running it first" in output
    _assert_same_run(run, straight)  # the final metrics are the last epoch's, recomputed


def test_sigkill_mid_save_and_mid_step_then_resume_is_exact(tiny_shapes, tmp_path, straight):
    run = tmp_path / "run"
    args = _train_args(tiny_shapes, run, "checkpoint_every=2")
    # Killed while writing the step-2 checkpoint: its temporary file stays, last.pt does not exist yet.
    status, output = _stop(args, tmp_path / "first", "save:1", signal.SIGKILL)
    assert status == -signal.SIGKILL, output
    (temporary,) = run.glob(".last.pt.*")
    assert not (run / "last.pt").exists() and temporary.stat().st_size > 0
    # Started again from scratch, then killed inside step 6 (mid-epoch 2): last.pt holds step 4.
    status, output = _stop(args, tmp_path / "second", "step:6", signal.SIGKILL)
    assert status == -signal.SIGKILL, output
    assert "removed 1 half-written checkpoint file(s) left by a stopped save: .last.pt." in output
    assert not temporary.exists()
    assert load_checkpoint(run / "last.pt")["global_step"] == 4
    _run(["train", "--resume", str(run)], tmp_path / "resumed")
    _assert_same_run(run, straight)
