import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

import pointdet
from pointdet.cli import main
from pointdet.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pointdet.engine.trainer import Trainer

from .helpers import tiny_config, tiny_data_overrides


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_continues_exactly(tiny_shapes, tmp_path):
    # 16 images / batch 2 = 8 steps per epoch, 2 epochs. Interrupt at step 5 (mid-epoch 1), then resume.
    straight = tiny_config(tiny_shapes, tmp_path / "straight", epochs=2)
    Trainer(straight).train()
    Trainer(replace(straight, run_dir=str(tmp_path / "split"), max_steps=5)).train()
    state = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 5, 5)
    resumed = Trainer(replace(straight, run_dir=str(tmp_path / "split")), resume=tmp_path / "split")
    assert resumed.global_step == 5
    resumed.train()
    expected, got = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "split" / "last.pt")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_cli_train_resume_eval_predict_and_api(tiny_shapes, tmp_path, capsys):
    run = tmp_path / "run"
    data = [
        *tiny_data_overrides(tiny_shapes),
        "optim.batch_size=4",
        "optim.base_batch=4",
        "optim.epochs=2",
        "eval.every=1",
        "device=cpu",
        "num_visualizations=3",
    ]
    main(["train", "centernet_r18", *data, f"run_dir={run}", "max_steps=3"])
    assert load_checkpoint(run / "last.pt")["global_step"] == 3
    main(["train", "--resume", str(run), "max_steps=0"])
    out = capsys.readouterr().out
    assert "resuming" in out and "AP50" in out
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert load_checkpoint(run / "last.pt")["global_step"] == 8 and "AP" in metrics["final"]
    drawn = sorted((run / "visualizations").glob("*.jpg"))
    assert len(drawn) == 3 and Image.open(drawn[0]).size == (64, 64)

    main(
        [
            "eval",
            "--weights",
            str(run / "best.pt"),
            "--flip",
            "--scales",
            "0.75,1,1.25",
            "--results",
            str(tmp_path / "r.json"),
        ]
    )
    assert "flip, scales 0.75,1.0,1.25" in capsys.readouterr().out
    main(["eval", "--weights", str(run / "best.pt"), "eval.scales=[0.75,1.0]"])  # the run's setting, overridden
    assert "plain, scales 0.75,1.0)" in capsys.readouterr().out
    assert isinstance(json.loads((tmp_path / "r.json").read_text()), list)

    predictions = tmp_path / "predictions"
    main(
        [
            "predict",
            str(tiny_shapes.val_images),
            "--weights",
            str(run / "best.pt"),
            "--out",
            str(predictions),
            "--batch-size",
            "3",
        ]
    )
    assert "ms/image" in capsys.readouterr().out
    assert len(list(predictions.glob("*.jpg"))) == 8
    records = json.loads((predictions / "detections.json").read_text())
    assert records and {"file_name", "bbox", "score", "category_id", "category_name"} <= set(records[0])

    model = pointdet.load(run / "best.pt", device="cpu")
    detections = model.predict(
        [tiny_shapes.val_images / "000001.png", Image.open(tiny_shapes.val_images / "000002.png")]
    )
    assert len(detections) == 2 and isinstance(detections[0], pointdet.Detections)
    assert detections[0].boxes.shape[1] == 4 and (detections[0].scores[:-1] >= detections[0].scores[1:]).all()
    assert model.class_names == ["circle", "triangle", "square"]


def test_checkpoint_errors(tmp_path, tiny_shapes):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: not a pointdet checkpoint"):
        pointdet.load(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: cannot be read"):
        pointdet.load(tmp_path / "garbage.pt")
    # A checkpoint from another model: weights of a 3-class model under a config saying ResNet-50.
    config = tiny_config(tiny_shapes, tmp_path / "run")
    model = pointdet.build("centernet_r18", num_classes=3)
    from pointdet.configs import config_to_dict

    other = config_to_dict(replace(config, model=replace(config.model, backbone="resnet50")))
    save_checkpoint(
        {"model": model.state_dict(), "config": other, "class_names": ["a", "b", "c"], "category_ids": [1, 2, 3]},
        tmp_path / "mixed.pt",
    )
    with pytest.raises(CheckpointError, match="mixed.pt: weights do not fit this model"):
        pointdet.load(tmp_path / "mixed.pt")


def test_cli_reports_bad_config(capsys):
    with pytest.raises(SystemExit, match="unknown config key 'optim.lrr'"):
        main(["train", "optim.lrr=1"])
    with pytest.raises(SystemExit, match="unknown preset 'nope'"):
        main(["train", "nope"])
    with pytest.raises(SystemExit, match="error: .*nope.pt: checkpoint not found"):
        main(["eval", "--weights", "nope.pt"])


def test_best_checkpoint_holds_the_weights_only(tiny_shapes, tmp_path):
    config = replace(tiny_config(tiny_shapes, tmp_path / "run", epochs=1), max_steps=2)
    Trainer(config).train()
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "optimizer" not in best and "scaler" not in best and "optimizer" in last
    assert (tmp_path / "run" / "best.pt").stat().st_size < 0.6 * (tmp_path / "run" / "last.pt").stat().st_size
    assert (
        len(
            pointdet.load(tmp_path / "run" / "best.pt", device="cpu").predict(torch.zeros(3, 64, 64, dtype=torch.uint8))
        )
        == 1
    )
    with pytest.raises(CheckpointError, match="weights only"):
        Trainer(config, resume=tmp_path / "run" / "best.pt")
