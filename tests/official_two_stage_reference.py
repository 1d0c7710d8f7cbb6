"""The official two-stage grid detectors' arithmetic, stated from their code and read straight off official state
dicts (names of tests/data/official_cpm/, official_mmdet/ manifests), for tests that need no official code: the
ResNet body (CPM R-CNN's release strides the first 1x1 conv of a stage, mmdetection the 3x3), the FPN with its
max-pooled P6, the RPN head, the two-FC classifiers and the grid branch with its per-edge point fusion.

Derived from zhubinQAQ/CPM-R-CNN (``backbone/ResNet.py``, ``fpn/FPN.py``, ``rpn/rpn.py``, ``grid_rcnn/heads``,
``grid_rcnn/outputs.py``) and mmdetection's ``ResNet``, ``FPN``, ``RPNHead``, ``Shared2FCBBoxHead``, ``GridHead``;
no code of theirs is copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

State = dict[str, Tensor]


def batch_norm(state: State, prefix: str, x: Tensor) -> Tensor:
    return F.batch_norm(
        x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"], state[f"{prefix}.weight"],
        state[f"{prefix}.bias"], eps=1e-5,
    )  # fmt: skip


def resnet(state: State, body: str, x: Tensor, stride_in_1x1: bool) -> list[Tensor]:
    """C2..C5 of the bottleneck ResNet under ``body`` (``Conv_Body.`` / ``backbone.``)."""
    x = F.relu(batch_norm(state, f"{body}bn1", F.conv2d(x, state[f"{body}conv1.weight"], stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, 1)
    outputs = []
    for stage in range(1, 5):
        blocks = sorted({int(n.split(".")[2]) for n in state if n.startswith(f"{body}layer{stage}.")})
        for block in blocks:
            p = f"{body}layer{stage}.{block}."
            stride = 2 if stage > 1 and block == 0 else 1
            s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
            y = F.relu(batch_norm(state, p + "bn1", F.conv2d(x, state[p + "conv1.weight"], stride=s1)))
            y = F.relu(batch_norm(state, p + "bn2", F.conv2d(y, state[p + "conv2.weight"], stride=s3, padding=1)))
            y = batch_norm(state, p + "bn3", F.conv2d(y, state[p + "conv3.weight"]))
            if p + "downsample.0.weight" in state:
                x = batch_norm(state, p + "downsample.1", F.conv2d(x, state[p + "downsample.0.weight"], stride=stride))
            x = F.relu(y + x)
        outputs.append(x)
    return outputs


def conv(state: State, prefix: str, x: Tensor, padding: int = 0) -> Tensor:
    return F.conv2d(x, state[f"{prefix}.weight"], state[f"{prefix}.bias"], padding=padding)


def fpn(state: State, laterals: list[str], outputs: list[str], inputs: list[Tensor]) -> list[Tensor]:
    """P2..P6: ``laterals`` / ``outputs`` name the 1x1 and 3x3 convs of C2..C5; top-down nearest 2x up-sampling;
    P6 = P5 max-pooled with kernel 1, stride 2."""
    inner = conv(state, laterals[3], inputs[3])
    pyramid = [conv(state, outputs[3], inner, padding=1)]
    for level in (2, 1, 0):
        inner = conv(state, laterals[level], inputs[level]) + F.interpolate(inner, scale_factor=2.0, mode="nearest")
        pyramid.insert(0, conv(state, outputs[level], inner, padding=1))
    return [*pyramid, F.max_pool2d(pyramid[-1], 1, 2)]


def rpn_head(state: State, names: tuple[str, str, str], feature: Tensor) -> tuple[Tensor, Tensor]:
    """(objectness, deltas) of one level: 3x3 conv + ReLU, then two 1x1 convs."""
    hidden = F.relu(conv(state, names[0], feature, padding=1))
    return conv(state, names[1], hidden), conv(state, names[2], hidden)


def two_fc(state: State, names: tuple[str, str, str], pooled: Tensor) -> Tensor:
    """Flatten -> FC -> ReLU -> FC -> ReLU -> FC."""
    x = pooled.flatten(1)
    for name in names[:2]:
        x = F.relu(F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"]))
    return F.linear(x, state[f"{names[2]}.weight"], state[f"{names[2]}.bias"])


def grid_convs(state: State, convs: list[tuple[str, str]], pooled: Tensor) -> Tensor:
    """8 x [3x3 conv with bias (the first stride 2), GroupNorm(36), ReLU]; ``convs`` = (conv, norm) names."""
    x = pooled
    for index, (conv_name, norm) in enumerate(convs):
        x = F.conv2d(x, state[f"{conv_name}.weight"], state[f"{conv_name}.bias"], stride=2 if index == 0 else 1,
                     padding=1)  # fmt: skip
        x = F.relu(F.group_norm(x, 36, state[f"{norm}.weight"], state[f"{norm}.bias"]))
    return x


def neighbours() -> list[list[int]]:
    """The official neighbour lists of the 3x3 grid: for point i = 3 * column + row: left, up, down, right."""
    points = []
    for column in range(3):
        for row in range(3):
            near = []
            if column > 0:
                near.append((column - 1) * 3 + row)
            if row > 0:
                near.append(column * 3 + row - 1)
            if row < 2:
                near.append(column * 3 + row + 1)
            if column < 2:
                near.append((column + 1) * 3 + row)
            points.append(near)
    return points


def fuse(state: State, head: str, x: Tensor) -> Tensor:
    """First- and second-order fusion, one transfer (5x5 depthwise, then 1x1) per edge ``{order}.{i}.{j}``."""
    channels = x.shape[1] // 9
    parts = list(x.split(channels, dim=1))

    def transfer(order: str, i: int, j: int, source: Tensor) -> Tensor:
        p = f"{head}{order}.{i}.{j}."
        depthwise = F.conv2d(source, state[p + "0.weight"], state[p + "0.bias"], padding=2, groups=channels)
        return F.conv2d(depthwise, state[p + "1.weight"], state[p + "1.bias"])

    first = [parts[i] + sum(transfer("forder_trans", i, j, parts[n]) for j, n in enumerate(near))
             for i, near in enumerate(neighbours())]  # fmt: skip
    second = [parts[i] + sum(transfer("sorder_trans", i, j, first[n]) for j, n in enumerate(near))
              for i, near in enumerate(neighbours())]  # fmt: skip
    return torch.cat(second, dim=1)


def grid_heatmaps(state: State, names: tuple[str, str, str], x: Tensor) -> Tensor:
    """Deconv 4x4 s2 (groups 9) -> GroupNorm(9) -> ReLU -> deconv 4x4 s2 (groups 9): (N, 9, 28, 28)."""
    up, norm, last = names
    x = F.conv_transpose2d(x, state[f"{up}.weight"], state[f"{up}.bias"], stride=2, padding=1, groups=9)
    x = F.relu(F.group_norm(x, 9, state[f"{norm}.weight"], state[f"{norm}.bias"]))
    return F.conv_transpose2d(x, state[f"{last}.weight"], state[f"{last}.bias"], stride=2, padding=1, groups=9)
