"""Test-side statements of what the official CenterNet code computes, written from reading it (never run here:
it needs PyTorch 0.4 and a compiled DCNv2). Sources: xingyizhou/CenterNet@4c50fd3,
``src/lib/models/networks/DCNv2/dcn_v2.py`` + ``src/cuda/dcn_v2_im2col_cuda.cu`` and ``pose_dla_dcn.py``.

- DCNv2 (class ``DCN``): ``conv_offset_mask`` (3x3, 27 channels for a 3x3 kernel) is chunked in three along the
  channels, ``o1, o2, m``; offset = cat(o1, o2), mask = sigmoid(m). In the im2col kernel, offset channel
  ``2k`` is the row (y) shift and ``2k + 1`` the column (x) shift of kernel point ``k = i * kw + j``, mask channel
  ``k`` its modulation; a sample at (h, w) is zero unless -1 < h < H and -1 < w < W, and each of its four bilinear
  corners counts only where it lies inside the map. The layer adds its bias to every output.
- DLA ``Tree``: every node with ``in != out`` channels holds a ``project`` (1x1 conv + BN) and computes it on its
  (down-sampled) input; a node of two or more levels then calls its first sub-tree, which computes its own
  projection again and ignores the residual passed in, so the outer node's projection never reaches the output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import deform_conv2d


def dcnv2_reference(x: Tensor, offset_mask: Tensor, weight: Tensor, bias: Tensor, padding: int = 1) -> Tensor:
    """DCNv2's forward (stride 1, dilation 1, one deformable group): ``deform_reference`` on the offsets and mask
    of ``offset_mask`` (B, 3*k*k, H, W), the output of ``conv_offset_mask``; weight (D_out, D_in, k, k), bias
    (D_out,)."""
    o1, o2, m = offset_mask.chunk(3, dim=1)
    return deform_reference(x, torch.cat([o1, o2], 1), m.sigmoid(), weight, padding) + bias.view(1, -1, 1, 1)


def deform_reference(x: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, padding: int = 1) -> Tensor:
    """A deformable convolution without bias by loops over output pixels and kernel points; ``mask`` None is
    DCNv1 (mmdetection's ``DeformConv``, mmcv's ``DeformConv2d``: the same im2col sampling, no modulation).

    Args:
        x: (B, D_in, H, W).
        offset: (B, 2*k*k, H, W), channel 2k the row shift and 2k + 1 the column shift of kernel point k.
        mask: (B, k*k, H, W) modulation or None.
        weight: (D_out, D_in, k, k).
    """
    batch, channels, height, width = x.shape
    kernel = weight.shape[-1]
    points = kernel * kernel
    out_h, out_w = offset.shape[-2:]
    columns = torch.zeros(batch, channels, points, out_h, out_w, dtype=x.dtype)
    for b in range(batch):
        for y in range(out_h):
            for x_col in range(out_w):
                for i in range(kernel):
                    for j in range(kernel):
                        k = i * kernel + j
                        h = y - padding + i + offset[b, 2 * k, y, x_col].item()
                        w = x_col - padding + j + offset[b, 2 * k + 1, y, x_col].item()
                        value = _bilinear(x[b], h, w) if -1 < h < height and -1 < w < width else 0.0
                        columns[b, :, k, y, x_col] = value * (1.0 if mask is None else mask[b, k, y, x_col])
    return torch.einsum("bckhw,ock->bohw", columns, weight.reshape(len(weight), channels, points))


def _bilinear(image: Tensor, h: float, w: float) -> Tensor:
    """(C,) value of a (C, H, W) map at (h, w); corners outside the map count as zero."""
    height, width = image.shape[-2:]
    h_low, w_low = math.floor(h), math.floor(w)
    lh, lw = h - h_low, w - w_low
    value = torch.zeros(image.shape[0], dtype=image.dtype)
    for row, col, factor in (
        (h_low, w_low, (1 - lh) * (1 - lw)),
        (h_low, w_low + 1, (1 - lh) * lw),
        (h_low + 1, w_low, lh * (1 - lw)),
        (h_low + 1, w_low + 1, lh * lw),
    ):
        if 0 <= row < height and 0 <= col < width:
            value = value + factor * image[:, row, col]
    return value


# --- The official up-sampling necks and heads as functions of an official-layout state dict (eval mode). -------
# DLA-up (``pose_dla_dcn.py``): ``IDAUp(o, channels, up_f)`` holds, for i >= 1, ``proj_i`` and ``node_i``
# (``DeformConv``: ``conv`` a DCN, ``actf.0`` its BN, then ReLU) and ``up_i`` (a depthwise transposed conv of
# kernel 2f, stride f, padding f // 2); ``forward(layers, start, end)`` sets, for i in start+1..end-1,
# ``layers[i] = node(up(proj(layers[i])) + layers[i - 1])`` with the modules of index i - start. ``DLAUp``'s
# ``ida_i`` runs on (layers, len - i - 2, len) and each result (the last layer) is put in front of a list that starts
# with the coarsest map; the final ``ida_up`` fuses the first three of that list. ResNet-DCN (``resnet_dcn.py``):
# ``deconv_layers`` is [DCN, BN, ReLU, ConvTranspose2d(4, stride 2, padding 1), BN, ReLU] three times.
# Heads: ``name.0`` 3x3 conv, ReLU, ``name.2`` 1x1 conv.


def _bn(state: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    return torch.nn.functional.batch_norm(
        x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"], state[f"{prefix}.weight"],
        state[f"{prefix}.bias"], training=False, eps=1e-5,
    )  # fmt: skip


def _dcn(state: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    out = torch.nn.functional.conv2d(
        x, state[f"{prefix}.conv_offset_mask.weight"], state[f"{prefix}.conv_offset_mask.bias"], padding=1
    )
    o1, o2, m = out.chunk(3, dim=1)
    return deform_conv2d(
        x, torch.cat([o1, o2], 1), state[f"{prefix}.weight"], state[f"{prefix}.bias"], padding=1, mask=m.sigmoid()
    )


def _deform_block(state: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    return _bn(state, f"{prefix}.actf.0", _dcn(state, f"{prefix}.conv", x)).relu()


def _ida(state: dict[str, Tensor], prefix: str, layers: list[Tensor], start: int, end: int) -> None:
    for i in range(start + 1, end):
        k = i - start
        up = state[f"{prefix}.up_{k}.weight"]
        factor = up.shape[-1] // 2
        projected = _deform_block(state, f"{prefix}.proj_{k}", layers[i])
        upsampled = torch.nn.functional.conv_transpose2d(
            projected, up, stride=factor, padding=factor // 2, groups=up.shape[0]
        )
        layers[i] = _deform_block(state, f"{prefix}.node_{k}", upsampled + layers[i - 1])


def official_dla_neck(state: dict[str, Tensor], levels: list[Tensor]) -> Tensor:
    """DLA-up + IDA-up on the six DLA levels -> the stride-4 map the heads read."""
    layers = list(levels)
    out = [layers[-1]]
    for i in range(len(layers) - 2 - 1):  # first level 2
        _ida(state, f"dla_up.ida_{i}", layers, len(layers) - i - 2, len(layers))
        out.insert(0, layers[-1])
    fused = [t.clone() for t in out[:3]]
    _ida(state, "ida_up", fused, 0, 3)
    return fused[-1]


def official_resdcn_neck(state: dict[str, Tensor], c5: Tensor) -> Tensor:
    """The three DCN + up-sampling stages on C5 -> the stride-4 map."""
    x = c5
    for stage in range(3):
        base = 6 * stage
        x = _bn(state, f"deconv_layers.{base + 1}", _dcn(state, f"deconv_layers.{base}", x)).relu()
        up = state[f"deconv_layers.{base + 3}.weight"]
        x = torch.nn.functional.conv_transpose2d(x, up, stride=2, padding=1)
        x = _bn(state, f"deconv_layers.{base + 4}", x).relu()
    return x


def official_head(state: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    hidden = torch.nn.functional.conv2d(x, state[f"{name}.0.weight"], state[f"{name}.0.bias"], padding=1).relu()
    return torch.nn.functional.conv2d(hidden, state[f"{name}.2.weight"], state[f"{name}.2.bias"])


# --- Hourglass-104 (``large_hourglass.py``). ``convolution(k)``: conv (bias only without BN), BN, ReLU.
# ``residual``: relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x)), ``skip`` a 1x1 conv + BN when the shape changes.
# ``kp_module``: up1(x) + nearest-upsample(low3(low2(low1(x)))), low1's first residual of stride 2, low2 the next
# level (or residuals at the innermost). ``exkp``: pre = convolution(7, stride 2) + residual(stride 2); per stack
# cnv = cnvs(kps(inter)), then inter = inters(relu(inters_(inter) + cnvs_(cnv))). Heads per stack:
# ``name.s.0`` convolution(3) without BN, ``name.s.1`` a 1x1 conv.


def _conv_bn(state: dict[str, Tensor], conv: str, bn: str, x: Tensor, stride: int = 1) -> Tensor:
    weight = state[f"{conv}.weight"]
    return _bn(state, bn, torch.nn.functional.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2))


def _residual(state: dict[str, Tensor], prefix: str, x: Tensor, stride: int = 1) -> Tensor:
    body = _conv_bn(state, f"{prefix}.conv1", f"{prefix}.bn1", x, stride).relu()
    body = _conv_bn(state, f"{prefix}.conv2", f"{prefix}.bn2", body)
    skip = x
    for shortcut in ("skip", "downsample"):  # CornerNet's ``residual`` / mmdetection's ``BasicBlock``
        if f"{prefix}.{shortcut}.0.weight" in state:
            skip = _conv_bn(state, f"{prefix}.{shortcut}.0", f"{prefix}.{shortcut}.1", x, stride)
    return (body + skip).relu()


def _residuals(state: dict[str, Tensor], prefix: str, x: Tensor, first_stride: int = 1) -> Tensor:
    j = 0
    while f"{prefix}.{j}.conv1.weight" in state:
        x = _residual(state, f"{prefix}.{j}", x, first_stride if j == 0 else 1)
        j += 1
    return x


def _kp_module(state: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    low = _residuals(state, f"{prefix}.low1", x, first_stride=2)
    nested = f"{prefix}.low2.up1.0.conv1.weight" in state
    low = _kp_module(state, f"{prefix}.low2", low) if nested else _residuals(state, f"{prefix}.low2", low)
    low = _residuals(state, f"{prefix}.low3", low)
    return _residuals(state, f"{prefix}.up1", x) + torch.nn.functional.interpolate(low, scale_factor=2.0)


def official_hourglass(
    state: dict[str, Tensor], image: Tensor, stacks: int = 2, prefix: str = "", modules: str = "kps"
) -> list[Tensor]:
    """The ``cnv`` map of every stack, the input of its heads; CentripetalNet's release names the same network
    ``backbone.`` + ``hg_modules``."""
    p = prefix
    names = {
        "stem": (f"{p}pre.0.conv", f"{p}pre.0.bn"), "stem_residual": f"{p}pre.1", "modules": f"{p}{modules}",
        "out": (f"{p}cnvs.{{}}.conv", f"{p}cnvs.{{}}.bn"), "inter_skip": (f"{p}inters_.{{}}.0", f"{p}inters_.{{}}.1"),
        "inter_out": (f"{p}cnvs_.{{}}.0", f"{p}cnvs_.{{}}.1"), "inter": f"{p}inters",
    }  # fmt: skip
    return _stacked_hourglass(state, image, stacks, names)


def _stacked_hourglass(state: dict[str, Tensor], image: Tensor, stacks: int, names: dict) -> list[Tensor]:
    """CornerNet's ``exkp`` (mmdetection's ``HourglassNet`` alike) under ``names``: the stem's conv-BN-ReLU and
    stride-2 residual; per stack ``out = relu(bn(conv(hourglass(inter))))``, then ``inter = inters(relu(
    inter_skip(inter) + inter_out(out)))``; ``{}`` in a name is the stack."""
    inter = _conv_bn(state, *names["stem"], image, stride=2).relu()
    inter = _residual(state, names["stem_residual"], inter, stride=2)
    features = []
    for s in range(stacks):
        hourglass = _kp_module(state, f"{names['modules']}.{s}", inter)
        out = _conv_bn(state, *(n.format(s) for n in names["out"]), hourglass).relu()
        features.append(out)
        if s < stacks - 1:
            inter = _conv_bn(state, *(n.format(s) for n in names["inter_skip"]), inter)
            inter = (inter + _conv_bn(state, *(n.format(s) for n in names["inter_out"]), out)).relu()
            inter = _residual(state, f"{names['inter']}.{s}", inter)
    return features


def official_stack_head(state: dict[str, Tensor], name: str, stack: int, x: Tensor) -> Tensor:
    prefix = f"{name}.{stack}"
    hidden = torch.nn.functional.conv2d(
        x, state[f"{prefix}.0.conv.weight"], state[f"{prefix}.0.conv.bias"], padding=1
    ).relu()
    return torch.nn.functional.conv2d(hidden, state[f"{prefix}.1.weight"], state[f"{prefix}.1.bias"])


# --- Corner detectors. CentripetalNet's release (KiveeDong/CentripetalNet@300deff, ``centripetal_mask.py``, on
# mmdetection v1 with its compiled corner pools ``_cpools``) and mmdetection v2/v3 (``corner_head.py``,
# ``centripetal_head.py``, ``hourglass.py``, mmcv ``CornerPool`` and ``DeformConv2d``).
# - Corner pools (``top_pool.cpp`` etc.): ``top`` scans the rows from the last one upwards, out[h] = max(x[h],
#   out[h + 1]); ``bottom`` from the first row down; ``left`` the columns from the last one leftwards; ``right`` from
#   the first one rightwards. Top-left corners pool top + left, bottom-right ones bottom + right.
# - Pool module: two conv3x3-BN-ReLU branches (128 channels) each pooled in its direction, summed, conv3x3-BN; plus
#   conv1x1-BN of the input; ReLU; conv3x3-BN-ReLU.
# - Branches: conv3x3 (bias) + ReLU + conv1x1 (bias). CentripetalNet: the guiding-shift branch, a 1x1 conv without
#   bias of the detached guiding shift (18 offsets), a 3x3 DCNv1 without bias on the pooled feature with them, the
#   centripetal-shift branch on its output (no activation in between).
# - mmdetection's HourglassNet: ``stem`` = ConvModule(7x7, s2) + BasicBlock(s2, ``downsample`` shortcut); the
#   levels as CornerNet's; ``out_convs`` conv3x3-BN-ReLU, ``conv1x1s`` / ``remap_convs`` conv1x1-BN, ``inters`` blocks.

POOL_DIRECTIONS = {"tl": ("top", "left"), "br": ("bottom", "right")}
RELEASE_POOL = {
    "branches": (("p1_conv1.conv", "p1_conv1.bn"), ("p2_conv1.conv", "p2_conv1.bn")),
    "merge": ("p_conv1", "p_bn1"), "skip": ("conv1", "bn1"), "out": ("conv2.conv", "conv2.bn"),
}  # fmt: skip
MMDET_POOL = {
    "branches": (("direction1_conv.conv", "direction1_conv.bn"), ("direction2_conv.conv", "direction2_conv.bn")),
    "merge": ("aftpool_conv.conv", "aftpool_conv.bn"), "skip": ("conv1.conv", "conv1.bn"),
    "out": ("conv2.conv", "conv2.bn"),
}  # fmt: skip


def scan_pool(x: Tensor, direction: str) -> Tensor:
    """The compiled corner pool by a loop over rows or columns (B, C, H, W) -> same."""
    dim = 2 if direction in ("top", "bottom") else 3
    size = x.shape[dim]
    order = range(size - 1, -1, -1) if direction in ("top", "left") else range(size)
    out, running = x.clone(), None
    for index in order:
        current = x.select(dim, index)
        running = current if running is None else torch.maximum(current, running)
        out.select(dim, index).copy_(running)
    return out


def corner_pool_module(
    state: dict[str, Tensor], prefix: str, x: Tensor, corner: str, names: dict[str, tuple]
) -> Tensor:
    pooled = 0
    for (conv, bn), direction in zip(names["branches"], POOL_DIRECTIONS[corner], strict=True):
        pooled = pooled + scan_pool(_conv_bn(state, f"{prefix}.{conv}", f"{prefix}.{bn}", x).relu(), direction)
    merged = _conv_bn(state, *(f"{prefix}.{n}" for n in names["merge"]), pooled)
    skip = _conv_bn(state, *(f"{prefix}.{n}" for n in names["skip"]), x)
    return _conv_bn(state, *(f"{prefix}.{n}" for n in names["out"]), (merged + skip).relu()).relu()


def _branch(state: dict[str, Tensor], hidden: str, out: str, x: Tensor) -> Tensor:
    x = torch.nn.functional.conv2d(x, state[f"{hidden}.weight"], state[f"{hidden}.bias"], padding=1).relu()
    return torch.nn.functional.conv2d(x, state[f"{out}.weight"], state[f"{out}.bias"])


def _centripetal(state: dict[str, Tensor], offset: str, adaption: str, pooled: Tensor, guiding: Tensor) -> Tensor:
    """The feature the centripetal branch reads: DCNv1 (torchvision's offset layout is DCNv1's: see
    ``deform_reference``) with offsets from the guiding shift."""
    offsets = torch.nn.functional.conv2d(guiding, state[offset])
    return deform_conv2d(pooled, offsets, state[adaption], padding=1)


def release_corner_head(state: dict[str, Tensor], x: Tensor, stack: int, corner: str) -> dict[str, Tensor]:
    """CentripetalNet's release: the maps of one corner type of ``stack`` (0 = the ``mid_`` branches)."""
    p = f"bbox_head.{'mid_' if stack == 0 else ''}{corner}_"
    pooled = corner_pool_module(state, f"{p}pool", x, corner, RELEASE_POOL)
    maps = {name: _branch(state, f"{p}{b}.0.conv", f"{p}{b}.1", pooled) for name, b in (("heat", "heat"),
            ("offset", "off"), ("guiding", "off_c"))}  # fmt: skip
    adapted = _centripetal(state, f"{p}offset.weight", f"{p}fadp.weight", pooled, maps["guiding"])
    maps["centripetal"] = _branch(state, f"{p}off_c_2.0.conv", f"{p}off_c_2.1", adapted)
    return maps


def mmdet_corner_head(state: dict[str, Tensor], x: Tensor, stack: int, corner: str) -> dict[str, Tensor]:
    """mmdetection's CornerHead (embeddings) or CentripetalHead: the maps of one corner type of ``stack``."""
    p = f"bbox_head.{corner}_"
    pooled = corner_pool_module(state, f"{p}pool.{stack}", x, corner, MMDET_POOL)
    branches = {"heat": "heat", "offset": "off", "embedding": "emb", "guiding": "guiding_shift"}
    maps = {
        name: _branch(state, f"{p}{b}.{stack}.0.conv", f"{p}{b}.{stack}.1.conv", pooled)
        for name, b in branches.items()
        if f"{p}{b}.{stack}.0.conv.weight" in state
    }
    if "guiding" in maps:
        adapted = _centripetal(
            state, f"{p}dcn_offset.{stack}.conv.weight", f"{p}feat_adaption.{stack}.weight", pooled, maps["guiding"]
        )
        b = f"{p}centripetal_shift.{stack}"
        maps["centripetal"] = _branch(state, f"{b}.0.conv", f"{b}.1.conv", adapted)
    return maps


def mmdet_hourglass(state: dict[str, Tensor], image: Tensor, stacks: int = 2) -> list[Tensor]:
    """mmdetection's HourglassNet: the output of every stack's ``out_convs``."""
    p = "backbone."
    names = {
        "stem": (f"{p}stem.0.conv", f"{p}stem.0.bn"), "stem_residual": f"{p}stem.1.0",
        "modules": f"{p}hourglass_modules", "out": (f"{p}out_convs.{{}}.conv", f"{p}out_convs.{{}}.bn"),
        "inter_skip": (f"{p}conv1x1s.{{}}.conv", f"{p}conv1x1s.{{}}.bn"),
        "inter_out": (f"{p}remap_convs.{{}}.conv", f"{p}remap_convs.{{}}.bn"), "inter": f"{p}inters",
    }  # fmt: skip
    return _stacked_hourglass(state, image, stacks, names)
