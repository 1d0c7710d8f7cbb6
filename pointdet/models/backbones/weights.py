"""Loading ImageNet weights for a backbone: from a local file, or by name (``imagenet``) from torch's cache, where the
standard file is downloaded once, as torchvision does."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from pointdet.errors import PointdetError


class WeightsError(PointdetError, ValueError):
    """A weights file that is missing, unreadable or not for this network; the message names it."""


IMAGENET = "imagenet"
# The official DLA release's ImageNet DLA-34 (the file CenterNet starts from).
DLA34_IMAGENET_URL = "http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth"


def imagenet_url(backbone: str) -> str:
    """Where the standard ImageNet weights of ``backbone`` are published: torchvision's ``IMAGENET1K_V1`` for
    ``resnet18``..``resnet101`` (the weights the papers start from), the official DLA file for ``dla34``."""
    if backbone == "dla34":
        return DLA34_IMAGENET_URL
    return torchvision.models.get_model_weights(backbone).IMAGENET1K_V1.url


def imagenet_weights_file(backbone: str) -> Path:
    """The ImageNet file of ``backbone`` in torch's cache (``$TORCH_HOME/hub/checkpoints``), downloaded if absent.

    Raises:
        WeightsError: the file is not cached and cannot be downloaded; the message says which file to place where.
    """
    url = imagenet_url(backbone)
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    # torchvision's names carry the first digits of the file's SHA-256, which the download checks.
    digest = re.search(r"-([a-f0-9]{8,})\.pth$", path.name) if "download.pytorch.org" in url else None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=digest[1] if digest else None)
    except Exception as error:  # urllib, socket and hash errors: all mean "not available here"
        raise WeightsError(
            f"model.backbone_weights=imagenet: {backbone}'s ImageNet weights are not in the torch cache and could not "
            f"be downloaded ({type(error).__name__}: {error}); place {path.name} (from {url}) at {path}, or train "
            "from scratch with model.backbone_weights=null"
        ) from None
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (read with ``weights_only=True``, never unpickled).

    Accepts plain state dicts and the common wrappers ``{"state_dict": ...}`` / ``{"model": ...}`` (pointdet
    checkpoints among them).

    Raises:
        WeightsError: the file is missing, cannot be read safely or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise several types for corrupt or unsafe files
        raise WeightsError(
            f"{path}: cannot be read as a safe weights file ({type(error).__name__}: {error})"
        ) from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_backbone_weights(
    module: nn.Module,
    path: str | Path,
    ignore_prefixes: tuple[str, ...] = ("fc.",),
    strict: bool = False,
) -> None:
    """Load a classification checkpoint (torchvision or timm naming) into ``module``, skipping the classifier.

    Args:
        ignore_prefixes: tensors of the file that are not read (the classifier; tensors the original network holds
            but never computes with).
        strict: also refuse tensors of the file that the module does not have (outside ``ignore_prefixes``).

    Raises:
        WeightsError: the file is missing or unreadable, or backbone parameters are missing from it or have other
            shapes (names the first ones); with ``strict``, it holds tensors this backbone does not have.
    """
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore_prefixes)}
    check_backbone_state(own, state, path)
    unexpected = [k for k in state if k not in own]
    if strict and unexpected:
        raise WeightsError(
            f"{path}: not weights for this backbone ({len(unexpected)} tensors it does not have, e.g. {unexpected[:3]})"
        )
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def check_backbone_state(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: str | Path
) -> None:
    """Check that ``state`` holds every tensor of ``expected`` with the same shape.

    Batch-norm ``num_batches_tracked`` counters may be absent (files written before PyTorch 0.4.1 have none; with a
    fixed momentum they never enter the computation): the module keeps its own.

    Raises:
        WeightsError: tensors are missing from ``state`` or have other shapes (names the file and the first ones).
    """
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or mismatched:
        raise WeightsError(
            f"{path}: not weights for this backbone ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(mismatched)} with other shapes, e.g. {mismatched[:3]})"
        )
