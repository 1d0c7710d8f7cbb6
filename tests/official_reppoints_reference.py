"""Test-side statements of what Scalsol/RepPointsV2 (36e1e54, an mmdetection 2.x fork) computes at test time, on
its own tensor names, written from reading ``mmdet/models/necks/fpn.py``, ``dense_heads/reppoints_v2_head.py``
(``forward_single``), ``dense_heads/dense_reppoints_v2_head.py`` (``forward_pts_head_single``,
``forward_mask_head``, ``forward_mask_head_single``, ``sample_offset``, ``sample_offset_3d``,
``grid_position_sensitive_group_partition``) and ``ops/corner_pool/corner_pool.py`` (``CornerPoolPack``). No code
of theirs is here; the official networks themselves were built and compared outside the test suite (README).

- mmcv ``ConvModule`` with GN: conv without bias, GroupNorm(32), ReLU unless ``act_cfg=None`` (the FPN's).
- FPN (``start_level=1``, ``add_extra_convs='on_input'``): laterals on C3-C5, top-down nearest up-sampling to the
  finer map's size and addition, 3x3 output convs, P6 a stride-2 conv on C5, P7 one on P6 (no ReLU between).
- RepPoints v2 points are (dy, dx) pairs; the dense head's are (dx, dy) pairs, and it adds the regular grid laid
  (dy, dx) to them. The dense head's bilinear sampling is ``grid_sample`` (border padding, corners aligned) at
  ``2 (j + dx) / (w - 1) - 1``, in the cells of the map the offsets belong to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import deform_conv2d

HEAD = "bbox_head."


def _conv(state: dict[str, Tensor], name: str, x: Tensor, padding: int = 0, stride: int = 1) -> Tensor:
    return F.conv2d(x, state[f"{name}.weight"], state.get(f"{name}.bias"), stride=stride, padding=padding)


def conv_module(state: dict[str, Tensor], name: str, x: Tensor, padding: int, relu: bool = True, stride: int = 1):
    """mmcv ``ConvModule`` ``name`` (``.conv`` + ``.gn``)."""
    x = F.conv2d(x, state[f"{name}.conv.weight"], stride=stride, padding=padding)
    x = F.group_norm(x, 32, state[f"{name}.gn.weight"], state[f"{name}.gn.bias"])
    return x.relu() if relu else x


def official_fpn(state: dict[str, Tensor], c3_c5: list[Tensor]) -> list[Tensor]:
    """P3-P7 from C3, C4, C5."""
    laterals = [conv_module(state, f"neck.lateral_convs.{i}", c, 0, relu=False) for i, c in enumerate(c3_c5)]
    for i in (2, 1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
    outs = [conv_module(state, f"neck.fpn_convs.{i}", lateral, 1, relu=False) for i, lateral in enumerate(laterals)]
    outs.append(conv_module(state, "neck.fpn_convs.3", c3_c5[-1], 1, relu=False, stride=2))
    outs.append(conv_module(state, "neck.fpn_convs.4", outs[-1], 1, relu=False, stride=2))
    return outs


def _cummax(x: Tensor, direction: str) -> Tensor:
    """The official ``CornerPool`` (torch >= 1.5 path): a running max from the far side."""
    dim, flip = {"top": (2, True), "left": (3, True), "bottom": (2, False), "right": (3, False)}[direction]
    x = x.flip(dim) if flip else x
    pooled = torch.cummax(x, dim=dim)[0]
    return pooled.flip(dim) if flip else pooled


def corner_pool_pack(state: dict[str, Tensor], name: str, x: Tensor, directions: tuple[str, str]) -> Tensor:
    """``TLPool`` (top, left) / ``BRPool`` (bottom, right) with ``first_kernel_size=3``, ``kernel_size=1``."""
    pool1 = _cummax(conv_module(state, f"{name}.p1_conv1", x, 1), directions[0])
    pool2 = _cummax(conv_module(state, f"{name}.p2_conv1", x, 1), directions[1])
    merged = F.group_norm(_conv(state, f"{name}.p_conv1", pool1 + pool2, 1), 32, state[f"{name}.p_gn1.weight"],
                          state[f"{name}.p_gn1.bias"])  # fmt: skip
    skip = F.group_norm(_conv(state, f"{name}.conv1", x), 32, state[f"{name}.gn1.weight"], state[f"{name}.gn1.bias"])
    return conv_module(state, f"{name}.conv2", (merged + skip).relu(), 0)


def _towers(state: dict[str, Tensor], x: Tensor, depth: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """cls and reg towers, the shared conv, ``sem_score`` and the embedding ``sem_feat`` (both heads)."""
    cls, pts = x, x
    for i in range(depth):
        cls, pts = (
            conv_module(state, f"{HEAD}cls_convs.{i}", cls, 1),
            conv_module(state, f"{HEAD}reg_convs.{i}", pts, 1),
        )
    shared = conv_module(state, f"{HEAD}shared_convs.0", pts, 1)
    sem_score = _conv(state, f"{HEAD}reppoints_sem_out", shared)
    sem = conv_module(state, f"{HEAD}reppoints_sem_embedding", shared, 0)
    return cls, pts, shared, sem_score, sem


def _grid(kernel: int) -> Tensor:
    """``dcn_base_offset``: (2 k^2,) pairs (row step, column step), rows slowest."""
    steps = torch.arange(kernel, dtype=torch.float64) - kernel // 2
    return torch.stack([steps.repeat_interleave(kernel), steps.repeat(kernel)], dim=1).reshape(-1)


def reppoints_v2_level(state: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    """``RepPointsV2Head.forward_single``'s six maps of one level (B, 256, H, W)."""
    cls, pts, shared, sem_score, sem = _towers(state, x)
    cls, pts, hem = cls + sem, pts + sem, shared + sem
    corners = {"tl": ("top", "left"), "br": ("bottom", "right")}
    pooled = {c: corner_pool_pack(state, f"{HEAD}hem_{c}", hem, directions) for c, directions in corners.items()}
    score = torch.cat([_conv(state, f"{HEAD}reppoints_hem_{c}_score_out", p, 1) for c, p in pooled.items()], 1)
    offset = torch.cat([_conv(state, f"{HEAD}reppoints_hem_{c}_offset_out", p, 1) for c, p in pooled.items()], 1)
    init = _conv(state, f"{HEAD}reppoints_pts_init_out", _conv(state, f"{HEAD}reppoints_pts_init_conv", pts, 1).relu())
    dcn_offset = init - _grid(3).to(init).view(1, -1, 1, 1)
    guide = torch.cat([score, offset], 1)
    cls_hidden = deform_conv2d(
        torch.cat([cls, guide], 1), dcn_offset, state[f"{HEAD}reppoints_cls_conv.weight"], padding=1
    )
    pts_hidden = deform_conv2d(torch.cat([pts, guide], 1), dcn_offset, state[f"{HEAD}reppoints_pts_refine_conv.weight"],
                               padding=1)  # fmt: skip
    return {
        "cls": _conv(state, f"{HEAD}reppoints_cls_out", cls_hidden.relu()),
        "pts_init": init,
        "pts_refine": _conv(state, f"{HEAD}reppoints_pts_refine_out", pts_hidden.relu()) + init,
        "hem_score": score,
        "hem_offset": offset,
        "sem_score": sem_score,
    }


def sample_at(maps: Tensor, flow_xy: Tensor) -> Tensor:
    """``sample_offset``: (M, C, H, W) read at every cell moved by (M, 2, H, W) (dx, dy)."""
    height, width = flow_xy.shape[-2:]
    x = (torch.arange(width, dtype=flow_xy.dtype) + flow_xy[:, 0]) * 2 / (width - 1) - 1
    y = (torch.arange(height, dtype=flow_xy.dtype)[:, None] + flow_xy[:, 1]) * 2 / (height - 1) - 1
    return F.grid_sample(maps, torch.stack([x, y], -1), padding_mode="border", align_corners=True)


def dense_level(state: dict[str, Tensor], x: Tensor, groups: int = 9) -> dict[str, Tensor]:
    """``DenseRepPointsV2Head.forward_pts_head_single`` (test time) of one level: its maps (points (dx, dy)) and
    ``sem_feat``."""
    batch, _, height, width = x.shape
    cls, pts, shared, sem_score, sem = _towers(state, x)
    cls, pts, cont = cls + sem, pts + sem, shared + sem
    cont_score = _conv(state, f"{HEAD}reppoints_cont_score_out", cont, 1)
    cont_offset = _conv(state, f"{HEAD}reppoints_cont_offset_out", cont, 1)
    init = _conv(state, f"{HEAD}reppoints_pts_init_out", _conv(state, f"{HEAD}reppoints_pts_init_conv", pts, 1).relu())
    kernel = round((init.shape[1] // 2) ** 0.5)
    grid = _grid(kernel)
    init = init + (grid / grid.max() * 2).to(init).view(1, -1, 1, 1)  # point_base_scale 4 / 2
    guide = torch.cat([cont_score, cont_offset], 1)
    cls, pts = torch.cat([cls, guide], 1), torch.cat([pts, guide], 1)
    firsts = init.view(batch, groups, -1, 2, height, width)[:, :, 0]  # (B, G, 2, H, W)
    pooled = torch.stack([sample_at(cls, firsts[:, g]) for g in range(groups)], 1).view(batch, -1, height, width)
    hidden = _conv(state, f"{HEAD}reppoints_cls_conv", pooled).relu()
    field = _conv(
        state, f"{HEAD}reppoints_pts_refine_out", _conv(state, f"{HEAD}reppoints_pts_refine_conv", pts, 1).relu()
    )
    moved = sample_at(field.view(-1, 2, height, width), init.view(-1, 2, height, width)).view_as(init)
    return {
        "cls": _conv(state, f"{HEAD}reppoints_cls_out", hidden),
        "pts_init": init,
        "pts_refine": moved + init,
        "cont_score": cont_score,
        "cont_offset": cont_offset,
        "sem_score": sem_score,
        "sem_feat": sem,
    }


def dense_point_scores(
    state: dict[str, Tensor], features: list[Tensor], levels: list[dict[str, Tensor]], mask_convs: int = 7
) -> list[Tensor]:
    """``forward_mask_head`` (``fuse_mask_feat=True``) at test time: per level (B, N, H_l, W_l) score logits of
    the refine points."""
    masks = features
    for i in range(mask_convs):
        masks = [conv_module(state, f"{HEAD}mask_convs.{i}", m, 1) for m in masks]
    high = masks[0] + levels[0]["sem_feat"]
    size = high.shape[-2:]
    scores = []
    for level, (mask, maps) in enumerate(zip(masks, levels, strict=True)):
        # The code forms mask + sem_feat for every level but up-samples the bare mask feature of levels > 0.
        up = (
            mask + maps["sem_feat"]
            if level == 0
            else F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
        )
        fused = _conv(state, f"{HEAD}mask_fuse_conv", up + high, 1)
        hidden = _conv(state, f"{HEAD}reppoints_mask_init_conv", fused, 1).relu()
        score_map = _conv(state, f"{HEAD}reppoints_mask_init_out", hidden)
        scores.append(_sample_scores(score_map, maps["pts_refine"]))
    return scores


def _sample_scores(score_map: Tensor, points: Tensor) -> Tensor:
    """(B, G, H3, W3) score maps read by (B, 2N, h, w) (dx, dy) points: each point at ``(j + dx, i + dy)`` in its
    level's cells normalised by the level's size, on the map of its cell of a sqrt(G) grid over its set's extent."""
    batch, _, height, width = points.shape
    groups = score_map.shape[1]
    side = round(groups**0.5)
    xy = points.view(batch, -1, 2, height, width)
    low, high = xy.amin(dim=1, keepdim=True), xy.amax(dim=1, keepdim=True)
    normalised = (xy - low) / (high - low + 1e-6)
    cell = (normalised * side).long()
    group = (cell[:, :, 1] * side + cell[:, :, 0]).to(points.dtype)  # (B, N, h, w)
    gx = (torch.arange(width, dtype=points.dtype) + xy[:, :, 0]) * 2 / (width - 1) - 1
    gy = (torch.arange(height, dtype=points.dtype)[:, None] + xy[:, :, 1]) * 2 / (height - 1) - 1
    gz = group * 2 / (groups - 1) - 1
    grid = torch.stack([gx, gy, gz], -1)  # (B, N, h, w, 3)
    return F.grid_sample(score_map[:, None], grid, padding_mode="border", align_corners=True)[:, 0]
