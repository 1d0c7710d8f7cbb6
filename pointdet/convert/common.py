"""What every ``pointdet convert --from ...`` shares: reading an official file safely, renaming its tensors onto
pointdet's network one-to-one (or refusing with one message that lists every disagreement), the hourglass naming
that CenterNet, CentripetalNet and mmdetection have in common, and writing the pointdet checkpoint."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pointdet.configs import CONFIG_VERSION, ExperimentConfig, config_to_dict
from pointdet.convert.classes import ClassList, KeypointLayout, class_list
from pointdet.engine.checkpoint import save_checkpoint
from pointdet.errors import PointdetError
from pointdet.models.backbones.weights import read_state_dict
from pointdet.models.build import build_model

COUNTER = "num_batches_tracked"
LISTED = 12  # names shown per kind of disagreement
# ImageNet's mean and standard deviation, RGB order, [0, 1] units (mmdetection's ``img_norm_cfg``).
IMAGENET_RGB = {"pixel_mean": [0.485, 0.456, 0.406], "pixel_std": [0.229, 0.224, 0.225]}


class ConversionError(PointdetError, ValueError):
    """An official checkpoint that does not convert: the message lists every tensor that disagrees."""


Rule = tuple[str, Callable[[re.Match], str]]


@dataclass(frozen=True)
class Architecture:
    """How one official network's tensors are named in pointdet.

    Attributes:
        backbone: pointdet's ``model.backbone``.
        first_conv: the official name of the convolution that reads the image when the official network reads BGR
            images; its input channels are reversed, so that the converted model reads RGB images as the official
            one reads BGR. None for networks that read RGB.
        rules: ``(pattern, replacement)`` applied in order with ``re.sub`` to every official name.
        unused: prefixes of official tensors the official forward never reads (dropped).
    """

    backbone: str
    first_conv: str | None
    rules: tuple[Rule, ...]
    unused: tuple[str, ...] = ()


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint (read with ``weights_only=True``; the ``state_dict`` of
    ``{'epoch' | 'meta', 'state_dict', ...}`` files), without ``module.`` prefixes."""
    return {name.removeprefix("module."): tensor for name, tensor in read_state_dict(path).items()}


def pointdet_state(
    official: dict[str, torch.Tensor], architecture: Architecture, model: torch.nn.Module, source: str | Path
) -> dict[str, torch.Tensor]:
    """The official tensors under pointdet's names, for ``model``; raises unless they fit it one-to-one.

    Raises:
        ConversionError: official tensors with no place in ``model`` or with the place of another, tensors of
            ``model`` the file lacks (BN counters aside), or tensors of another shape; all of them are listed.
    """
    own = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    official_name: dict[str, str] = {}
    unknown, twice = [], []
    for name, tensor in official.items():
        if name.startswith(architecture.unused):
            continue
        new = name
        for pattern, replacement in architecture.rules:
            new = re.sub(pattern, replacement, new)
        if name == architecture.first_conv:
            tensor = tensor.flip(1)  # BGR -> RGB input channels
        if new in renamed:
            twice.append(f"{official_name[new]} and {name} -> {new}")
        elif new in own:
            renamed[new], official_name[new] = tensor, name
        else:
            unknown.append(name)
    missing = [name for name in own if name not in renamed and not name.endswith(COUNTER)]
    reshaped = [
        f"{official_name[name]} {tuple(tensor.shape)} -> {name} {tuple(own[name].shape)}"
        for name, tensor in renamed.items()
        if tensor.shape != own[name].shape
    ]
    if unknown or twice or missing or reshaped:
        problems = [
            f"{len(names)} {what}: {', '.join(names[:LISTED])}{', ...' if len(names) > LISTED else ''}"
            for what, names in (
                ("official tensors with no place in pointdet's network", unknown),
                ("pairs of official tensors with the same place", twice),
                ("tensors of pointdet's network missing from the file", missing),
                ("tensors of another shape", reshaped),
            )
            if names
        ]
        raise ConversionError(f"{source}: does not convert — " + "; ".join(problems))
    return {name: renamed.get(name, tensor).to(tensor.dtype) for name, tensor in own.items()}


# --- Hourglass names. CornerNet's ``kp_module`` (CenterNet's ``large_hourglass.py`` and CentripetalNet's
# ``hourglass.py`` keep it) and mmdetection's ``HourglassModule`` name the four parts of a level alike; pointdet's
# ``HourglassLevel`` calls them skip, down, inner, up. A residual is conv1, bn1, (ReLU), conv2, bn2 in all three:
# pointdet's ``Residual.body`` positions 0, 1, 3, 4.
HOURGLASS_LEVEL: Rule = (
    r"\.(up1|low1|low2|low3)(?=\.)",
    lambda m: {"up1": ".skip", "low1": ".down", "low2": ".inner", "low3": ".up"}[m[1]],
)
RESIDUAL_BODY: Rule = (
    r"\.(conv1|bn1|conv2|bn2)\.",
    lambda m: {"conv1": ".body.0.", "bn1": ".body.1.", "conv2": ".body.3.", "bn2": ".body.4."}[m[1]],
)


def cornernet_hourglass_rules(prefix: str, stacks: str) -> tuple[Rule, ...]:
    """CornerNet's ``exkp`` hourglass (``pre``, ``{stacks}``, ``cnvs``, ``inters``, ``inters_``, ``cnvs_``) under
    the name prefix ``prefix`` (a regex, e.g. ``backbone\\.``) -> ``backbone.*``. ``convolution`` = conv, bn, relu.
    Rules for other parts of a network must run first: the residual rule matches any ``.conv1.`` left over."""
    return (
        (rf"^{prefix}pre\.0\.conv\.", lambda m: "backbone.stem.0."),
        (rf"^{prefix}pre\.0\.bn\.", lambda m: "backbone.stem.1."),
        (rf"^{prefix}pre\.1\.", lambda m: "backbone.stem.3."),
        (rf"^{prefix}{stacks}\.(\d+)\.", lambda m: f"backbone.hourglasses.{m[1]}."),
        HOURGLASS_LEVEL,
        (rf"^{prefix}cnvs\.(\d+)\.(conv|bn)\.", lambda m: f"backbone.outputs.{m[1]}.{0 if m[2] == 'conv' else 1}."),
        (rf"^{prefix}inters\.(\d+)\.", lambda m: f"backbone.inter.{m[1]}."),
        (rf"^{prefix}inters_\.(\d+)\.", lambda m: f"backbone.inter_skip.{m[1]}."),
        (rf"^{prefix}cnvs_\.(\d+)\.", lambda m: f"backbone.inter_out.{m[1]}."),
        RESIDUAL_BODY,
    )


def convert_into(
    official: dict[str, torch.Tensor],
    architecture: Architecture,
    config: ExperimentConfig,
    classes: ClassList,
    keypoints: KeypointLayout,
    out: str | Path,
    converted_from: dict[str, str],
    normalisation: dict[str, list[float]] | None = None,
) -> Path:
    """Build pointdet's network of ``config`` (no initial weights), put the official tensors in it one-to-one and
    write the checkpoint ``out/last.pt`` (``write_checkpoint``).

    Raises:
        ConversionError: the tensors do not fit the network one-to-one (``pointdet_state``).
    """
    model = build_model(
        config.model, len(classes.names), len(keypoints.names), keypoints.flip_pairs, with_backbone_weights=False
    )
    state = pointdet_state(official, architecture, model, converted_from["file"])
    return write_checkpoint(out, state, config, classes, keypoints, converted_from, normalisation)


def write_checkpoint(
    out: str | Path,
    state: dict[str, torch.Tensor],
    config: ExperimentConfig,
    classes: ClassList,
    keypoints: KeypointLayout,
    converted_from: dict[str, str],
    normalisation: dict[str, list[float]] | None = None,
) -> Path:
    """Write ``out/last.pt``: a weights-only pointdet checkpoint (what a training run's ``best.pt`` holds), noting
    where it came from; ``normalisation`` (``pixel_mean``/``pixel_std``, RGB, [0, 1]) when the official network
    normalised otherwise than pointdet's default."""
    target = Path(out) / "last.pt"
    checkpoint = {
        "model": state,
        "config": config_to_dict(config),
        "config_version": CONFIG_VERSION,
        "class_names": classes.names,
        "category_ids": classes.category_ids,
        "keypoint_names": keypoints.names,
        "flip_pairs": [list(pair) for pair in keypoints.flip_pairs],
        "skeleton": [list(pair) for pair in keypoints.skeleton],
        "converted_from": converted_from,
        **(normalisation or {}),
    }
    save_checkpoint(checkpoint, target)
    return target


def checkpoint_classes(
    path: Path, num_classes: int, classes: str | None, default: str = "coco", branch: str = "classifier"
) -> ClassList:
    """The class names of a checkpoint whose ``branch`` has ``num_classes`` outputs: ``--classes`` when given, else
    ``default`` (``coco``, ``person``...) when its count matches.

    Raises:
        ConversionError: no ``--classes`` for a count the default does not have, or names of another count.
    """
    if classes is None and len(class_list(default).names) != num_classes:
        raise ConversionError(f"{path}: {num_classes} classes: name them with --classes (a file, one name a line)")
    names = class_list(classes or default)
    if len(names.names) != num_classes:
        raise ConversionError(f"{path}: the {branch} has {num_classes} classes, --classes {classes} names "
                              f"{len(names.names)}")  # fmt: skip
    return names
