"""``pointdet eval`` checks what it is given: categories matched by name (reordered ids, subsets, mismatches),
an explicit val set always wins, architecture keys refused."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from pointdet.cli import main
from pointdet.configs import (
    CONFIG_VERSION,
    ConfigError,
    DataConfig,
    EvalConfig,
    apply_eval_overrides,
    config_to_dict,
    get_preset,
)
from pointdet.data.coco import DatasetError
from pointdet.engine.checkpoint import save_checkpoint
from pointdet.engine.trainer import Trainer
from pointdet.models.build import build_model

from .helpers import tiny_config

SHAPES = ["circle", "triangle", "square"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained ResNet-18 CenterNet of the shapes' 3 classes, as a run on the generated shapes would save it."""
    torch.manual_seed(0)
    config = replace(
        get_preset("centernet_r18"), data=DataConfig(input_size=64, num_workers=0), eval=EvalConfig(batch_size=8)
    )
    path = tmp_path_factory.mktemp("checkpoint") / "best.pt"
    state = {"model": build_model(config.model, 3).state_dict(), "config": config_to_dict(config)}
    save_checkpoint({**state, "config_version": CONFIG_VERSION, "class_names": SHAPES, "category_ids": [1, 2, 3]}, path)
    return path


def _variant(shapes, path, categories: dict[int, tuple[str, int]]):
    """The tiny val set with its categories renamed / renumbered / dropped: old id -> (name, new id)."""
    document = json.loads(shapes.val_json.read_text())
    document["categories"] = [
        {**category, "name": categories[category["id"]][0], "id": categories[category["id"]][1]}
        for category in reversed(document["categories"])  # another order too
        if category["id"] in categories
    ]
    document["annotations"] = [
        {**annotation, "category_id": categories[annotation["category_id"]][1]}
        for annotation in document["annotations"]
        if annotation["category_id"] in categories
    ]
    path.write_text(json.dumps(document))
    return path


def _eval(checkpoint, shapes, val_json, results=None, *extra):
    args = ["eval", "--weights", str(checkpoint), f"data.val_json={val_json}", f"data.val_images={shapes.val_images}"]
    main([*args, *(["--results", str(results)] if results else []), *extra])
    return json.loads(results.read_text()) if results else None


def test_categories_are_matched_by_name(checkpoint, tiny_shapes, tmp_path, capsys):
    full = _eval(checkpoint, tiny_shapes, tiny_shapes.val_json, tmp_path / "full.json")
    assert {record["category_id"] for record in full} == {1, 2, 3}

    renumbered = _variant(
        tiny_shapes, tmp_path / "renumbered.json", {1: ("circle", 10), 2: ("triangle", 20), 3: ("square", 30)}
    )
    got = _eval(checkpoint, tiny_shapes, renumbered, tmp_path / "renumbered_results.json")
    assert got == [{**record, "category_id": 10 * record["category_id"]} for record in full]

    subset = _variant(tiny_shapes, tmp_path / "subset.json", {1: ("circle", 5), 3: ("square", 2)})
    capsys.readouterr()
    got = _eval(checkpoint, tiny_shapes, subset, tmp_path / "subset_results.json")
    new_id = {1: 5, 3: 2}
    assert got == [
        {**record, "category_id": new_id[record["category_id"]]} for record in full if record["category_id"] != 2
    ]
    out = capsys.readouterr().out
    assert (
        "the file holds 2 of the model's 3 classes: only those are scored (detections of triangle are left out)" in out
    )
    assert f"on {subset}" in out and "AP50" in out


def test_other_categories_are_refused_with_both_lists(checkpoint, tiny_shapes, tmp_path):
    renamed = _variant(tiny_shapes, tmp_path / "renamed.json", {1: ("a", 1), 2: ("b", 2), 3: ("c", 3)})
    with pytest.raises(SystemExit) as caught:
        _eval(checkpoint, tiny_shapes, renamed)
    assert str(caught.value) == (
        f"error: {renamed}: its categories do not match the model's (it holds ['a', 'b', 'c'] that the model does "
        "not know); the model knows ['circle', 'triangle', 'square'], the file holds ['a', 'b', 'c']. Categories "
        "are matched by name; evaluate on a file with the model's categories, or a subset of them."
    )
    # Training refuses such a validation set before its first step.
    config = replace(
        tiny_config(tiny_shapes, tmp_path / "run"),
        data=replace(tiny_config(tiny_shapes, "x").data, val_json=str(renamed)),
    )
    with pytest.raises(DatasetError, match="its categories do not match the model's"):
        Trainer(config)


def test_an_explicit_val_set_wins_over_the_generated_shapes(checkpoint, tiny_shapes, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POINTDET_CACHE", str(cache))  # where the generated shapes would go
    _eval(checkpoint, tiny_shapes, tiny_shapes.val_json)
    assert f"on {tiny_shapes.val_json}" in capsys.readouterr().out
    assert not cache.exists() or not any(cache.iterdir())


def test_architecture_keys_are_refused_at_eval(checkpoint):
    with pytest.raises(SystemExit) as caught:
        main(
            [
                "eval",
                "--weights",
                str(checkpoint),
                "model.backbone=resnet50",
                "model.head_conv=32",
                "data.input_size=96",
            ]
        )
    assert str(caught.value) == (
        "config error: model.backbone, model.head_conv: fixed by the checkpoint (the network its weights belong to); "
        "at eval only the decoding options of method=centernet apply: model.snap_joints"
    )
    for preset, key in [
        ("centernet_pose_shapes", "model.snap_joints=false"),
        ("reppoints_shapes", "model.nms_iou=0.6"),
    ]:
        config = apply_eval_overrides(get_preset(preset), [key, "eval.flip=true", "data.input_size=96"])
        assert config.eval.flip and config.data.input_size == 96
    with pytest.raises(
        ConfigError, match=r"^model.method: fixed by the checkpoint .* model.pair_score, model.central_region"
    ):
        apply_eval_overrides(get_preset("cornernet_shapes"), ["model.method=centripetalnet"])


def test_predict_checks_its_arguments(checkpoint):
    import numpy as np

    import pointdet

    model = pointdet.load(checkpoint, device="cpu")
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    assert model.predict([]) == []
    with pytest.raises(ValueError, match=r"^image 1 is empty \(0x0 pixels\)$"):
        model.predict([image, np.zeros((0, 0, 3), dtype=np.uint8)])
    with pytest.raises(ValueError, match=r"^image 0 is empty \(0x5 pixels\)$"):
        model.predict(torch.zeros(3, 0, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"^batch_size and k must be >= 1, got batch_size=0, k=100$"):
        model.predict(image, batch_size=0)
    with pytest.raises(ValueError, match=r"^batch_size and k must be >= 1, got batch_size=16, k=0$"):
        model.predict([], k=0)
    with pytest.raises(ValueError, match=r"^scales must be one or more positive factors, got \[\]$"):
        model.predict(image, scales=())
    assert len(model.predict([image, image, image], batch_size=2)) == 3
