"""A run folder belongs to one live run: a second training into it is refused naming the first one's process, a lock
left by a killed process never blocks, and generated run names never collide. Real processes and real signals."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime

import pytest

from pointdet.cli import main
from pointdet.data.coco import DatasetError
from pointdet.engine.checkpoint import load_checkpoint
from pointdet.engine.run_folder import LOCK_FILE, RunFolderError, lock_run_folder, new_run_folder
from pointdet.engine.trainer import Trainer

from .helpers import paused_child, tiny_config, tiny_data_overrides


def _train_args(shapes, *extra: str) -> list[str]:
    settings = ["optim.batch_size=4", "optim.epochs=1", "device=cpu", "num_visualizations=0"]
    return ["train", "centernet_r18", *tiny_data_overrides(shapes), *settings, "model.backbone_weights=null", *extra]


def test_a_live_run_folder_refuses_a_second_training_and_a_killed_one_does_not(tiny_shapes, tmp_path, capsys):
    run = tmp_path / "run"
    child = paused_child(_train_args(tiny_shapes, f"run_dir={run}", "checkpoint_every=1"), tmp_path / "child", "step:2")
    try:
        with pytest.raises(SystemExit) as caught:
            main(_train_args(tiny_shapes, f"run_dir={run}", "max_steps=1"))
        message = str(caught.value.code)
        assert message.startswith(f"error: {run} belongs to a run in progress (pid {child.pid} on host ")
        assert "interrupted_child.py train centernet_r18" in message and "\n" not in message
        with pytest.raises(SystemExit, match=f"pid {child.pid}"):  # resuming it is refused as well
            main(["train", "--resume", str(run)])
    finally:
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    assert (run / LOCK_FILE).is_file()  # the dead run's lock file stays, and blocks nobody
    main(["train", "--resume", str(run), "max_steps=2"])
    assert f"run folder: {run}\n" in capsys.readouterr().out
    assert load_checkpoint(run / "last.pt")["global_step"] == 2


def test_the_lock_names_this_very_process_and_is_released_by_the_end_of_a_run(tiny_shapes, tmp_path):
    held = lock_run_folder(tmp_path / "held")
    with pytest.raises(RunFolderError, match=rf"\(pid {os.getpid()} \(this very process"):
        lock_run_folder(tmp_path / "held")
    held.release()
    lock_run_folder(tmp_path / "held").release()
    config = replace(tiny_config(tiny_shapes, tmp_path / "run", epochs=1), max_steps=1, num_visualizations=0)
    Trainer(config).train()
    Trainer(replace(config, max_steps=2), resume=tmp_path / "run").train()  # the first run let the folder go


def test_generated_run_folders_never_collide(tmp_path):
    now = datetime(2025, 1, 2, 3, 4, 5)
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: new_run_folder(tmp_path / "runs", "shapes", now), range(8)))
    expected = ["shapes-20250102-030405"] + [f"shapes-20250102-030405-{n}" for n in range(2, 9)]
    assert sorted(folder.name for folder in folders) == sorted(expected)
    assert all(folder.is_dir() for folder in folders)


def test_a_run_failing_at_start_leaves_no_empty_folder(tiny_shapes, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    config = tiny_config(tiny_shapes, tmp_path / "runs" / "new")
    config = replace(config, data=replace(config.data, val_json=str(broken)))
    with pytest.raises(DatasetError):
        Trainer(config)
    assert not (tmp_path / "runs" / "new").exists()
    with pytest.raises(DatasetError):  # a generated name too
        Trainer(replace(config, run_dir=None, out_dir=str(tmp_path / "generated")))
    assert list((tmp_path / "generated").iterdir()) == []


def test_an_unwritable_run_folder_is_one_sentence(tiny_shapes, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match=r"^error: cannot create the run folder .*file/runs/centernet_r18-.*\(Not a"):
        main(_train_args(tiny_shapes, f"out_dir={tmp_path / 'file' / 'runs'}"))
    with pytest.raises(SystemExit, match=r"^error: cannot use .*file as a run folder: it is a file$"):
        main(_train_args(tiny_shapes, f"run_dir={tmp_path / 'file'}"))


def test_resume_with_another_preset_named_is_refused(tiny_shapes, tmp_path):
    run = tmp_path / "run"
    main(_train_args(tiny_shapes, f"run_dir={run}", "max_steps=1"))
    with pytest.raises(SystemExit, match="config error: --resume .* own config \\(centernet_r18\\); the preset "):
        main(["train", "reppoints_shapes", "--resume", str(run)])
    main(["train", "centernet_r18", "max_steps=2", "--resume", str(run)])  # its own preset may be named
    assert load_checkpoint(run / "last.pt")["global_step"] == 2
