"""The benchmark harness's CPU path: every kind of record is measured and printed as a JSON line."""

import json

from pointdet.cli import main


def test_benchmark_prints_every_record_kind(capsys):
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
            "--peers",
            "fcos_resnet50_fpn",
            "--workers",
            "0",
            "--data-batches",
            "2",
            "--warmup",
            "1",
            "--iters",
            "2",
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
    assert ("data", "centernet_dla34_shapes") in kinds
    for record in records:
        assert record["images_per_s"] > 0 and record["date"]
        if record["kind"] != "data":
            assert record["device"] == "cpu" and record["precision"] == "fp32" and record["size"] == 64
    train = next(r for r in records if r["kind"] == "train")
    assert train["batch"] == 32  # the preset's batch
