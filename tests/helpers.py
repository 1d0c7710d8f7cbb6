"""Small configs for fast end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pointdet.configs import DataConfig, EvalConfig, ExperimentConfig, OptimConfig, get_preset

# FPN P3-P7 of a 64 x 96 input: strides 8..128 -> 8x12, 4x6, 2x3, 1x2, 1x1 = 129 locations.
P3_P7_SIZES = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]


def p3_p7_features(batch: int, channels: int, seed: int = 0) -> list[torch.Tensor]:
    """Random FPN levels [(batch, channels, H_l, W_l)] of ``P3_P7_SIZES``, reproducible by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=generator) for h, w in P3_P7_SIZES]


def tiny_config(shapes, run_dir, **optim) -> ExperimentConfig:
    """ResNet-18 CenterNet from scratch on the tiny 64 px shapes fixture, 2 images per step, no workers."""
    base = get_preset("centernet_r18")
    return replace(
        base,
        model=replace(base.model, backbone_weights=None),
        data=DataConfig(
            train_json=str(shapes.train_json),
            train_images=str(shapes.train_images),
            val_json=str(shapes.val_json),
            val_images=str(shapes.val_images),
            input_size=64,
            scales=(0.9, 1.0, 1.1),
            num_workers=0,
        ),
        optim=OptimConfig(**{"lr": 1e-3, "base_batch": 2, "batch_size": 2, "epochs": 2, "lr_steps": (1,), **optim}),
        eval=EvalConfig(every=1, batch_size=4),
        run_dir=str(run_dir),
        num_visualizations=2,
        device="cpu",
    )


def tiny_data_overrides(shapes) -> list[str]:
    """CLI overrides that point a run at the tiny shapes fixture at 64 px, without loader workers."""
    return [
        f"data.train_json={shapes.train_json}",
        f"data.train_images={shapes.train_images}",
        f"data.val_json={shapes.val_json}",
        f"data.val_images={shapes.val_images}",
        "data.input_size=64",
        "data.num_workers=0",
    ]


def cli_train_tiny(preset: str, shapes, run_dir) -> None:
    """``pointdet train PRESET`` for 2 steps of 4 images on the tiny shapes fixture, drawing 2 validation images."""
    from pointdet.cli import main

    overrides = [*tiny_data_overrides(shapes), "optim.batch_size=4", "optim.epochs=1", "device=cpu"]
    main(["train", preset, *overrides, f"run_dir={run_dir}", "max_steps=2", "num_visualizations=2"])
    assert len(list((run_dir / "visualizations").glob("*.jpg"))) == 2


def cli_train_eval_predict(preset: str, shapes, tmp_path, capsys, *eval_overrides: str):
    """``cli_train_tiny`` into ``tmp_path/run``, then ``pointdet eval`` with ``eval_overrides`` and ``pointdet predict``
    on one validation image, each checked for its output; returns the run folder and that image."""
    from pointdet.cli import main

    run = tmp_path / "run"
    cli_train_tiny(preset, shapes, run)
    assert "AP50" in capsys.readouterr().out
    main(["eval", "--weights", str(run), *eval_overrides])
    assert "AP" in capsys.readouterr().out
    image = shapes.val_images / "000001.png"
    main(["predict", str(image), "--weights", str(run), "--out", str(tmp_path / "p")])
    assert (tmp_path / "p" / "detections.json").is_file()
    return run, image


def fit(model, batch, steps: int, lr: float = 1e-3, drop_after: int | None = None) -> list[float]:
    """Adam on one fixed batch for ``steps`` steps (lr / 10 after ``drop_after`` steps); returns the total loss of
    every step."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for step in range(steps):
        if step == drop_after:
            for group in optimizer.param_groups:
                group["lr"] = lr / 10
        total = sum(model.loss(batch.images, batch.instances).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    return history


def untrained_checkpoint(shapes, path):
    """A checkpoint of the ``tiny_config`` model with freshly initialised weights (no training) at ``path``."""
    from pointdet.configs import CONFIG_VERSION, config_to_dict
    from pointdet.engine.checkpoint import save_checkpoint
    from pointdet.models.build import build_model

    config = tiny_config(shapes, path.parent / "unused")
    model = build_model(config.model, 3, with_backbone_weights=False)
    state = {
        "model": model.state_dict(),
        "config": config_to_dict(config),
        "config_version": CONFIG_VERSION,
        "class_names": ["circle", "triangle", "square"],
        "category_ids": [1, 2, 3],
    }
    save_checkpoint(state, path)
    return path


def overfit_four_shapes(
    model_config, tmp_path, with_polygons: bool = False, steps: int = 200, num_joints: int = 0, flip_pairs=()
) -> tuple[list[float], dict]:
    """Train a 3-class model of ``model_config`` (with the shapes' ``num_joints`` keypoints and ``flip_pairs`` for
    pose) with ``fit`` on 4 generated shapes images at 128 px (``steps`` steps, lr 1e-3 then 1e-4 for the last
    quarter); returns its loss history and the COCO box metrics of its predictions on them, with the mask metrics
    (``segm_AP``, ...) when the model predicts masks and the keypoint metrics (``kp_AP``, OKS sigma 0.05) when it
    predicts keypoints."""
    import torch

    from pointdet.data.coco import CocoDataset
    from pointdet.data.dataset import TransformedDataset, collate
    from pointdet.data.shapes import generate_shapes
    from pointdet.data.transforms import eval_transforms
    from pointdet.engine.inference import predict_images, to_original_pixels
    from pointdet.evaluation import detections_to_coco, evaluate_coco
    from pointdet.evaluation.coco import keypoints_to_coco, masks_to_coco, run_coco_evaluation
    from pointdet.models.build import build_model

    torch.manual_seed(0)
    shapes = generate_shapes(tmp_path, num_train=4, num_val=1, image_size=128, seed=0)
    coco = CocoDataset(
        shapes.train_json, shapes.train_images, with_masks=model_config.needs_masks, with_polygons=with_polygons
    )
    batch = collate([TransformedDataset(coco, eval_transforms(128))[i] for i in range(4)])
    model = build_model(model_config, num_classes=3, num_joints=num_joints, flip_pairs=flip_pairs)
    history = fit(model, batch, steps=steps, lr=1e-3, drop_after=steps * 3 // 4)
    model.eval()
    detections = to_original_pixels(predict_images(model, batch.images), batch.scales, batch.orig_sizes)
    metrics = evaluate_coco(shapes.train_json, detections_to_coco(detections, batch.image_ids, coco.category_ids))
    if detections[0].has_masks:
        masks = masks_to_coco(detections, batch.image_ids, coco.category_ids, batch.orig_sizes)
        segm = run_coco_evaluation(shapes.train_json, masks, iou_type="segm").metrics
        metrics.update({f"segm_{name}": value for name, value in segm.items()})
    if detections[0].keypoints is not None:
        joints = keypoints_to_coco(detections, batch.image_ids, coco.category_ids)
        sigmas = [0.05] * num_joints
        oks = run_coco_evaluation(shapes.train_json, joints, iou_type="keypoints", keypoint_sigmas=sigmas).metrics
        metrics.update({f"kp_{name}": value for name, value in oks.items()})
    return history, metrics


def random_state(tensors: dict[str, list[int]], seed: int = 0, counters: bool = True) -> dict[str, torch.Tensor]:
    """Random tensors of a manifest's names and shapes (tests/data/official_*), scaled so that activations stay of
    order one; BN ``num_batches_tracked`` counters left out when ``counters`` is False (files of PyTorch < 0.4.1)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in tensors.items():
        if key.endswith("num_batches_tracked"):
            if counters:
                state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
    return state


CHILD = Path(__file__).with_name("interrupted_child.py")


def launch_child(args: list[str], logs: Path, pause: str | None = None) -> tuple[subprocess.Popen, Path]:
    """``pointdet ARGS`` in a child process (``interrupted_child.py``; stdout and stderr in ``logs.out`` / ``.err``);
    with ``pause``, it waits at that point and touches the marker file returned beside the process on arrival."""
    marker = logs.with_suffix(".arrived")
    env = {**os.environ, "PYTHONPATH": str(CHILD.parents[1]), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("POINTDET_TEST_PAUSE", None)
    if pause is not None:
        env.update(POINTDET_TEST_PAUSE=pause, POINTDET_TEST_MARKER=str(marker))
    with open(logs.with_suffix(".out"), "w") as out, open(logs.with_suffix(".err"), "w") as err:
        process = subprocess.Popen([sys.executable, str(CHILD), *args], env=env, stdout=out, stderr=err, text=True)
    return process, marker


def child_output(logs: Path) -> str:
    return logs.with_suffix(".out").read_text() + logs.with_suffix(".err").read_text()


def paused_child(args: list[str], logs: Path, pause: str) -> subprocess.Popen:
    """``launch_child`` with ``pause``, returned once the child waits there (the test fails if it ends first or
    takes over 300 s)."""
    process, marker = launch_child(args, logs, pause)
    deadline = time.monotonic() + 300
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the child never reached {pause}:\n{child_output(logs)}")
        time.sleep(0.05)
    return process
