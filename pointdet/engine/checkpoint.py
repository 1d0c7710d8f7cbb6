"""Checkpoints: written atomically, read without unpickling (``weights_only=True``), validated on load."""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from pointdet.engine.output_paths import NO_SPACE, DiskFullError, free_space, is_disk_full
from pointdet.errors import PointdetError

CHECKPOINT_FORMAT = "pointdet-checkpoint-v1"
logger = logging.getLogger(__name__)
CHECKPOINT_NAMES = ("last.pt", "best.pt")


class CheckpointError(PointdetError, ValueError):
    """A file that is not a pointdet checkpoint, or one that does not fit the model; the message names it."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` via a temporary file and ``os.replace``: a crash never leaves half a file.

    Raises:
        DiskFullError: the disk filled up while writing; ``path`` still holds what it held before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, Exception) and is_disk_full(error):
            kept = f"the previous {path.name} is intact" if path.exists() else f"there was no earlier {path.name}"
            raise DiskFullError(
                f"{path}: not written, the disk holding {path.parent} is full ({NO_SPACE}; "
                f"{free_space(path.parent)} after removing the partial file); {kept}"
            ) from None
        raise


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: itself, or for a run folder its ``last.pt`` (the latest weights), which is
    logged, since the folder's ``best.pt`` holds other weights.

    Raises:
        CheckpointError: no such file; the message names the checkpoints the folder does hold.
    """
    path = Path(path)
    if path.is_dir():
        logger.info("%s is a run folder: using its last.pt (the latest weights; best.pt: the best evaluated)", path)
        path = path / "last.pt"
    if path.is_file():
        return path
    held = sorted(p.name for p in path.parent.glob("*.pt")) if path.parent.is_dir() else []
    if not held:
        raise CheckpointError(f"{path}: checkpoint not found")
    suggested = "last.pt" if "last.pt" in held else held[0]
    why = " (the first evaluation writes best.pt: this run stopped before one)" if path.name == "best.pt" else ""
    raise CheckpointError(
        f"{path}: checkpoint not found; {path.parent} holds {', '.join(held)}{why}: use {path.parent / suggested}"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a pointdet checkpoint safely.

    Raises:
        CheckpointError: missing file, a file torch cannot read safely, or not a pointdet checkpoint.
    """
    path = checkpoint_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's safe reader refused it: pickled objects, or not torch's
        raise CheckpointError(_refusal(path, str(error))) from None
    except Exception as error:  # torch raises several types for damaged files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint ({type(error).__name__}: {first_line})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a pointdet checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return state


def _refusal(path: Path, reason: str) -> str:
    """Why ``path`` was not loaded, without PyTorch's advice to unpickle it (``weights_only=False``)."""
    if not zipfile.is_zipfile(path):
        return f"{path}: cannot be read as a torch checkpoint (not a file torch.save wrote, or a damaged one)"
    culprit = re.search(r"GLOBAL ([\w.]+)", reason)
    what = f" (e.g. {culprit.group(1)})" if culprit else ""
    return (
        f"{path}: not loaded — besides tensors it holds pickled Python objects{what}, and unpickling a file can "
        "run any code it names, so pointdet never does. If the file is yours or from a source you trust, convert "
        'it once into plain tensors, numbers and strings (README, "Resuming": checkpoints from elsewhere) and '
        "load the converted file."
    )


def remove_stale_temporaries(folder: str | Path) -> list[tuple[Path, int]]:
    """Delete the temporary files (``.last.pt.XXXX``) a save that was killed left in ``folder``.

    Returns:
        ``(path, size in bytes)`` of every file removed.
    """
    removed = []
    for name in CHECKPOINT_NAMES:
        for temporary in Path(folder).glob(f".{name}.*"):
            if temporary.is_file():
                size = temporary.stat().st_size
                temporary.unlink(missing_ok=True)
                removed.append((temporary, size))
    return removed


def load_model_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict`` with an error that says which parameters disagree, e.g. a checkpoint of another model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source}: weights do not fit this model — {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(mismatched)} of another shape (e.g. {mismatched[:2]})"
        )
    model.load_state_dict(state_dict)


# Parameter prefixes renamed between config versions: (version that introduced the name, old prefix, new prefix).
_RENAMED_PREFIXES = ((2, "head.mask_head.", "roi_heads."),)  # v2: the mask head became the RoI stage


# The version from which the DCNs under a prefix have a bias, as the official DCNv2: 3, the CenterNet up-samplers
# (all the DCNs a neck holds); 4, the LSNet head towers (all the DCNv2 layers a head holds).
_DCN_BIAS_VERSIONS = (("neck.", 3), ("head.", 4))


def model_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint of any version, under today's parameter names."""
    version = state.get("config_version", 1)
    weights = {}
    for name, tensor in state["model"].items():
        for introduced, old, new in _RENAMED_PREFIXES:
            if version < introduced and name.startswith(old):
                name = new + name.removeprefix(old)
        weights[name] = tensor
    for prefix, introduced in _DCN_BIAS_VERSIONS:
        if version < introduced:
            weights.update(_zero_dcn_biases(weights, prefix))
    return weights


def _zero_dcn_biases(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A zero bias for every deformable convolution under ``prefix`` that has none: an older DCN without a bias
    computed exactly what the same DCN with a zero bias computes."""
    biases = {}
    for name, tensor in weights.items():
        if name.startswith(prefix) and name.endswith(".offset_mask.weight"):
            owner = name.removesuffix("offset_mask.weight")
            if owner + "weight" in weights and owner + "bias" not in weights:
                biases[owner + "bias"] = torch.zeros(len(weights[owner + "weight"]), dtype=tensor.dtype)
    return biases
