"""The command line answers bad paths, bad numbers and a full disk with one sentence, before the work where it can,
and reads the same in every evaluation; what it lists (presets, help) is readable."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pointdet
from pointdet.api import as_image_tensor
from pointdet.cli import _first_sentence, main
from pointdet.configs import DEFAULT_PRESET, PRESETS
from pointdet.engine import checkpoint
from pointdet.engine.checkpoint import load_checkpoint, save_checkpoint
from pointdet.engine.output_paths import DiskFullError
from pointdet.engine.trainer import Trainer

from .helpers import tiny_config, tiny_data_overrides, untrained_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run(tiny_shapes, tmp_path) -> Path:
    """A run folder holding an untrained ``tiny_config`` model as last.pt only (as a run stopped before its first
    evaluation leaves it)."""
    untrained_checkpoint(tiny_shapes, tmp_path / "run" / "last.pt")
    return tmp_path / "run"


# ------------------------------------------------------------------------------------------------ output paths
def test_outputs_that_cannot_be_written_are_refused_before_the_work(run, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    cases = {
        ("export", "--out", "folder"): "--out {folder} is a folder; give a file name",
        ("export", "--out", "file/m.onnx"): "--out {file}/m.onnx: its folder {file} is a file, not a folder",
        ("export", "--out", "file/sub/m.onnx"): "--out {file}/sub/m.onnx: its folder {file}/sub cannot be written (",
        ("eval", "--results", "folder"): "--results {folder} is a folder; give a file name",
        ("eval", "--results", "file/r.json"): "--results {file}/r.json: its folder {file} is a file, not a folder",
        ("eval", "--plots", "file"): "--plots {file} is a file, not a folder",
        ("eval", "--plots", "file/plots"): "--plots {file}/plots cannot be written (Not a directory)",
    }
    for (command, option, target), expected in cases.items():
        with pytest.raises(SystemExit) as caught:
            main([command, "--weights", str(run / "last.pt"), option, str(tmp_path / target)])
        wanted = "error: " + expected.format(file=tmp_path / "file", folder=tmp_path / "folder")
        assert str(caught.value.code).startswith(wanted), (command, option, target, caught.value.code)
        assert "metrics of" not in capsys.readouterr().out  # refused before the evaluation


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_output_folder_is_refused(run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit, match=r"its folder .*locked cannot be written \(Permission denied\)"):
        main(["export", "--weights", str(run / "last.pt"), "--out", str(locked / "m.onnx")])


# ------------------------------------------------------------------------------------------------ full disk
class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails as a full disk does (``OSError`` ENOSPC)."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room, self.written = file, room, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.written + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def fileno(self) -> int:
        return self.file.fileno()


def _disk_full_after(monkeypatch, saves: int) -> None:
    """From the ``saves + 1``-th call on, ``torch.save`` writes into a disk with 4 kB left (torch's own writer, so
    its error is the real one: a ``RuntimeError`` raised while handling the ``OSError``)."""
    real_save, calls = torch.save, {"n": 0}

    def save(obj, file, *args, **kwargs):
        calls["n"] += 1
        target = file if calls["n"] <= saves else _FullDisk(file, 4096)
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"weights": torch.arange(10)}, path)
    before = path.read_bytes()
    _disk_full_after(monkeypatch, saves=0)
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint({"weights": torch.zeros(100_000)}, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not written, the disk holding {tmp_path} is full (No space left on device; ")
    assert message.endswith("; the previous last.pt is intact") and "MB free" in message
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_full_disk_during_training_is_one_sentence(tiny_shapes, tmp_path, monkeypatch):
    run = tmp_path / "run"
    settings = ["optim.batch_size=4", "optim.epochs=1", "device=cpu", "checkpoint_every=1", "max_steps=3"]
    settings.append("model.backbone_weights=null")  # no ImageNet file: the saves counted are the run's own
    _disk_full_after(monkeypatch, saves=1)  # last.pt of step 1 is written, that of step 2 meets the full disk
    with pytest.raises(SystemExit) as caught:
        main(["train", "centernet_r18", *tiny_data_overrides(tiny_shapes), *settings, f"run_dir={run}"])
    message = str(caught.value.code)
    assert message.startswith(f"error: {run / 'last.pt'}: not written, the disk holding {run} is full")
    assert message.endswith(f"the previous last.pt is intact. Free some space, then continue with: "
                            f"pointdet train --resume {run}")  # fmt: skip
    assert "\n" not in message and load_checkpoint(run / "last.pt")["global_step"] == 1


def test_a_real_full_disk(tmp_path):
    """A 1 MB tmpfs in a private mount namespace (nothing outside the child process sees it)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("no unshare with user and mount namespaces here")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        "import torch, sys\n"
        "from pointdet.engine.checkpoint import save_checkpoint\n"
        "from pointdet.engine.output_paths import DiskFullError\n"
        f"save_checkpoint({{'w': torch.arange(1000)}}, '{disk}/last.pt')\n"
        "try:\n"
        f"    save_checkpoint({{'w': torch.zeros(1_000_000)}}, '{disk}/last.pt')\n"
        "except DiskFullError as error:\n"
        "    print(error)\n"
        f"print(torch.load('{disk}/last.pt', weights_only=True)['w'].sum().item())\n"
    )
    mount = f'mount -t tmpfs -o size=1m tmpfs {disk} && {sys.executable} -c "$0"'
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", mount, script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    message, total = done.stdout.strip().splitlines()
    assert message.startswith(f"{disk}/last.pt: not written, the disk holding {disk} is full (No space left on device")
    assert message.endswith("the previous last.pt is intact") and total == str(sum(range(1000)))


# ------------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["predict", "a.jpg", "--batch-size", "0"], "argument --batch-size: '0': must be 1 or more"),
        (["predict", "a.jpg", "--batch-size", "-1"], "argument --batch-size: '-1': must be 1 or more"),
        (["predict", "a.jpg", "--scales", "0"], "argument --scales: '0': scales are positive factors"),
        (["predict", "a.jpg", "--scales", "1,x"], "argument --scales: '1,x' is not a list of numbers"),
        (["eval", "--scales", "0.5,-1"], "argument --scales: '0.5,-1': scales are positive factors"),
        (["export", "--k", "0"], "argument --k: '0': must be 1 or more"),
    ],
)
def test_bad_numbers_are_usage_errors(arguments, expected, capsys):
    with pytest.raises(SystemExit) as caught:
        main([*arguments, "--weights", "unused.pt"])
    assert caught.value.code == 2 and expected in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ checkpoints
def test_a_missing_best_pt_names_last_pt_and_a_run_folder_says_it_loads_last_pt(run, caplog):
    with pytest.raises(SystemExit) as caught:
        main(["eval", "--weights", str(run / "best.pt")])
    assert str(caught.value.code) == (
        f"error: {run / 'best.pt'}: checkpoint not found; {run} holds last.pt (the first evaluation writes best.pt: "
        f"this run stopped before one): use {run / 'last.pt'}"
    )
    with caplog.at_level(logging.INFO, logger="pointdet.engine.checkpoint"):
        pointdet.load(run, device="cpu")
    assert f"{run} is a run folder: using its last.pt" in caplog.text


def test_convert_names_a_file_it_does_not_know(tmp_path):
    torch.save({"state_dict": {"classifier.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    for framework, expected in (
        ("centernet", "not an official CenterNet network this converter knows"),
        ("mmdet", "not an mmdetection CornerNet or CentripetalNet checkpoint"),
    ):
        with pytest.raises(SystemExit) as caught:
            main(["convert", str(tmp_path / "other.pth"), "--from", framework, "--out", str(tmp_path / "run")])
        assert str(caught.value.code).startswith(f"error: {tmp_path / 'other.pth'}: {expected}")
        assert "'classifier.weight'" in str(caught.value.code)


# ------------------------------------------------------------------------------------------------ evaluation
def test_an_evaluation_without_detections_prints_its_per_class_table(run, capsys):
    main(["eval", "--weights", str(run), "eval.min_box_area=1e12"])  # every detection is dropped
    out = capsys.readouterr().out
    table = out[out.index("box AP per class:") :].splitlines()
    assert table[1].split() == ["name", "|", "AP", "|", "AP50"]
    assert sorted(line.split()[0] for line in table[2:5]) == ["circle", "square", "triangle"]
    assert all(line.split()[2::2] == ["0.00", "0.00"] for line in table[2:5])


def test_read_only_numpy_images_are_copied_writable_ones_shared():
    photo = Image.new("RGB", (8, 6), (10, 20, 30))
    read_only = np.asarray(photo)
    assert not read_only.flags.writeable  # as PIL gives them: torch would warn "not writable"
    copied = as_image_tensor(read_only)
    assert copied.data_ptr() != read_only.ctypes.data and copied[:, 0, 0].tolist() == [10, 20, 30]
    writable = np.array(photo)
    assert as_image_tensor(writable).data_ptr() == writable.ctypes.data  # no copy


# ------------------------------------------------------------------------------------------------ listings
@pytest.mark.parametrize("columns", ["60", "200"])  # hyphens and long paths stay whole on a narrow terminal too
def test_presets_are_aligned_with_whole_first_sentences(capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    main(["presets"])
    lines = capsys.readouterr().out.splitlines()
    column = max(len(name) for name in PRESETS) + 2
    names = [line[:column].strip() for line in lines if not line.startswith(" ")]
    assert names == list(PRESETS)
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)
    text = " ".join(line[column:] for line in lines)
    for name, build in PRESETS.items():
        sentence = _first_sentence(build.__doc__)
        assert sentence.endswith(".") and sentence in text, name
    assert _first_sentence(PRESETS["dense_reppoints_v2_shapes"].__doc__).endswith("a 3-conv mask branch.")


def test_help_names_the_top_level_keys_and_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"train a preset (default: {DEFAULT_PRESET}, RepPoints v2 on the shipped raccoon photos)" in " ".join(
        capsys.readouterr().out.split()
    )
    for command in ("train", "eval", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    out = capsys.readouterr().out
    text = " ".join(out.split())
    for key in ("max_steps", "run_dir", "seed", "device", "out_dir", "checkpoint_every", "num_visualizations"):
        assert re.search(rf"^  {key} +\w", out, re.MULTILINE), key
    assert "COCO evaluator: pycocotools (default) or faster_coco_eval" in text
    assert "--flip also run the mirrored image" in text and "--scales SCALES test scales as factors" in text


# ------------------------------------------------------------------------------------------------ curves
def test_a_short_run_logs_every_step_and_its_curves_are_readable(tiny_shapes, tmp_path):
    import matplotlib.pyplot as plt

    from pointdet.engine.plots import _draw_validation

    config = replace(tiny_config(tiny_shapes, tmp_path / "run", epochs=1), max_steps=4, num_visualizations=0)
    trainer = Trainer(config)
    trainer.train()
    assert [entry["step"] for entry in trainer.loss_log] == [1, 2, 3, 4]
    assert Image.open(tmp_path / "run" / "plots" / "training_curves.png").size[0] > 800  # 6 panels
    figure, ax = plt.subplots()
    _draw_validation(ax, trainer.history, ["AP", "AP50"], last_step=4)
    assert ax.get_ylim() == (0.0, 10.0) and ax.get_xlim()[1] >= 4  # AP 0 at step 4: on the axis, not +-0.05
    plt.close(figure)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["history"][-1]["step"] == 4
