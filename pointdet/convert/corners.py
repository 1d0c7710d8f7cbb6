"""Corner detectors' official checkpoints as pointdet checkpoints: CentripetalNet's own release
(``--from centripetalnet``, KiveeDong/CentripetalNet, an mmdetection v1 model) and mmdetection v2/v3's CornerNet and
CentripetalNet (``--from mmdet``). Both are ``{'meta', 'state_dict', ...}`` files whose tensors are prefixed
``backbone.`` (the Hourglass) and ``bbox_head.`` (the corner head).

Both networks compute what pointdet's ``Hourglass`` + ``CornerHead`` compute (tests/test_convert_corners.py checks
it against tests/official_reference.py, from manifests of the official state dicts): the same hourglass, the same
corner-pool module (``top``/``left`` pools for top-left corners, ``bottom``/``right`` for bottom-right), 3x3 conv
+ ReLU + 1x1 branches, and CentripetalNet's guiding shift -> 1x1 conv (no bias) -> 3x3 DCNv1 (no bias, no
activation) on the pooled feature -> centripetal-shift branch. The intermediate stack's branches are ``mid_*`` in
CentripetalNet's release and level 0 in mmdetection.

CentripetalNet's release also holds a dense mask branch (``convs``/``conv_logits``: four 3x3 convs and a 1x1 conv
to 81 maps over the whole image, for both stacks) that its test (``simple_test``/``aug_test``) never reads; it is
not the paper's RoIAlign mask head (pointdet's ``MaskHead``), so its tensors are dropped and the converted model
detects boxes. CentripetalNet's release reads BGR images normalised by ImageNet's statistics, mmdetection's RGB
images; both convert to pointdet's RGB input with ImageNet normalisation.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from pointdet.configs import CornerConfig, ExperimentConfig, get_preset
from pointdet.convert import common
from pointdet.convert.classes import keypoint_layout
from pointdet.convert.common import (
    HOURGLASS_LEVEL,
    IMAGENET_RGB,
    RESIDUAL_BODY,
    Architecture,
    ConversionError,
    checkpoint_classes,
    convert_into,
    cornernet_hourglass_rules,
    read_official,
)

FRAMEWORKS = ("centripetalnet", "mmdet")
RELEASE_SOFT_NMS_SIGMA = 0.7  # the release's per-class Gaussian soft-NMS (mmdetection: 0.5)
HEAD = "bbox_head."
# Sub-module of a corner-pool module -> pointdet's ``CornerPoolModule``: the two directional branches (conv-BN-ReLU),
# the merge after pooling (conv-BN), the 1x1 skip (conv-BN) and the last conv-BN-ReLU.
_RELEASE_POOL = {
    "p1_conv1.conv": "branches.0.0", "p1_conv1.bn": "branches.0.1", "p2_conv1.conv": "branches.1.0",
    "p2_conv1.bn": "branches.1.1", "p_conv1": "merge.0", "p_bn1": "merge.1", "conv1": "skip.0", "bn1": "skip.1",
    "conv2.conv": "out.0", "conv2.bn": "out.1",
}  # fmt: skip
_MMDET_POOL = {
    "direction1_conv.conv": "branches.0.0", "direction1_conv.bn": "branches.0.1",
    "direction2_conv.conv": "branches.1.0", "direction2_conv.bn": "branches.1.1", "aftpool_conv.conv": "merge.0",
    "aftpool_conv.bn": "merge.1", "conv1.conv": "skip.0", "conv1.bn": "skip.1", "conv2.conv": "out.0",
    "conv2.bn": "out.1",
}  # fmt: skip
# Branch of one corner type -> pointdet's ``CornerBranches`` attribute.
_RELEASE_BRANCHES = {
    "pool": "pool", "heat": "heat", "off": "offset", "off_c": "guiding", "off_c_2": "centripetal",
    "offset": "adaption.offset", "fadp": "adaption",
}  # fmt: skip
_MMDET_BRANCHES = {
    "pool": "pool", "heat": "heat", "off": "offset", "emb": "embedding", "guiding_shift": "guiding",
    "centripetal_shift": "centripetal", "dcn_offset": "adaption.offset", "feat_adaption": "adaption",
}  # fmt: skip
_PREDICTIONS = "heat|offset|guiding|centripetal|embedding"


def _alternatives(names: dict[str, str]) -> str:
    """A regex alternation of ``names``' keys, longest first."""
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


def _pool_rule(parts: dict[str, str]) -> common.Rule:
    return (rf"\.pool\.({_alternatives(parts)})\.", lambda m: f".pool.{parts[m[1]]}.")


# A prediction branch is conv3x3 (bias) + ReLU + conv1x1: pointdet's positions 0 and 2.
_BRANCH_LAYERS: tuple[common.Rule, ...] = (
    (rf"\.({_PREDICTIONS})\.0\.conv\.", lambda m: f".{m[1]}.0."),
    (rf"\.({_PREDICTIONS})\.1\.(conv\.)?", lambda m: f".{m[1]}.2."),
)


def _release_head(match: re.Match) -> str:
    stack = 0 if match["mid"] else 1  # ``mid_*`` reads the first stack (intermediate supervision)
    return f"head.stacks.{stack}.{match['corner']}.{_RELEASE_BRANCHES[match['branch']]}."


CENTRIPETALNET_RELEASE = Architecture(
    backbone="hourglass104",
    first_conv="backbone.pre.0.conv.weight",
    rules=(
        (
            rf"^bbox_head\.(?P<mid>mid_)?(?P<corner>tl|br)_(?P<branch>{_alternatives(_RELEASE_BRANCHES)})\.",
            _release_head,
        ),
        _pool_rule(_RELEASE_POOL),
        *_BRANCH_LAYERS,
        *cornernet_hourglass_rules(r"backbone\.", "hg_modules"),
    ),
    unused=tuple(f"{HEAD}{name}." for name in ("convs", "mid_convs", "conv_logits", "mid_conv_logits")),
)


def _conv_bn(prefix: str, target: str) -> common.Rule:
    """mmcv ``ConvModule``s ``{prefix}.{s}.conv`` / ``.bn`` -> ``{target}.{s}.0`` / ``.1``."""
    return (rf"^{prefix}\.(\d+)\.(conv|bn)\.", lambda m: f"{target}.{m[1]}.{0 if m[2] == 'conv' else 1}.")


def mmdet_architecture(backbone: str) -> Architecture:
    """mmdetection's ``HourglassNet`` (``backbone``: ``hourglass104`` or ``hourglass52``) + ``CornerHead`` or
    ``CentripetalHead`` (one set of branches per stack, ``{corner}_{branch}.{stack}``)."""
    return Architecture(
        backbone=backbone,
        first_conv=None,  # mmdetection's corner configs read RGB (``to_rgb=True``)
        rules=(
            (
                rf"^bbox_head\.(tl|br)_({_alternatives(_MMDET_BRANCHES)})\.(\d+)\.",
                lambda m: f"head.stacks.{m[3]}.{m[1]}.{_MMDET_BRANCHES[m[2]]}.",
            ),
            _pool_rule(_MMDET_POOL),
            *_BRANCH_LAYERS,
            (r"\.adaption\.offset\.conv\.", lambda m: ".adaption.offset."),
            # ``stem`` = ConvModule(7x7, stride 2) + a one-block ResLayer of stride 2; a BasicBlock's shortcut is
            # ``downsample``; ``inters`` is one ResLayer whose blocks link the stacks.
            (r"^backbone\.stem\.0\.conv\.", lambda m: "backbone.stem.0."),
            (r"^backbone\.stem\.0\.bn\.", lambda m: "backbone.stem.1."),
            (r"^backbone\.stem\.1\.0\.", lambda m: "backbone.stem.3."),
            (r"^backbone\.hourglass_modules\.", lambda m: "backbone.hourglasses."),
            HOURGLASS_LEVEL,
            (r"\.downsample\.", lambda m: ".skip."),
            _conv_bn(r"backbone\.out_convs", "backbone.outputs"),
            _conv_bn(r"backbone\.conv1x1s", "backbone.inter_skip"),
            _conv_bn(r"backbone\.remap_convs", "backbone.inter_out"),
            (r"^backbone\.inters\.", lambda m: "backbone.inter."),
            RESIDUAL_BODY,
        ),
    )


def infer_method(official: dict[str, torch.Tensor], framework: str, source: str | Path) -> str:
    """``centripetalnet`` (guiding-shift branches) or ``cornernet`` (embedding branches) (``source``: the file)."""
    guiding = "bbox_head.tl_off_c.0.conv.weight" if framework == "centripetalnet" else "bbox_head.tl_guiding_shift."
    embedding = "bbox_head.tl_emb."
    if any(name.startswith(guiding) for name in official):
        return "centripetalnet"
    if framework == "mmdet" and any(name.startswith(embedding) for name in official):
        return "cornernet"
    expected = (
        "a CentripetalNet release" if framework == "centripetalnet" else "an mmdetection CornerNet or CentripetalNet"
    )
    raise ConversionError(
        f"{source}: not {expected} checkpoint: no '{guiding}*' tensors; its tensors are e.g. {list(official)[:3]}"
    )


def infer_backbone(official: dict[str, torch.Tensor], framework: str, source: str | Path) -> str:
    """``hourglass104`` (two stacks) or ``hourglass52`` (one, mmdetection only) (``source``: the file)."""
    stacks_name = "backbone.hg_modules." if framework == "centripetalnet" else "backbone.hourglass_modules."
    stacks = {name.split(".")[2] for name in official if name.startswith(stacks_name)}
    backbones = {2: "hourglass104", 1: "hourglass52"} if framework == "mmdet" else {2: "hourglass104"}
    if len(stacks) not in backbones:
        raise ConversionError(
            f"{source}: {len(stacks)} '{stacks_name}*' hourglass stacks: expected {sorted(backbones)}"
        )
    return backbones[len(stacks)]


def architecture_for(framework: str, backbone: str) -> Architecture:
    return CENTRIPETALNET_RELEASE if framework == "centripetalnet" else mmdet_architecture(backbone)


def converted_corner_config(framework: str, method: str, backbone: str) -> ExperimentConfig:
    """The paper-recipe corner preset with the file's network (no mask head: see the module docstring), the
    pairing rule of the file's code (the release's ``official``: no centre-box threshold, reversed central-region
    threshold, soft-NMS sigma 0.7; mmdetection's ``code``: the threshold, the paper's region, sigma 0.5;
    METHODS.md App. A #7-8) and test geometry (the image at its own size, zero-padded to the hourglass's multiple
    of 128, flip test)."""
    config = get_preset("centripetalnet_hg104")
    release = framework == "centripetalnet"
    model = CornerConfig(
        method=method,
        backbone=backbone,
        mask_head=False,
        pair_score="official" if release else "code",
        central_region="official" if release else "paper",
        soft_nms_sigma=RELEASE_SOFT_NMS_SIGMA if release else config.model.soft_nms_sigma,
    )
    data = replace(config.data, test_resize="original")
    return replace(config, name=f"{method}_{backbone}_{framework}_converted", model=model, data=data)


def convert_corners(
    path: str | Path, out: str | Path, framework: str, arch: str | None = None, classes: str | None = None
) -> Path:
    """Write the pointdet checkpoint ``out/last.pt`` of an official CentripetalNet / mmdetection corner checkpoint.

    Args:
        path: the official ``.pth`` file.
        out: the run folder to write (``pointdet eval/predict/export --weights out``, ``pointdet.load(out)``).
        framework: ``centripetalnet`` (the authors' release) or ``mmdet`` (mmdetection v2/v3).
        arch: ``hourglass104`` or ``hourglass52``; inferred from the tensors when None, checked against them
            otherwise.
        classes: ``coco`` or a file of names; None = COCO for 80 classes.

    Raises:
        ConversionError: the file is not one of these networks, or its tensors do not map one-to-one.
    """
    if framework not in FRAMEWORKS:
        raise ConversionError(f"--from {framework}: corner checkpoints come from {', '.join(FRAMEWORKS)}")
    official = read_official(path)
    method, backbone = infer_method(official, framework, path), infer_backbone(official, framework, path)
    if arch is not None and arch != backbone:
        raise ConversionError(f"{path}: --arch {arch}, but the file holds a {backbone} network")
    heat = "bbox_head.tl_heat.1.weight" if framework == "centripetalnet" else "bbox_head.tl_heat.0.1.conv.weight"
    if heat not in official:
        raise ConversionError(f"{path}: no top-left heatmap branch ({heat})")
    num_classes = len(official[heat])
    names = checkpoint_classes(path, num_classes, classes, branch="heatmap")
    config = converted_corner_config(framework, method, backbone)
    converted_from = {"file": str(path), "framework": framework, "arch": backbone, "task": "det"}
    architecture = architecture_for(framework, backbone)
    return convert_into(
        official, architecture, config, names, keypoint_layout("det"), out, converted_from, IMAGENET_RGB
    )
