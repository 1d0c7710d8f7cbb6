"""Checkpoints written before the per-family configs (config version 1) still load, weights in the right places.

``tests/data/v1_checkpoints/*.json`` were recorded from pointdet at commit f6b1d7f (the last version-1 release)
for six presets: each holds the checkpoint's config dict and header exactly as that code wrote them, and the
name, shape and dtype of every tensor of its model's state dict — everything but the tensor values, which would
be tens of MB. The test rebuilds a version-1 checkpoint from a manifest with random values and loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pointdet
from pointdet.configs import CONFIG_VERSION, CornerConfig, config_from_checkpoint
from pointdet.engine.checkpoint import CHECKPOINT_FORMAT, model_state

MANIFESTS = sorted((Path(__file__).parent / "data" / "v1_checkpoints").glob("*.json"))


def _version1_checkpoint(manifest: dict, path: Path) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    weights = {
        name: (torch.rand(shape, generator=generator) * 100).to(getattr(torch, dtype))
        for name, (shape, dtype) in manifest["model"].items()
    }
    state = {key: manifest[key] for key in ("format", "config", "class_names", "category_ids", "keypoint_names")}
    state.update(model=weights, flip_pairs=manifest["flip_pairs"], skeleton=manifest["skeleton"])
    torch.save(state, path)
    return weights


@pytest.mark.parametrize("manifest_file", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_version1_checkpoints_load_with_every_tensor_in_its_place(manifest_file, tmp_path):
    manifest = json.loads(manifest_file.read_text())
    assert manifest["format"] == CHECKPOINT_FORMAT and "config_version" not in manifest["header_keys"]
    path = tmp_path / "best.pt"
    written = _version1_checkpoint(manifest, path)
    predictor = pointdet.load(path, device="cpu")
    loaded = predictor.model.state_dict()
    renamed = model_state({"model": written})  # version 1: the mask head's weights move to the RoI stage
    assert set(renamed) == set(loaded)
    for name, tensor in renamed.items():
        assert torch.equal(loaded[name], tensor), name
    config = config_from_checkpoint(torch.load(path, weights_only=True))
    assert config.model.method == manifest["config"]["model"]["method"]
    for key, value in manifest["config"]["model"].items():  # the family's keys keep their values
        if hasattr(config.model, key):
            assert getattr(config.model, key) == value, key


def test_the_mask_head_of_a_version1_corner_checkpoint_becomes_the_roi_stage(tmp_path):
    manifest = json.loads(
        (Path(__file__).parent / "data" / "v1_checkpoints" / "centripetalnet_shapes.json").read_text()
    )
    assert any(name.startswith("head.mask_head.") for name in manifest["model"])
    config = config_from_checkpoint({"config": manifest["config"]})
    assert isinstance(config.model, CornerConfig) and config.model.mask_head
    renamed = model_state({"model": dict.fromkeys(manifest["model"], torch.zeros(1)), "config_version": 1})
    assert not any(name.startswith("head.mask_head.") for name in renamed)
    assert any(name.startswith("roi_heads.") for name in renamed)
    unchanged = model_state({"model": {"head.mask_head.x": torch.zeros(1)}, "config_version": CONFIG_VERSION})
    assert list(unchanged) == ["head.mask_head.x"]  # today's names are never rewritten
