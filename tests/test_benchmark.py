"""The benchmark harness's CPU path: every kind of record is measured and printed as a JSON line."""

import json
import socket

import pytest
import torch

from pointdet.cli import main


def test_benchmark_prints_every_record_kind(tiny_shapes, capsys):
    main(
        [
            "benchmark",
            "centernet_r18",
            "--size",
            "64",
            "--batches",
            "1,2",
            "--precisions",
            "fp32",
            "--train-batch",
            "2",
            "--peers",
            "fcos_resnet50_fpn",
            "--workers",
            "0",
            "--data-batches",
            "2",
            "--data-json",
            str(tiny_shapes.train_json),
            "--data-images",
            str(tiny_shapes.train_images),
            "--data-decode-on-device",
            "--coco-eval-images",
            "4",
            "--warmup",
            "1",
            "--iters",
            "2",
            "--host-size",
            "0",
            "--device",
            "cpu",
        ]
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    kinds = [(r["kind"], r["model"]) for r in records]
    assert kinds.count(("inference", "centernet_r18")) == 2
    assert ("train", "centernet_r18") in kinds
    assert kinds.count(("inference", "torchvision_fcos_resnet50_fpn")) == 2
    assert kinds.count(("backbone", "resnet18_features")) == 2
    data = [r for r in records if r["kind"] == "data"]
    assert [r["decode_on"] for r in data] == ["cpu", "cpu"]  # the default pipeline, then data.decode_on_device
    evaluations = {r["model"]: r for r in records if r["kind"] == "coco_eval"}
    assert set(evaluations) == {"pycocotools", "pointdet_pycocotools", "pointdet_faster_coco_eval"}
    assert all(r["detections"] == 400 and r["seconds"] > 0 for r in evaluations.values())
    for record in records:
        if record["kind"] == "coco_eval":
            continue
        assert record["images_per_s"] > 0 and record["date"]
        if record["kind"] != "data":
            assert record["device"] == "cpu" and record["precision"] == "fp32" and record["size"] == 64
    train = next(r for r in records if r["kind"] == "train")
    assert train["batch"] == 2


@pytest.mark.parametrize("preset", ["reppoints_shapes", "reppoints_v2_shapes", "lsnet_shapes", "cpm_rcnn_shapes"])
def test_benchmark_measures_the_fpn_families(preset, capsys):
    """The FPN presets through the same harness: end-to-end inference (NMS included) and a training step."""
    main(
        [
            "benchmark",
            preset,
            "--size",
            "64",
            "--batches",
            "1",
            "--precisions",
            "fp32",
            "--train-batch",
            "2",
        ]
        + [
            "--peers",
            "",
            "--workers",
            "",
            "--coco-eval-images",
            "0",
            "--warmup",
            "0",
            "--iters",
            "1",
            "--host-size",
            "0",
            "--device",
            "cpu",
        ]
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    kinds = [(r["kind"], r["model"]) for r in records]
    assert kinds[:2] == [("inference", preset), ("train", preset)]
    assert [kind for kind, _ in kinds[2:]] == ["backbone"]
    assert all(r["images_per_s"] > 0 for r in records)


def test_benchmark_runs_offline_with_random_weights_and_reports_host_costs(tmp_path, monkeypatch, capsys):
    """Presets whose backbones default to ImageNet weights (torchvision's ResNet-18, timm's EfficientNet-Lite0) run
    with an empty torch cache and no network; the host report counts each preset's operators."""
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the benchmark reached for the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    presets = ["centernet_r18", "reppoints_v2_effl0_raccoon"]
    main(
        ["benchmark", *presets, "--size", "64", "--batches", "1", "--precisions", "fp32", "--train-batch", "1"]
        + ["--peers", "", "--workers", "", "--coco-eval-images", "0", "--warmup", "0", "--iters", "1"]
        + ["--host-size", "64", "--device", "cpu"]
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["kind"], r["model"]) for r in records if r["kind"] != "backbone"] == [
        (kind, preset) for preset in presets for kind in ("inference", "train", "host")
    ]
    assert not any(path.is_file() for path in torch_home.rglob("*"))  # nothing was placed in the cache either
    for host in (r for r in records if r["kind"] == "host"):
        assert host["size"] == 64 and host["predict_batch"] == 1 and host["train_batch"] == 2
        # A training step (forward, loss, backward, Adam) dispatches more than a predict call; views are a part.
        assert 0 < host["predict_views"] < host["predict_ops"] < host["train_ops"]
        assert host["predict_host_ms"] > 0 and host["train_host_ms"] > 0
