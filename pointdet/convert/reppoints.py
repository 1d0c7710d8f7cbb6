"""The official RepPoints v2 and Dense RepPoints v2 checkpoints (Scalsol/RepPointsV2, an mmdetection 2.x fork) as
pointdet checkpoints (``pointdet convert --from reppointsv2``).

An official file is ``{'meta', 'state_dict', 'optimizer'}`` with tensors prefixed ``backbone.`` (mmdetection's
ResNet, DCNv2 ``conv2.conv_offset`` in stages c3-c5 for the "dconv" models), ``neck.`` (its FPN: ``lateral_convs``,
``fpn_convs``, each an mmcv ``ConvModule`` of ``conv`` + ``gn``) and ``bbox_head.`` (``RepPointsV2Head`` or
``DenseRepPointsV2Head``). Every tensor has one place in pointdet's network of the same options, which computes what
the official one computes (tests/test_convert_reppoints.py, from manifests of the official state dicts); the
ResNet's BatchNorm counters are set aside (pointdet's frozen BatchNorm keeps none; they never enter the computation).

The dense head lays its points x first (``(dx, dy)`` per point), pointdet's y first: the converter swaps the pairs
of the init and refine output convs. The official head adds its regular init grid laid y first to these x-first
pairs, so its grid is the transpose of pointdet's default; converted models use the official order
(``point_grid="column_major"``) and keep two more choices of the official code as options (``mask_fusion="finest"``,
``score_sampling="level"``; ``configs.schema.DenseRepPointsV2Config``). Both networks read
RGB images normalised by ImageNet's statistics.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from pointdet.configs import DenseRepPointsV2Config, ExperimentConfig, RepPointsV2Config, get_preset
from pointdet.convert.classes import keypoint_layout
from pointdet.convert.common import (
    COUNTER,
    IMAGENET_RGB,
    Architecture,
    ConversionError,
    Rule,
    checkpoint_classes,
    convert_into,
)
from pointdet.convert.common import read_official as read_file

HEAD = "bbox_head."
# ResNet depth from the number of blocks in stage c4 (bottlenecks).
_DEPTHS = {6: 50, 23: 101}
_FPN_OUTPUTS = {
    0: "layer_blocks.0",
    1: "layer_blocks.1",
    2: "layer_blocks.2",
    3: "extra_blocks.p6",
    4: "extra_blocks.p7",
}


def _conv_module(prefix: str, target: str, norm: str = "gn") -> Rule:
    """mmcv ``ConvModule``s ``{prefix}.{i}.conv`` / ``.{norm}`` -> ``{target}`` positions of a conv-norm-ReLU
    ``nn.Sequential`` tower: ``3i`` and ``3i + 1``."""
    return (
        rf"^{prefix}\.(\d+)\.(conv|{norm})\.",
        lambda m: f"{target}.{3 * int(m[1]) + (0 if m[2] == 'conv' else 1)}.",
    )


def _single(name: str, target: str) -> Rule:
    """An official layer ``bbox_head.{name}`` -> ``head.{target}``."""
    return (rf"^bbox_head\.{re.escape(name)}\.", lambda m: f"head.{target}.")


BACKBONE_AND_NECK: tuple[Rule, ...] = (
    (r"^backbone\.conv1\.", lambda m: "backbone.stem.0."),
    (r"^backbone\.bn1\.", lambda m: "backbone.stem.1."),
    (r"\.conv2\.conv_offset\.", lambda m: ".conv2.offset_mask."),  # DCNv2: 18 offsets then 9 mask logits, as ours
    (
        r"^neck\.lateral_convs\.(\d+)\.(conv|gn)\.",
        lambda m: f"neck.pyramid.inner_blocks.{m[1]}.{0 if m[2] == 'conv' else 1}.",
    ),
    (
        r"^neck\.fpn_convs\.(\d+)\.(conv|gn)\.",
        lambda m: f"neck.pyramid.{_FPN_OUTPUTS[int(m[1])]}.{0 if m[2] == 'conv' else 1}.",
    ),
)


def towers_and_foreground(towers: str) -> tuple[Rule, ...]:
    """The layers both heads share: the class and box towers (under ``{towers}``), the shared conv and the
    foreground branch."""
    return (
        _conv_module(r"bbox_head\.cls_convs", f"{towers}cls_tower"),
        _conv_module(r"bbox_head\.reg_convs", f"{towers}reg_tower"),
        _conv_module(r"bbox_head\.shared_convs", "head.shared"),
        _single("reppoints_sem_out", "foreground.score"),
        (r"^bbox_head\.reppoints_sem_embedding\.(conv|gn)\.", lambda m: f"head.foreground.embedding.{m[1] == 'gn':d}."),
    )


# RepPointsV2Head (``_init_layers``) -> pointdet's RepPointsV2Head (``head.points`` is its RepPoints v1 part).
_CORNER_POOL = {
    "p1_conv1.conv": "branches.0.0", "p1_conv1.gn": "branches.0.1", "p2_conv1.conv": "branches.1.0",
    "p2_conv1.gn": "branches.1.1", "p_conv1": "merge.0", "p_gn1": "merge.1", "conv1": "skip.0", "gn1": "skip.1",
    "conv2.conv": "out.0", "conv2.gn": "out.1",
}  # fmt: skip
REPPOINTS_V2 = Architecture(
    backbone="resnet50",
    first_conv=None,
    rules=(
        *BACKBONE_AND_NECK,
        *towers_and_foreground("head.points."),
        (
            rf"^bbox_head\.hem_(tl|br)\.({'|'.join(re.escape(k) for k in _CORNER_POOL)})\.",
            lambda m: f"head.corners.pools.{0 if m[1] == 'tl' else 1}.{_CORNER_POOL[m[2]]}.",
        ),
        (r"^bbox_head\.reppoints_cls_conv\.weight$", lambda m: "head.points.cls_dcn_weight"),
        (r"^bbox_head\.reppoints_pts_refine_conv\.weight$", lambda m: "head.points.refine_dcn_weight"),
        _single("reppoints_cls_out", "points.cls_out"),
        _single("reppoints_pts_init_conv", "points.init_conv"),
        _single("reppoints_pts_init_out", "points.init_out"),
        _single("reppoints_pts_refine_out", "points.refine_out"),
        (
            r"^bbox_head\.reppoints_hem_(tl|br)_(score|offset)_out\.",
            lambda m: f"head.corners.{m[2]}s.{0 if m[1] == 'tl' else 1}.",
        ),
    ),
)
# DenseRepPointsV2Head -> pointdet's DenseRepPointsV2Head.
DENSE_REPPOINTS_V2 = Architecture(
    backbone="resnet50",
    first_conv=None,
    rules=(
        *BACKBONE_AND_NECK,
        *towers_and_foreground("head."),
        _conv_module(r"bbox_head\.mask_convs", "head.point_scores.tower"),
        _single("reppoints_cls_conv", "cls_conv"),
        _single("reppoints_cls_out", "cls_out"),
        _single("reppoints_pts_init_conv", "init_conv"),
        _single("reppoints_pts_init_out", "init_out"),
        _single("reppoints_pts_refine_conv", "refine_conv"),
        _single("reppoints_pts_refine_out", "refine_out"),
        _single("reppoints_mask_init_conv", "point_scores.hidden"),
        _single("reppoints_mask_init_out", "point_scores.out"),
        _single("mask_fuse_conv", "point_scores.fuse"),
        _single("reppoints_cont_score_out", "contour.score"),
        _single("reppoints_cont_offset_out", "contour.offset"),
    ),
)
METHODS = {"reppoints_v2": REPPOINTS_V2, "dense_reppoints_v2": DENSE_REPPOINTS_V2}


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official file without the backbone's BatchNorm counters (the only tensors set aside)."""
    return {name: tensor for name, tensor in read_file(path).items() if not name.endswith(COUNTER)}


def infer_method(official: dict[str, torch.Tensor]) -> str:
    """``reppoints_v2`` (corner pools) or ``dense_reppoints_v2`` (contour branch)."""
    if f"{HEAD}hem_tl.conv1.weight" in official:
        return "reppoints_v2"
    if f"{HEAD}reppoints_cont_score_out.weight" in official:
        return "dense_reppoints_v2"
    raise ConversionError(
        "not a RepPoints v2 or Dense RepPoints v2 checkpoint of Scalsol/RepPointsV2 (no 'bbox_head.hem_tl.*' corner "
        f"pool, no 'bbox_head.reppoints_cont_score_out.*' contour branch); e.g. {list(official)[:3]}"
    )


def infer_backbone(official: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """(``resnet50`` or ``resnet101``, whether its c3-c5 3x3 convs are DCNv2)."""
    conv2 = official.get("backbone.layer1.0.conv2.weight")
    if conv2 is None or "backbone.layer1.0.conv3.weight" not in official:
        raise ConversionError(
            "the backbone is not a ResNet-50/101 (no 'backbone.layer1.0.conv3.weight'): not supported"
        )
    if conv2.shape[1] != conv2.shape[0]:
        raise ConversionError(f"the backbone's 3x3 convs are grouped ({tuple(conv2.shape)}): ResNeXt is not supported")
    blocks = len({name.split(".")[2] for name in official if name.startswith("backbone.layer3.")})
    if blocks not in _DEPTHS:
        raise ConversionError(f"a ResNet with {blocks} blocks in stage c4: expected {sorted(_DEPTHS)} (ResNet-50/101)")
    return f"resnet{_DEPTHS[blocks]}", "backbone.layer2.0.conv2.conv_offset.weight" in official


def points_y_first(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dense head's tensors with its point pairs in pointdet's (dy, dx) order: the rows of the init and refine
    output convs swapped in pairs (module docstring). Other tensors are returned as they are."""
    converted = dict(official)
    for conv in ("reppoints_pts_init_out", "reppoints_pts_refine_out"):
        for kind in ("weight", "bias"):
            name = f"{HEAD}{conv}.{kind}"
            if name in official:
                tensor = official[name]
                converted[name] = tensor.view(-1, 2, *tensor.shape[1:]).flip(1).reshape(tensor.shape)
    return converted


def converted_reppoints_config(
    method: str, official: dict[str, torch.Tensor], backbone: str, dcn: bool
) -> ExperimentConfig:
    """The R-50 paper-recipe preset of ``method`` with the file's backbone and head sizes and the official code's
    test-time choices: ``exact_minmax`` boxes (RepPoints v2), the dense head's ``mask_fusion="finest"`` and
    ``score_sampling="level"``; images at (1333, 800), keeping their ratio."""
    channels = len(official["neck.lateral_convs.0.conv.weight"])
    norm = "gn" if "neck.lateral_convs.0.gn.weight" in official else "none"
    stacked = len({name.split(".")[2] for name in official if name.startswith(f"{HEAD}cls_convs.")})
    common = {
        "backbone": backbone, "backbone_weights": None, "backbone_dcn": dcn, "channels": channels, "norm": norm,
        "stacked_convs": stacked,
    }  # fmt: skip
    if method == "reppoints_v2":
        base = get_preset("reppoints_v2_r50_fpn")
        kernel = official[f"{HEAD}reppoints_cls_conv.weight"].shape[-1]  # the points are the DCN's k x k taps
        model = RepPointsV2Config(**common, num_points=kernel * kernel)
        model = replace(model, transform="exact_minmax")
    else:
        base = get_preset("dense_reppoints_v2_r50_fpn")
        num_points = len(official[f"{HEAD}reppoints_pts_init_out.weight"]) // 2
        cls_inputs = official[f"{HEAD}reppoints_cls_conv.weight"].shape[1]
        model = DenseRepPointsV2Config(
            **common,
            num_points=num_points,
            num_groups=cls_inputs // (channels + 3),
            num_score_groups=len(official[f"{HEAD}reppoints_mask_init_out.weight"]),
            stacked_mask_convs=len({n.split(".")[2] for n in official if n.startswith(f"{HEAD}mask_convs.")}),
            mask_fusion="finest",
            score_sampling="level",
            point_grid="column_major",
        )
    name = f"{method}_{backbone}{'_dcn' if dcn else ''}_converted"
    return replace(base, name=name, model=model)


def convert_reppoints(path: str | Path, out: str | Path, arch: str | None = None, classes: str | None = None) -> Path:
    """Write the pointdet checkpoint ``out/last.pt`` of an official RepPoints v2 / Dense RepPoints v2 checkpoint.

    Args:
        path: the official ``.pth`` file.
        out: the run folder to write (``pointdet eval/predict/export --weights out``, ``pointdet.load(out)``).
        arch: ``resnet50`` or ``resnet101``; inferred from the tensors when None, checked against them otherwise.
        classes: ``coco`` or a file of names; None = COCO for 80 classes.

    Raises:
        ConversionError: the file is not one of these networks, or its tensors do not map one-to-one.
    """
    official = read_official(path)
    method = infer_method(official)
    backbone, dcn = infer_backbone(official)
    if arch is not None and arch != backbone:
        raise ConversionError(f"{path}: --arch {arch}, but the file holds a {backbone} network")
    for needed in ("neck.lateral_convs.0.conv.weight", f"{HEAD}reppoints_cls_out.weight"):
        if needed not in official:
            raise ConversionError(f"{path}: no '{needed}': not a {method} network of Scalsol/RepPointsV2")
    num_classes = len(official[f"{HEAD}reppoints_cls_out.weight"])
    names = checkpoint_classes(path, num_classes, classes)
    config = converted_reppoints_config(method, official, backbone, dcn)
    if method == "dense_reppoints_v2":
        official = points_y_first(official)
    converted_from = {"file": str(path), "framework": "reppointsv2", "arch": backbone, "task": method}
    architecture = replace(METHODS[method], backbone=backbone)
    return convert_into(
        official, architecture, config, names, keypoint_layout("det"), out, converted_from, IMAGENET_RGB
    )
