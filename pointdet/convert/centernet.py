"""The official CenterNet checkpoints (xingyizhou/CenterNet, "Objects as Points") as pointdet checkpoints.

An official file is ``{"epoch", "state_dict"}`` (``"optimizer"`` too when saved for resuming), its keys prefixed
``module.`` when DataParallel saved it. Its tensors map one-to-one onto pointdet's network of the same
architecture, which computes what the official one computes (tests/test_convert_centernet.py, from manifests of the
official state dicts). Two kinds of official tensors have no counterpart, because the official forward never reads
them: the DLA-34 ImageNet classifier (``base.fc``) and the projection of the outer level-3/4 trees
(``models/backbones/dla.py``). Batch-norm ``num_batches_tracked`` counters, absent from files written before
PyTorch 0.4.1, are taken from the fresh model (they never enter the computation).

The official loaders read images with OpenCV, in BGR order; pointdet models read RGB. The input channels of the
first convolution are reversed, so that the converted model computes on an RGB image what the official one computes
on the same image in BGR. The Pascal VOC and KITTI models keep their ImageNet normalisation (stored in the
checkpoint, applied by ``pointdet.load``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from pointdet.configs import ExperimentConfig, get_preset
from pointdet.convert.classes import class_list, keypoint_layout
from pointdet.convert.common import (
    Architecture,
    ConversionError,
    Rule,
    convert_into,
    cornernet_hourglass_rules,
    read_official,
)
from pointdet.models.backbones.dla import OFFICIAL_UNUSED_PREFIXES

# Official head name (``opts.py``) -> pointdet head branch.
HEAD_BRANCHES = {
    "hm": "heatmap",
    "wh": "size",
    "reg": "offset",
    "hps": "joints",
    "hm_hp": "joint_heatmap",
    "hp_offset": "joint_offset",
    "dep": "depth",
    "rot": "rotation",
    "dim": "dimensions",
}
# The official loaders read images with OpenCV (BGR) and normalise with constants given in that order: CenterNet's
# COCO ones (pointdet's default, ``models/detector.py``) for COCO, ImageNet's for Pascal VOC and KITTI. Here both
# in RGB order, [0, 1] units.
IMAGENET_NORMALISATION = {"pixel_mean": [0.406, 0.456, 0.485], "pixel_std": [0.225, 0.224, 0.229]}
DATASET_NORMALISATION = {"voc": IMAGENET_NORMALISATION, "kitti": IMAGENET_NORMALISATION}


def _ida_rule(match: re.Match) -> str:
    """``proj_k.conv`` / ``proj_k.actf.0`` (DCN, BN) -> ``projections.{k-1}.0`` / ``.1``; ``node_k`` alike."""
    kind = "projections" if match["kind"] == "proj" else "nodes"
    return f".{kind}.{int(match['k']) - 1}.{0 if match['part'] == 'conv' else 1}."


def _deconv_rule(match: re.Match) -> str:
    """``deconv_layers.n``: six modules per stage (DCN, BN, ReLU, transposed conv, BN, ReLU) -> pointdet's four
    (DCN + BN + ReLU, transposed conv, BN, ReLU); the ReLU positions hold no tensors and stay unmatched."""
    stage, position = divmod(int(match["n"]), 6)
    new = {0: f"{4 * stage}.0", 1: f"{4 * stage}.1", 3: f"{4 * stage + 1}", 4: f"{4 * stage + 2}"}.get(position)
    return match[0] if new is None else f"neck.layers.{new}."


_HEADS: Rule = (rf"^({'|'.join(HEAD_BRANCHES)})\.", lambda m: f"head.{HEAD_BRANCHES[m[1]]}.")
_DCN: Rule = (r"\.conv_offset_mask\.", lambda m: ".offset_mask.")

DLA34 = Architecture(
    backbone="dla34",
    first_conv="base.base_layer.0.weight",
    rules=(
        (r"^base\.", lambda m: "backbone."),
        (r"^dla_up\.ida_(\d+)\.", lambda m: f"neck.dla_up.{m[1]}."),
        (r"^ida_up\.", lambda m: "neck.ida_up."),
        (r"\.(?P<kind>proj|node)_(?P<k>\d+)\.(?P<part>conv|actf\.0)\.", _ida_rule),
        (r"\.up_(\d+)\.weight$", lambda m: f".upsamplers.{int(m[1]) - 1}.weight"),
        _DCN,
        _HEADS,
    ),
    unused=tuple(f"base.{prefix}" for prefix in OFFICIAL_UNUSED_PREFIXES),
)


def resnet_dcn(depth: int) -> Architecture:
    """ResNet-``depth`` + the three-stage DCN up-sampler (``networks/resnet_dcn.py``)."""
    return Architecture(
        backbone=f"resnet{depth}",
        first_conv="conv1.weight",
        rules=(
            (r"^conv1\.", lambda m: "backbone.stem.0."),
            (r"^bn1\.", lambda m: "backbone.stem.1."),
            (r"^(layer\d)\.", lambda m: f"backbone.{m[1]}."),
            (r"^deconv_layers\.(?P<n>\d+)\.", _deconv_rule),
            _DCN,
            _HEADS,
        ),
    )


_STACK_HEADS = "|".join(HEAD_BRANCHES)
HOURGLASS104 = Architecture(
    backbone="hourglass104",
    first_conv="pre.0.conv.weight",
    rules=(
        # One branch per stack: ``hm.s.0`` a convolution without BN (conv with bias, relu), ``hm.s.1`` the 1x1 conv.
        (rf"^({_STACK_HEADS})\.(\d+)\.0\.conv\.", lambda m: f"head.stacks.{m[2]}.{HEAD_BRANCHES[m[1]]}.0."),
        (rf"^({_STACK_HEADS})\.(\d+)\.1\.", lambda m: f"head.stacks.{m[2]}.{HEAD_BRANCHES[m[1]]}.2."),
        *cornernet_hourglass_rules("", "kps"),  # ``large_hourglass.py``
    ),
)
ARCHITECTURES = {
    "dla34": DLA34,
    **{f"resdcn{depth}": resnet_dcn(depth) for depth in (18, 34, 50, 101)},
    "hg104": HOURGLASS104,
}
# Blocks per ResNet stage 3 and whether blocks are bottlenecks -> depth.
_RESNET_DEPTHS = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101}


def infer_architecture(state: dict[str, torch.Tensor], source: str | Path) -> str:
    """The ``--arch`` whose official network holds these tensors (``source``: the file they come from)."""
    if "base.base_layer.0.weight" in state:
        return "dla34"
    if "pre.0.conv.weight" in state and "kps.1.up1.0.conv1.weight" in state:
        return "hg104"
    if "deconv_layers.0.weight" in state:
        blocks = len({name.split(".")[1] for name in state if name.startswith("layer3.")})
        depth = _RESNET_DEPTHS.get((blocks, "layer1.0.conv3.weight" in state))
        if depth is not None:
            return f"resdcn{depth}"
    raise ConversionError(
        f"{source}: not an official CenterNet network this converter knows ({', '.join(ARCHITECTURES)}); its "
        f"tensors are e.g. {list(state)[:3]}"
    )


def infer_task(state: dict[str, torch.Tensor]) -> str:
    """``pose`` (joint branches), ``3d`` (depth branch) or ``det``."""
    heads = {name.split(".")[0] for name in state}
    return "pose" if "hps" in heads else "3d" if "dep" in heads else "det"


def default_classes(task: str, num_classes: int) -> str:
    """The class list of the zoo's model with this task and class count."""
    defaults = {("pose", 1): "person", ("3d", 3): "kitti", ("det", 80): "coco", ("det", 20): "voc"}
    if (task, num_classes) not in defaults:
        raise ConversionError(
            f"a {task} model with {num_classes} classes: name them with --classes (a file, one name a line)"
        )
    return defaults[task, num_classes]


def converted_config(
    arch: str, task: str, head_conv: int, classes: str, input_size: int | None = None
) -> ExperimentConfig:
    """The experiment config of the converted model: the paper-recipe preset of its task with its backbone and
    branch width, and the official test geometry of the zoo's data set: COCO images at their own size (the
    official ``--keep_res``), Pascal VOC letterboxed to 384 (``input_size`` 512 for the ``_512`` models), KITTI at
    1280 x 384."""
    hourglass = arch == "hg104"
    if hourglass and task == "3d":
        raise ConversionError("the CenterNet zoo has no 3D model on Hourglass-104, and pointdet none to convert into")
    presets = {"det": "centernet_dla34", "pose": "centernet_pose_dla34", "3d": "centernet_3d_dla34"}
    if hourglass:  # the hourglass recipes (Adam lr 2.5e-4, 50 / 150 epochs)
        presets.update(det="centernet_hg104", pose="centernet_pose_hg104")
    config = get_preset(presets[task])
    model = replace(config.model, backbone=ARCHITECTURES[arch].backbone, head_conv=head_conv)
    data = config.data
    if classes in ("coco", "person"):
        data = replace(data, test_resize="original")
    elif classes == "voc":
        data = replace(data, input_size=384)
    if input_size is not None:
        data = replace(data, input_size=input_size)
    return replace(config, name=f"centernet_{arch}_{task}_converted", model=model, data=data)


def convert_centernet(
    path: str | Path,
    out: str | Path,
    arch: str | None = None,
    task: str | None = None,
    classes: str | None = None,
    input_size: int | None = None,
) -> Path:
    """Write the pointdet checkpoint ``out/last.pt`` of an official CenterNet checkpoint.

    Args:
        path: the official ``.pth`` file.
        out: the run folder to write (``pointdet eval/predict/export --weights out``, ``pointdet.load(out)``).
        arch, task: the official ``--arch`` (``dla34``, ``resdcn18``, ...) and task (``det``, ``pose``, ``3d``);
            inferred from the tensors when None, checked against them otherwise.
        classes: ``coco``, ``voc``, ``kitti``, ``person`` or a file of names; None = the zoo's list for the task
            and class count.
        input_size: ``data.input_size`` of the converted run (default: see ``converted_config``).

    Returns:
        The checkpoint written.

    Raises:
        ConversionError: the file is not one of these networks, or its tensors do not map one-to-one.
    """
    official = read_official(path)
    found_arch, found_task = infer_architecture(official, path), infer_task(official)
    for option, given, found in (("--arch", arch, found_arch), ("--task", task, found_task)):
        if given is not None and given != found:
            raise ConversionError(f"{path}: {option} {given}, but the file holds a {found} network")
    arch, task = found_arch, found_task
    heatmap = ("hm.1.1", "hm.0.0.conv") if arch == "hg104" else ("hm.2", "hm.0")  # last stack's for hourglasses
    if f"{heatmap[0]}.weight" not in official:
        raise ConversionError(f"{path}: no 'hm' branch (3x3 conv + 1x1 conv): not a CenterNet {task} model")
    num_classes, head_conv = len(official[f"{heatmap[0]}.weight"]), len(official[f"{heatmap[1]}.weight"])
    classes = classes or default_classes(task, num_classes)
    names = class_list(classes)
    if len(names.names) != num_classes:
        raise ConversionError(
            f"{path}: the heatmap has {num_classes} classes, --classes {classes} names {len(names.names)}"
        )
    config = converted_config(arch, task, head_conv, classes, input_size)
    keypoints = keypoint_layout(task)
    converted_from = {"file": str(path), "framework": "centernet", "arch": arch, "task": task}
    return convert_into(
        official, ARCHITECTURES[arch], config, names, keypoints, out, converted_from, DATASET_NORMALISATION.get(classes)
    )
