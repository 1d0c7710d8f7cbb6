"""RepPoints v1 end to end: overfitting a few images, the CLI / API, keep-ratio training on real COCO photos, and
the per-family config."""

import json
from dataclasses import replace

import pytest
import torch

from pointdet.configs import ConfigError, RepPointsConfig, apply_overrides, get_preset
from pointdet.configs.schema import DataConfig, EvalConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import collate
from pointdet.engine.data import eval_loader, train_loader
from pointdet.engine.evaluate import evaluate_detector
from pointdet.engine.train_step import TrainStep
from pointdet.models.build import build_model

from .conftest import shared_data
from .helpers import overfit_four_shapes

SMALL = RepPointsConfig(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False)


@pytest.mark.slow  # 44 s of the 10-minute default run; RepPoints v1 also trains in the CLI tests here
def test_reppoints_overfits_four_shapes_images(tmp_path):
    history, metrics = overfit_four_shapes(SMALL, tmp_path)
    assert history[-1] < 0.1 * history[0], history[::10]
    assert metrics["AP"] >= 0.95, metrics


def test_cli_reppoints_train_eval_predict_and_api(tiny_shapes, tmp_path, capsys):
    import pointdet
    from pointdet.cli import main

    from .helpers import cli_train_tiny

    run = tmp_path / "run"
    cli_train_tiny("reppoints_shapes", tiny_shapes, run)
    assert "AP50" in capsys.readouterr().out
    main(["eval", "--weights", str(run), "--results", str(tmp_path / "r.json"), "model.nms_iou=0.6", "--flip"])
    assert "(flip)" in capsys.readouterr().out and (tmp_path / "r.json").is_file()
    image = tiny_shapes.val_images / "000001.png"
    main(["predict", str(image), "--weights", str(run), "--out", str(tmp_path / "p"), "--score-threshold", "0"])
    # Two training steps leave every class score near the 0.01 prior, under RepPoints' 0.05 test threshold.
    assert json.loads((tmp_path / "p" / "detections.json").read_text()) == []
    assert len(list((tmp_path / "p").glob("*.jpg"))) == 1
    predictor = pointdet.load(run, device="cpu")
    predictor.model.postprocess.score_threshold = 0.0
    (detections,) = predictor.predict(image, flip=True)
    assert detections.boxes.shape[1:] == (4,) and 0 < len(detections) <= 100


def test_keep_ratio_training_on_coco_train_mini_with_polygons():
    """A dozen steps of keep-ratio multi-scale training on real photos (polygons loaded and moved by every
    transform), then COCO evaluation through pycocotools at the images' own aspect."""
    root = shared_data("coco_train_mini")
    torch.manual_seed(0)
    annotations = root / "annotations" / "instances_train.json"
    train = CocoDataset(annotations, root / "images", with_polygons=True)
    data = DataConfig(
        resize="keep_ratio", min_size=(160, 224), max_size=256, test_resize="keep_ratio", test_min_size=192,
        color_jitter=0.0, lighting=0.0, num_workers=0,
    )  # fmt: skip
    config = replace(
        get_preset("reppoints_shapes"), model=SMALL, data=data, eval=EvalConfig(batch_size=4), device="cpu"
    )
    config = replace(config, optim=replace(config.optim, batch_size=2))
    loader, _ = train_loader(train, config)
    model = build_model(SMALL, len(train.class_names))
    step = TrainStep(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=1e-4)
    seen_polygons, totals = 0, []
    for index, batch in enumerate(loader):
        seen_polygons += sum(len(inst.polygons) for inst in batch.instances)
        for inst, image in zip(batch.instances, batch.images, strict=True):
            assert inst.polygons is not None and len(inst.polygons) == len(inst)
            assert max(image.shape[-2:]) <= 256
        total = sum(step(batch.images, batch.instances).values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        optimizer.step()
        totals.append(total.item())
        if index == 11:
            break
    assert seen_polygons > 0 and all(map(torch.isfinite, torch.tensor(totals)))
    val = CocoDataset(annotations, root / "images")
    subset = torch.utils.data.Subset(eval_loader(val, data, 4, 0).dataset, range(4))
    loader = torch.utils.data.DataLoader(subset, batch_size=4, collate_fn=collate)
    metrics = evaluate_detector(model, loader, val)
    assert {"AP", "AP50", "APs"} <= set(metrics) and 0.0 <= metrics["AP"] <= 1.0


def test_the_model_section_is_checked_against_its_family_when_parsed():
    with pytest.raises(ConfigError, match=r"'model.pair_score' for method=reppoints \(RepPointsConfig\)"):
        apply_overrides(get_preset("reppoints_r50_fpn"), ["model.pair_score=code"])
    switched = apply_overrides(get_preset("centernet_r18"), ["model.transform=minmax", "model.method=reppoints"])
    assert isinstance(switched.model, RepPointsConfig) and switched.model.transform == "minmax"
    with pytest.raises(ConfigError, match="'model.snap_joints' for method=reppoints"):
        apply_overrides(get_preset("centernet_pose_shapes"), ["model.method=reppoints", "model.snap_joints=false"])
