"""Grid-point two-stage detectors' official checkpoints as pointdet checkpoints: CPM R-CNN's release
(``--from cpm``, zhubinQAQ/CPM-R-CNN on the Pet framework, ``{"model": ...}`` files) and mmdetection v2/v3's
Grid R-CNN (Plus) (``--from mmdet``, ``{"meta", "state_dict", ...}`` files whose keys start ``roi_head.grid_head.``).

Both are a ResNet + FPN P2-P6 + RPN + RoI heads that pointdet's ``TwoStageDetector`` with ``CPMRoIHeads`` computes
(verified by building the official networks from their own source: see the docs): a classifier of two FCs, the
Grid R-CNN Plus grid branch(es) and, for CPM R-CNN, the IoU scorer (ISM) and re-scorer (RSM). The tensors map one
to one except the grid branches' point fusion: the official codes hold one depthwise 5x5 + 1x1 transfer per
directed edge of the 3x3 grid (``forder_trans.{i}.{j}``, edge j of point i, neighbours in ascending index order),
pointdet runs all 24 as one grouped conv each, so the 24 official tensors of a kind are concatenated in edge order.

What the official test path computes differently from pointdet's defaults is set in the converted config (each an
option of pointdet's network or decoder): both codes give the grid convs a bias and leave the grid stages' boxes
unclipped; CPM R-CNN's release has a Caffe ResNet (stride in the 1x1 conv), no point fusion (``FUSED_ON: False``),
Detectron's RoIAlign (not aligned, 2 samples) and FPN levels (+1 pixel areas), BGR input with the Caffe means and
unit std; mmdetection has an aligned, adaptive RoIAlign, its own level rounding, RGB input with ImageNet statistics
and its classifier's background logit last (moved first here).

Set aside: the Pet RPN's anchor buffers (``RPN.anchor_generator.cell_anchors.*``, recomputed from the config) and
BatchNorm step counters (never read by the forward).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from pointdet.configs import ExperimentConfig, get_preset
from pointdet.convert.classes import keypoint_layout
from pointdet.convert.common import (
    COUNTER,
    IMAGENET_RGB,
    Architecture,
    ConversionError,
    checkpoint_classes,
    convert_into,
    read_official,
)
from pointdet.models.roi_heads.grid import grid_neighbours

FRAMEWORKS = ("cpm", "mmdet")
GRID_HEAD_KEY = "roi_head.grid_head."  # what tells an mmdetection Grid R-CNN from its corner detectors
# Pet's test normalisation (``PIXEL_MEANS`` BGR, ``PIXEL_STDS`` 1, 0-255 units) in RGB order and [0, 1] units.
CAFFE_RGB = {"pixel_mean": [122.7717 / 255, 115.9465 / 255, 102.9801 / 255], "pixel_std": [1 / 255] * 3}
_RESNET_DEPTHS = {6: 50, 23: 101}  # blocks in stage 3 -> depth
_FUSION_PARTS = {"0.weight": "depthwise.weight", "0.bias": "depthwise.bias", "1.weight": "pointwise.weight",
                 "1.bias": "pointwise.bias"}  # fmt: skip
_ORDERS = {"forder_trans": "first_order", "sorder_trans": "second_order"}


def _fpn_rules(lateral: str, output: str, top_down: bool) -> tuple:
    """FPN convs -> torchvision ``FeaturePyramidNetwork`` (``inner_blocks.i.0`` / ``layer_blocks.i.0`` for C2..C5).
    ``top_down``: Pet's ``p5_in`` / ``fpn_in.{0,1,2}`` (C5, then C4..C2); else mmdetection's C2..C5 order."""
    if top_down:
        return (
            (r"^Conv_Body_FPN\.p5_in\.", lambda m: "neck.pyramid.inner_blocks.3.0."),
            (r"^Conv_Body_FPN\.p5_out\.", lambda m: "neck.pyramid.layer_blocks.3.0."),
            (r"^Conv_Body_FPN\.fpn_in\.(\d)\.", lambda m: f"neck.pyramid.inner_blocks.{2 - int(m[1])}.0."),
            (r"^Conv_Body_FPN\.fpn_out\.(\d)\.", lambda m: f"neck.pyramid.layer_blocks.{2 - int(m[1])}.0."),
        )
    return (
        (rf"^{lateral}\.(\d)\.conv\.", lambda m: f"neck.pyramid.inner_blocks.{m[1]}.0."),
        (rf"^{output}\.(\d)\.conv\.", lambda m: f"neck.pyramid.layer_blocks.{m[1]}.0."),
    )


def _grid_branch_rules(head: str, output: str) -> tuple:
    """A grid branch: 8 x (conv, GN) -> ``convs.{3k}`` / ``{3k+1}``; deconv, GN(9), deconv -> ``upsample.0/1/3``;
    the merged fusion tensors (``_merge_fusion``) -> ``first_order`` / ``second_order``. ``head`` and ``output``
    are regexes; a group ``stage`` in them names the cascade stage (none: stage 0)."""

    def grid(match: re.Match) -> str:
        return f"roi_heads.grids.{match.groupdict().get('stage') or 0}"

    upsample = {"deconv_1": 0, "deconv1": 0, "norm1": 1, "deconv_2": 3, "deconv2": 3}
    return (
        (rf"^{head}\.convs\.(?P<k>\d+)\.(?P<part>0|1|conv|gn)\.",
         lambda m: f"{grid(m)}.convs.{3 * int(m['k']) + (m['part'] in ('1', 'gn'))}."),
        (rf"^{output}\.(?P<layer>{'|'.join(upsample)})\.", lambda m: f"{grid(m)}.upsample.{upsample[m['layer']]}."),
        (rf"^{head}\.(?P<order>forder_trans|sorder_trans)\.merged\.", lambda m: f"{grid(m)}.{_ORDERS[m['order']]}."),
    )  # fmt: skip


def _mlp_rules(prefix: str, target: str, fc6: str, fc7: str, out: str) -> tuple:
    return ((rf"^{prefix}({re.escape(fc6)}|{re.escape(fc7)}|{re.escape(out)})\.",
             lambda m: f"{target}.{ {fc6: 'mlp.fc6', fc7: 'mlp.fc7', out: 'predictor'}[m[1]]}."),)  # fmt: skip


_PET_ROI = r"Grid_Cascade_RCNN\."
_BACKBONE_CPM = (
    (r"^Conv_Body\.conv1\.", lambda m: "backbone.stem.0."),
    (r"^Conv_Body\.bn1\.", lambda m: "backbone.stem.1."),
    (r"^Conv_Body\.(layer\d)\.", lambda m: f"backbone.{m[1]}."),
)
CPM_RELEASE = Architecture(
    backbone="resnet",
    first_conv="Conv_Body.conv1.weight",  # Pet reads OpenCV's BGR
    rules=(
        *_BACKBONE_CPM,
        *_fpn_rules("", "", top_down=True),
        (r"^RPN\.head\.conv\.", lambda m: "head.head.conv.0.0."),
        (r"^RPN\.head\.(cls_logits|bbox_pred)\.", lambda m: f"head.head.{m[1]}."),
        *_mlp_rules(r"Grid_Cascade_RCNN\.(?:Head|Output)_cls\.", "roi_heads.classifier", "fc6", "fc7", "cls_score"),
        *_mlp_rules(r"Grid_Cascade_RCNN\.(?:Head|Output)_rescore\.", "roi_heads.rescorer", "fc6", "fc7", "cls_score"),
        *_mlp_rules(r"Grid_Cascade_RCNN\.Output_grid_\d\.", "roi_heads.iou_scorer", "iou_fc1", "iou_fc2", "iou_pred"),
        *_grid_branch_rules(rf"{_PET_ROI}Head_grid_(?P<stage>\d)", rf"{_PET_ROI}Output_grid_(?P<stage>\d)"),
    ),
    unused=("RPN.anchor_generator.",),
)
MMDET_GRID_RCNN = Architecture(
    backbone="resnet",
    first_conv=None,  # mmdetection's configs read RGB (``to_rgb=True``)
    rules=(
        (r"^backbone\.conv1\.", lambda m: "backbone.stem.0."),
        (r"^backbone\.bn1\.", lambda m: "backbone.stem.1."),
        *_fpn_rules(r"neck\.lateral_convs", r"neck\.fpn_convs", top_down=False),
        (r"^rpn_head\.rpn_conv\.", lambda m: "head.head.conv.0.0."),
        (r"^rpn_head\.rpn_(cls|reg)\.", lambda m: f"head.head.{ {'cls': 'cls_logits', 'reg': 'bbox_pred'}[m[1]] }."),
        *_mlp_rules(r"roi_head\.bbox_head\.", "roi_heads.classifier", "shared_fcs.0", "shared_fcs.1", "fc_cls"),
        *_grid_branch_rules(r"roi_head\.grid_head", r"roi_head\.grid_head"),
    ),
)


def _merge_fusion(official: dict[str, torch.Tensor], prefixes: list[str]) -> dict[str, torch.Tensor]:
    """The per-edge fusion tensors of each grid branch (``{prefix}{forder|sorder}_trans.{i}.{j}.{0|1}.*``)
    concatenated in edge order under ``{prefix}{order}.merged.*``; a set with any edge missing stays as it is
    (its tensors are then reported as having no place)."""
    edges = [(i, j) for i, neighbours in enumerate(grid_neighbours()) for j in range(len(neighbours))]
    merged = dict(official)
    for prefix in prefixes:
        for order in _ORDERS:
            for part, target in _FUSION_PARTS.items():
                names = [f"{prefix}{order}.{i}.{j}.{part}" for i, j in edges]
                if all(name in official for name in names):
                    merged[f"{prefix}{order}.merged.{target}"] = torch.cat([merged.pop(name) for name in names])
    return merged


def _background_first(official: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """mmdetection's classifiers put the background logit last; pointdet's first."""
    moved = dict(official)
    for name in names:
        if name in moved:
            moved[name] = torch.cat([moved[name][-1:], moved[name][:-1]])
    return moved


def is_grid_rcnn_checkpoint(path: str | Path) -> bool:
    """Whether an mmdetection checkpoint holds a Grid R-CNN (a ``roi_head.grid_head``), not a corner detector."""
    return any(name.startswith(GRID_HEAD_KEY) for name in read_official(path))


def read_grid_official(path: str | Path, framework: str) -> dict[str, torch.Tensor]:
    """The official tensors ready for the renaming rules: BN counters dropped (pointdet's converted backbone has
    frozen BN), fusion tensors merged, mmdetection's background logit moved first."""
    official = {name: t for name, t in read_official(path).items() if not name.endswith(COUNTER)}
    if framework == "cpm":
        return _merge_fusion(official, [f"Grid_Cascade_RCNN.Head_grid_{s}." for s in range(9)])
    official = _merge_fusion(official, ["roi_head.grid_head."])
    return _background_first(official, ("roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_cls.bias"))


def infer_depth(official: dict[str, torch.Tensor], framework: str) -> int:
    """ResNet-50 or -101 from the blocks of stage 3; ResNeXt and deformable backbones are refused."""
    body = "Conv_Body." if framework == "cpm" else "backbone."
    if not any(name.startswith(f"{body}layer3.") for name in official):
        expected = "CPM R-CNN (Pet)" if framework == "cpm" else "mmdetection Grid R-CNN"
        raise ConversionError(f"not a {expected} checkpoint: no '{body}layer3.*' tensors; e.g. {list(official)[:3]}")
    conv2 = official.get(f"{body}layer1.0.conv2.weight")
    if conv2 is not None and conv2.shape[1] != conv2.shape[0]:
        raise ConversionError(f"a grouped (ResNeXt) backbone ({body}layer1.0.conv2 {tuple(conv2.shape)}): pointdet "
                              "has ResNet-50/101 only")  # fmt: skip
    deformable = [name for name in official if name.startswith(body) and "offset" in name]
    if deformable:
        raise ConversionError(f"a deformable backbone ({deformable[0]}, ...): pointdet's DCN ResNet is DCNv2 with "
                              "another layout; not converted")  # fmt: skip
    blocks = len({name.split(".")[2] for name in official if name.startswith(f"{body}layer3.")})
    if blocks not in _RESNET_DEPTHS:
        raise ConversionError(f"{blocks} blocks in the backbone's stage 3: ResNet-50 (6) or -101 (23) expected")
    return _RESNET_DEPTHS[blocks]


def converted_grid_config(framework: str, official: dict[str, torch.Tensor], depth: int) -> ExperimentConfig:
    """``cpm_rcnn_r50_fpn`` (keep-ratio 800 / 1333 test) with the file's network and the official code's test-path
    choices (module docstring); the stages, ISM and RSM read from the tensors."""
    base = get_preset("cpm_rcnn_r50_fpn")
    common = {"backbone": f"resnet{depth}", "backbone_weights": None, "grid_conv_bias": True, "clip_boxes": False}
    if framework == "mmdet":
        model = replace(base.model, **common, cascade_mapping=False, iou_scoring=False, rescoring=False,
                        roi_sampling_ratio=0, roi_aligned=True, roi_level_rule="mmdet", max_grid_rois=100)  # fmt: skip
        return replace(base, name=f"grid_rcnn_r{depth}_fpn_mmdet_converted", model=model)
    stages = len({name.split(".")[1] for name in official if name.startswith("Grid_Cascade_RCNN.Head_grid_")})
    if stages not in (1, 3):
        raise ConversionError(f"{stages} grid stages: the release's models have 3 (or 1 without cascade mapping)")
    model = replace(
        base.model, **common, cascade_mapping=stages == 3, iou_scoring=any("iou_fc1" in name for name in official),
        rescoring=any(name.startswith("Grid_Cascade_RCNN.Head_rescore.") for name in official),
        grid_fusion=any(".forder_trans." in name for name in official), stride_in_1x1=True,
        roi_level_rule="detectron",
    )  # fmt: skip
    return replace(base, name=f"cpm_rcnn_r{depth}_fpn_converted", model=model)


def convert_grid(path: str | Path, out: str | Path, framework: str, classes: str | None = None) -> Path:
    """Write the pointdet checkpoint ``out/last.pt`` of an official CPM R-CNN or mmdetection Grid R-CNN checkpoint.

    Args:
        path: the official ``.pth`` file.
        out: the run folder to write (``pointdet eval/predict --weights out``, ``pointdet.load(out)``).
        framework: ``cpm`` (the CPM R-CNN release) or ``mmdet`` (mmdetection's Grid R-CNN).
        classes: ``coco`` or a file of names; None = COCO for 80 classes.

    Raises:
        ConversionError: the file is not one of these networks, or its tensors do not map one-to-one.
    """
    if framework not in FRAMEWORKS:
        raise ConversionError(f"--from {framework}: grid R-CNN checkpoints come from {', '.join(FRAMEWORKS)}")
    official = read_grid_official(path, framework)
    depth = infer_depth(official, framework)
    scores = {"cpm": "Grid_Cascade_RCNN.Output_cls.cls_score.weight", "mmdet": "roi_head.bbox_head.fc_cls.weight"}
    scores = scores[framework]
    if scores not in official:
        raise ConversionError(f"{path}: no classifier ({scores})")
    num_classes = len(official[scores]) - 1  # + background
    names = checkpoint_classes(path, num_classes, classes)
    config = converted_grid_config(framework, official, depth)
    architecture = CPM_RELEASE if framework == "cpm" else MMDET_GRID_RCNN
    converted_from = {"file": str(path), "framework": framework, "arch": f"resnet{depth}", "task": "det"}
    normalisation = CAFFE_RGB if framework == "cpm" else IMAGENET_RGB
    return convert_into(official, architecture, config, names, keypoint_layout("det"), out, converted_from,
                        normalisation)  # fmt: skip
