"""Files: checkpoints pointdet will not unpickle (and the README's way to convert a trusted one), half-written
temporary checkpoints, backbone weights in ``.safetensors``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pointdet
from pointdet.configs import apply_overrides, config_to_dict, get_preset
from pointdet.engine.checkpoint import CheckpointError, load_checkpoint, remove_stale_temporaries, save_checkpoint
from pointdet.models.build import build_model

# The README's conversion of a checkpoint the user trusts (section "Resuming", checkpoints from elsewhere).
README_CONVERSION = """
import numpy as np
import torch

def plain(value):  # tensors, numbers, strings, lists and dicts: what pointdet reads without unpickling
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    return value

state = torch.load("trusted.pt", weights_only=False)  # runs any code the file names: only for a file you trust
torch.save(plain(state), "converted.pt")
"""


def _checkpoint(path, **extra) -> None:
    config = get_preset("centernet_r18")
    model = build_model(config.model, 3)
    state = {"model": model.state_dict(), "config": config_to_dict(config), "class_names": ["a", "b", "c"]}
    save_checkpoint({**state, "category_ids": [1, 2, 3], **extra}, path)


def test_a_checkpoint_with_pickled_objects_is_refused_without_advising_to_unpickle(tmp_path, monkeypatch):
    # As an older script might have written it: metrics as numpy scalars.
    _checkpoint(tmp_path / "trusted.pt", best_ap=np.float64(0.5), history=np.arange(3))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "trusted.pt")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'trusted.pt'}: not loaded — besides tensors it holds pickled Python")
    assert "(e.g. numpy." in message and "pointdet never does" in message and "README" in message
    assert "weights_only" not in message and "add_safe_globals" not in message

    monkeypatch.chdir(tmp_path)
    exec(README_CONVERSION, {})
    state = load_checkpoint(tmp_path / "converted.pt")
    assert state["best_ap"] == 0.5 and torch.equal(state["history"], torch.arange(3))
    assert pointdet.load(tmp_path / "converted.pt", device="cpu").class_names == ["a", "b", "c"]


def test_files_that_are_not_torch_checkpoints_say_so(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt: cannot be read as a torch checkpoint \\(not a file torch"):
        load_checkpoint(tmp_path / "notes.pt")
    _checkpoint(tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pt: cannot be read as a torch checkpoint") as caught:
        load_checkpoint(tmp_path / "cut.pt")
    assert "weights_only" not in str(caught.value)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".last.pt.k2j4x9a1", ".best.pt.q8w7e6r5", "last.pt", "notes.txt", ".other.pt.abc"):
        (tmp_path / name).write_bytes(b"x" * 10)
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(path.name for path, _ in removed) == [".best.pt.q8w7e6r5", ".last.pt.k2j4x9a1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.abc", "last.pt", "notes.txt"]


def test_backbone_weights_from_safetensors(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    torch.manual_seed(0)
    reference = resnet18(weights=None).state_dict()
    save_file(reference, str(tmp_path / "resnet18.safetensors"))
    config = apply_overrides(
        get_preset("centernet_r18"), [f"model.backbone_weights={tmp_path / 'resnet18.safetensors'}"]
    )
    model = build_model(config.model, 3)
    weights = model.backbone.state_dict()
    assert torch.equal(weights["layer3.1.conv2.weight"], reference["layer3.1.conv2.weight"])
    assert torch.equal(weights["stem.0.weight"], reference["conv1.weight"])
