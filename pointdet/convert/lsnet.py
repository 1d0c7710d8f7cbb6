"""The official LSNet checkpoints (Duankaiwen/LSNet, "Location-Sensitive Visual Recognition with Cross-IOU Loss", an
mmdetection v2 fork) as pointdet checkpoints: detection (``LSHead``, ``task='bbox'``), contour segmentation
(``segm``), pose with the object box (``pose_bbox``) or the keypoint box (``pose_kbox``), and LSNet-CPV
(``LSCPVHead``). An official file is mmcv's ``{'meta', 'state_dict', 'optimizer'}``; its tensors are prefixed
``backbone.`` (mmdetection's ResNet, ResNeXt or Res2Net, DCNv2 in c3-c5 for the ``dconv`` configs), ``neck.`` (FPN
P3-P7 with GroupNorm) and ``bbox_head.``.

Every official tensor has one place in pointdet's network of the same configuration, which computes what the
official one computes (every raw head output equal in float64 to the official networks built from their own source:
docs/converting.md); the tests check the placement from manifests of the official state dicts
(tests/data/official_lsnet/). The official test path reads every tensor; only the backbone's BatchNorm counters are
set aside (``set_aside``). The converted model rescales the pyramid DCN's offsets as the code does
(``model.pyramid_scaling=code``, ``heads.lsnet``) and reads RGB images normalised by ImageNet's statistics
(``img_norm_cfg``, ``to_rgb=True``).

Official head module -> pointdet: the towers ``{cls,bbox,segm,pose,shared}_convs.k`` (``DCNConvModule``:
``conv`` DCNv2 with ``conv_offset``, GroupNorm ``bn``) -> ``cls_tower``, ``reg_tower`` (the task's landmark branch),
``box_branch.tower`` (pose obj-box's bbox branch), ``shared`` (CPV); per branch the init convs ``pts_X_init_conv`` /
``pts_X_init_out`` and the landmark features ``pts_X_refine_conv`` (the pyramid DCN weight), ``X_af_dcn_conv.0``,
``X_feat_conv``, ``X_GN``, ``pts_X_refine_out`` (the classifier: ``pts_cls_conv``, ``cls_*``, ``pts_cls_out``);
LSNet-CPV's corner pools ``hem_tl`` / ``hem_br`` and their ``reppoints_hem_*`` convs, and the foreground branch
``reppoints_sem_out`` / ``reppoints_sem_embedding``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from pointdet.configs import ExperimentConfig, get_preset
from pointdet.convert.classes import ClassList, KeypointLayout, keypoint_layout
from pointdet.convert.common import (
    COUNTER,
    IMAGENET_RGB,
    Architecture,
    ConversionError,
    Rule,
    checkpoint_classes,
    convert_into,
    read_official,
)
from pointdet.models.backbones.res2net import RES2NETS
from pointdet.models.backbones.resnet import RESNETS

HEAD = "bbox_head."
# The official head's ``task`` -> (pointdet task, pose box, the branch whose towers are the landmark tower).
TASKS = {
    "bbox": ("detection", "object", "bbox"),
    "segm": ("segmentation", "object", "segm"),
    "pose_bbox": ("pose", "object", "pose"),
    "pose_kbox": ("pose", "keypoints", "pose"),
}
# Within a corner pool (``CornerPoolPack``) -> pointdet's ``CornerPoolModule``.
_POOL = {
    "p1_conv1.conv": "branches.0.0", "p1_conv1.gn": "branches.0.1", "p2_conv1.conv": "branches.1.0",
    "p2_conv1.gn": "branches.1.1", "p_conv1": "merge.0", "p_gn1": "merge.1", "conv1": "skip.0", "gn1": "skip.1",
    "conv2.conv": "out.0", "conv2.gn": "out.1",
}  # fmt: skip
# mmdetection FPN with 3 backbone inputs: fpn_convs 0-2 are the output convs, 3 and 4 make P6 and P7.
_FPN_OUTPUTS = {"0": "layer_blocks.0", "1": "layer_blocks.1", "2": "layer_blocks.2", "3": "extra_blocks.p6",
                "4": "extra_blocks.p7"}  # fmt: skip
# Blocks of stage c4 -> ResNet depth (bottlenecks).
_DEPTHS = {6: 50, 23: 101}


def _conv_module(match: re.Match, target: str) -> str:
    """An mmcv ``ConvModule`` ``conv`` / ``gn`` -> a pointdet Sequential's positions 0 / 1."""
    return f"{target}.{0 if match['part'] == 'conv' else 1}."


def backbone_rules() -> tuple[Rule, ...]:
    """mmdetection's ResNet / ResNeXt (``style='pytorch'``): torchvision's names, the stem as pointdet's ``stem``;
    its Res2Net: pointdet's ``Res2Net`` keeps the names; a DCNv2's ``conv_offset`` as ``offset_mask``."""
    return (
        (r"^backbone\.conv1\.", lambda m: "backbone.stem.0."),
        (r"^backbone\.bn1\.", lambda m: "backbone.stem.1."),
        (r"^(backbone\.layer\d\.\d+\.(conv2|convs\.\d))\.conv_offset\.", lambda m: f"{m[1]}.offset_mask."),
    )


def neck_rules() -> tuple[Rule, ...]:
    """mmdetection's FPN (``start_level=1``, ``add_extra_convs='on_input'``) -> torchvision's inside pointdet's."""
    return (
        (
            r"^neck\.lateral_convs\.(?P<i>\d)\.(?P<part>conv|gn)\.",
            lambda m: _conv_module(m, f"neck.pyramid.inner_blocks.{m['i']}"),
        ),
        (
            r"^neck\.fpn_convs\.(?P<i>\d)\.(?P<part>conv|gn)\.",
            lambda m: _conv_module(m, f"neck.pyramid.{_FPN_OUTPUTS[m['i']]}"),
        ),
    )


def _tower_rule(official: str, target: str) -> Rule:
    """``{official}_convs.k`` (``DCNConvModule``: ``conv`` + ``conv.conv_offset``, ``bn`` = GroupNorm; or an mmcv
    ``ConvModule``: ``conv`` + ``gn``) -> ``{target}.{3k}`` / ``.{3k+1}`` (pointdet's conv, norm, ReLU triples)."""

    def rename(match: re.Match) -> str:
        layer = 3 * int(match["k"])
        if match["part"] == "conv.conv_offset":
            return f"head.{target}.{layer}.offset_mask."
        return f"head.{target}.{layer if match['part'] == 'conv' else layer + 1}."

    return rf"^bbox_head\.{official}_convs\.(?P<k>\d+)\.(?P<part>conv\.conv_offset|conv|bn|gn)\.", rename


def _branch_rules(official: str, init: str | None, refine: str) -> tuple[Rule, ...]:
    """One branch's init convs (``pts_{official}_init_conv`` / ``_out`` -> ``{init}conv`` / ``{init}out``) and
    landmark features (-> ``{refine}``: the pyramid DCN weight, the 1x1 fusion, the level's 3x3 conv, GroupNorm, the
    output conv)."""
    rules: list[Rule] = [
        (rf"^bbox_head\.pts_{official}_(refine_)?conv\.weight$", lambda m: f"head.{refine}.dcn_weight"),
        (rf"^bbox_head\.pts_{official}_(refine_)?out\.", lambda m: f"head.{refine}.out."),
        (rf"^bbox_head\.{official}_af_dcn_conv\.0\.", lambda m: f"head.{refine}.fuse."),
        (rf"^bbox_head\.{official}_feat_conv\.", lambda m: f"head.{refine}.level_conv."),
        (rf"^bbox_head\.{official}_GN\.", lambda m: f"head.{refine}.norm."),
    ]
    if init is not None:
        rules.insert(0, (rf"^bbox_head\.pts_{official}_init_(conv|out)\.", lambda m: f"head.{init}{m[1]}."))
    return tuple(rules)


def _verification_rules() -> tuple[Rule, ...]:
    """LSNet-CPV's corner and foreground branches (``LSCPVHead``) -> ``head.corners`` / ``head.foreground``."""
    pools = "|".join(re.escape(name) for name in sorted(_POOL, key=len, reverse=True))
    corners = {"tl": 0, "br": 1}
    return (
        (
            rf"^bbox_head\.hem_(?P<corner>tl|br)\.(?P<part>{pools})\.",
            lambda m: f"head.corners.pools.{corners[m['corner']]}.{_POOL[m['part']]}.",
        ),
        (
            r"^bbox_head\.reppoints_hem_(?P<corner>tl|br)_(?P<kind>score|offset)_out\.",
            lambda m: f"head.corners.{m['kind']}s.{corners[m['corner']]}.",
        ),
        (r"^bbox_head\.reppoints_sem_out\.", lambda m: "head.foreground.score."),
        (
            r"^bbox_head\.reppoints_sem_embedding\.(?P<part>conv|gn)\.",
            lambda m: _conv_module(m, "head.foreground.embedding"),
        ),
    )


def lsnet_architecture(official_task: str, cpv: bool, backbone: str) -> Architecture:
    """The renaming rules of an official LSNet (``official_task`` as ``TASKS``) or LSNet-CPV network."""
    landmark_branch = TASKS[official_task][2]
    head = [
        _tower_rule("cls", "cls_tower"),
        _tower_rule(landmark_branch, "reg_tower"),
        *_branch_rules("cls", None, "cls_refine"),
        *_branch_rules(landmark_branch, "init_", "reg_refine"),
    ]
    if official_task == "pose_bbox":  # the obj-box's bbox branch
        head += [
            _tower_rule("bbox", "box_branch.tower"),
            *_branch_rules("bbox", "box_branch.init_", "box_branch.refine"),
        ]
    if cpv:
        head += [_tower_rule("shared", "shared"), *_verification_rules()]
    return Architecture(backbone=backbone, first_conv=None, rules=(*backbone_rules(), *neck_rules(), *head))


def infer_task(official: dict[str, torch.Tensor], path: str | Path) -> tuple[str, bool]:
    """The official head's ``task`` (``TASKS``) and whether it is LSNet-CPV, from the init-stage convs of the file
    ``path``."""
    has = {branch for branch in ("bbox", "segm", "pose") if f"{HEAD}pts_{branch}_init_out.weight" in official}
    cpv = f"{HEAD}hem_tl.conv1.weight" in official
    found = {
        frozenset({"bbox"}): "bbox", frozenset({"segm"}): "segm", frozenset({"pose", "bbox"}): "pose_bbox",
        frozenset({"pose"}): "pose_kbox",
    }.get(frozenset(has))  # fmt: skip
    if found is None or (cpv and found != "bbox"):
        raise ConversionError(
            f"{path}: not an official LSNet head (LSHead / LSCPVHead): init branches {sorted(has) or 'none'}; "
            f"e.g. {list(official)[:3]}"
        )
    return found, cpv


def infer_backbone(official: dict[str, torch.Tensor], path: str | Path) -> tuple[str, bool]:
    """``(model.backbone, model.backbone_dcn)`` of the official backbone: mmdetection's ResNet-50 / 101, ResNeXt-101
    64x4d or Res2Net-101 v1d, with DCNv2 in the 3x3 convs of stages c3-c5 (the ``dconv_c3-c5`` configs) or none."""
    blocks = {name.split(".")[2] for name in official if name.startswith("backbone.layer3.")}
    res2net = "backbone.layer1.0.convs.0.weight" in official
    conv2 = official.get("backbone.layer1.0.convs.0.weight" if res2net else "backbone.layer1.0.conv2.weight")
    if conv2 is None or "backbone.layer1.0.conv3.weight" not in official:
        raise ConversionError(
            f"{path}: the backbone is not a ResNet / ResNeXt / Res2Net of bottlenecks (no backbone.layer1.0.*)"
        )
    width, per_group = conv2.shape[:2]  # the first 3x3 conv: (width, width / groups, 3, 3)
    found: dict[str, int] = {"depth": _DEPTHS.get(len(blocks), 0)}
    if res2net:
        found.update(scales=len(official["backbone.layer1.0.bn1.weight"]) // width, base_width=width)
    elif per_group != width:
        found.update(groups=width // per_group, width_per_group=per_group)
    known = {**RESNETS, **RES2NETS}
    name = next((name for name, arguments in known.items() if arguments == found), None)
    if name is None:
        raise ConversionError(f"{path}: the backbone ({found}) is none of pointdet's {', '.join(known)}")
    conv = "convs.0" if res2net else "conv2"
    stages = tuple(f"backbone.layer{stage}.0.{conv}.conv_offset.weight" in official for stage in (1, 2, 3, 4))
    if stages not in ((False, False, False, False), (False, True, True, True)):
        raise ConversionError(f"{path}: DCN in the stages {stages} of c2-c5 (backbone.layerN.0.*.conv_offset): "
                              "pointdet has none or c3-c5")  # fmt: skip
    return name, stages[-1]


def converted_lsnet_config(
    official_task: str, cpv: bool, backbone: str, dcn: bool, official: dict[str, torch.Tensor]
) -> ExperimentConfig:
    """The paper-recipe preset of the task with the file's network and the official code's computation (the pyramid
    scaling), test geometry (keep-ratio (1333, 800), padded to 32) and post-processing (``test_cfg``: the
    pose models keep the 100 best locations per level)."""
    task, pose_box, branch = TASKS[official_task]
    presets = {"detection": "lsnet_r50_fpn_2x_ms", "segmentation": "lsnet_segm_r50_fpn", "pose": "lsnet_pose_r50_fpn"}
    config = get_preset("lsnet_cpv_r50_fpn" if cpv else presets[task])
    towers = {name.split(".")[2] for name in official if name.startswith(f"{HEAD}cls_convs.")}
    model = replace(
        config.model,
        backbone=backbone,
        backbone_weights=None,
        backbone_dcn=dcn,
        task=task,
        pose_box=pose_box,
        tower="dcn" if f"{HEAD}cls_convs.0.conv.conv_offset.weight" in official else "conv",
        channels=len(official[f"{HEAD}cls_GN.weight"]),
        stacked_convs=len(towers),
        pyramid_scaling="code",
        pre_nms=100 if task == "pose" else config.model.pre_nms,
    )
    name = f"lsnet_{'cpv_' if cpv else ''}{official_task}_{backbone}{'_dcn' if dcn else ''}_converted"
    return replace(config, name=name, model=model)


class Conversion(NamedTuple):
    """What ``convert_lsnet`` writes: the config, classes and keypoints of the converted run and the renaming."""

    config: ExperimentConfig
    classes: ClassList
    keypoints: KeypointLayout
    architecture: Architecture
    converted_from: dict[str, str]


def set_aside(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official tensors without the backbone's BatchNorm counters, which the forward never reads: pointdet's
    frozen BatchNorm (the configs' ``norm_eval``: fixed statistics) has none."""
    return {name: t for name, t in official.items() if not (name.startswith("backbone.") and name.endswith(COUNTER))}


def plan_conversion(
    official: dict[str, torch.Tensor], path: str | Path, arch: str | None = None, classes: str | None = None
) -> Conversion:
    """The converted run of the official tensors ``official`` (``set_aside`` applied) of the file ``path``
    (``convert_lsnet``'s arguments).

    Raises:
        ConversionError: the tensors are no LSNet network of pointdet's, or the options disagree with them.
    """
    official_task, cpv = infer_task(official, path)
    backbone, dcn = infer_backbone(official, path)
    if arch is not None and arch != backbone:
        raise ConversionError(f"{path}: --arch {arch}, but the file holds a {backbone} backbone")
    num_classes = len(official[f"{HEAD}pts_cls_out.weight"])
    pose = TASKS[official_task][0] == "pose"
    names = checkpoint_classes(path, num_classes, classes, "person" if pose else "coco")
    converted_from = {
        "file": str(path),
        "framework": "lsnet",
        "arch": backbone,
        "task": "cpv" if cpv else official_task,
    }
    return Conversion(
        converted_lsnet_config(official_task, cpv, backbone, dcn, official),
        names,
        keypoint_layout("pose" if pose else "det"),
        lsnet_architecture(official_task, cpv, backbone),
        converted_from,
    )


def convert_lsnet(path: str | Path, out: str | Path, arch: str | None = None, classes: str | None = None) -> Path:
    """Write the pointdet checkpoint ``out/last.pt`` of an official LSNet / LSNet-CPV checkpoint.

    Args:
        path: the official ``.pth`` file.
        out: the run folder to write (``pointdet eval/predict/export --weights out``, ``pointdet.load(out)``).
        arch: the backbone (``model.backbone``: ``resnet50``, ``resnext101_64x4d``, ...); inferred from the tensors
            when None, checked against them otherwise.
        classes: ``coco``, ``person`` or a file of names; None = COCO's 80 classes, or the person for pose.

    Raises:
        ConversionError: the file is not one of these networks, or its tensors do not map one-to-one (nothing is
            written then).
    """
    official = set_aside(read_official(path))
    plan = plan_conversion(official, path, arch, classes)
    return convert_into(
        official, plan.architecture, plan.config, plan.classes, plan.keypoints, out, plan.converted_from, IMAGENET_RGB
    )
