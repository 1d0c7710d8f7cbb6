"""Two gloo processes on CPU: DistributedDataParallel training and sharded evaluation gathering."""

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pointdet.engine.checkpoint import load_checkpoint
from pointdet.engine.trainer import Trainer

from .helpers import tiny_config, tiny_data_overrides


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, config, out: Path) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    trainer = Trainer(config)
    metrics = trainer.train()
    torch.save(
        {"model": dict(trainer.model.named_parameters()), "metrics": metrics, "rank": rank}, out / f"rank{rank}.pt"
    )
    dist.destroy_process_group()


def test_two_processes_train_two_steps_and_agree(tiny_shapes, tmp_path):
    config = tiny_config(tiny_shapes, tmp_path / "run", batch_size=2)
    config = replace(config, max_steps=2)
    mp.spawn(_worker, args=(_free_port(), config, tmp_path), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    initial = dict(Trainer(replace(config, run_dir=str(tmp_path / "init"))).model.named_parameters())
    changed = False
    # Parameters agree exactly; BatchNorm running statistics are per process (DDP broadcasts rank 0's at
    # the start of each forward), as in any DDP run without SyncBatchNorm.
    for name, value in first["model"].items():
        torch.testing.assert_close(second["model"][name], value, rtol=0, atol=0, msg=name)
        changed |= not torch.equal(value.detach(), initial[name].detach())
    assert changed, "two DDP steps did not change the weights"
    # Evaluation is sharded (4 + 4 images) and gathered: both ranks report the same, full-set numbers.
    assert first["metrics"] == second["metrics"]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["world_size"] == 2 and state["global_step"] == 2


def test_torchrun_cli(tiny_shapes, tmp_path):
    run = tmp_path / "torchrun"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "pointdet",
        "train",
        "centernet_r18",
        *tiny_data_overrides(tiny_shapes),
        "model.backbone_weights=null",  # child processes: no ImageNet file (tests/conftest.py)
        "optim.batch_size=2",
        "max_steps=2",
        "device=cpu",
        "num_visualizations=1",
        f"run_dir={run}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("finished in") == 1  # only rank 0 reports
    assert load_checkpoint(run / "last.pt")["world_size"] == 2
