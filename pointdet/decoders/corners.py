"""Corner-pair decoding of CornerNet and CentripetalNet (METHODS.md CARD 3 (d)), batched on the device.

1. Top-K corners per map (3x3 max-pool peaks over the flattened C*H*W), refined by their offsets.
2. All K x K (top-left, bottom-right) pairs are scored at once; a pair is rejected (score -1) when the classes
   differ, the box is empty, or the grouping rule fails:
   - centripetal shift (CentripetalNet): both decoded centres must lie strictly inside the central region
     ``R_central`` (box centre, ``mu`` times its size); ``mu = 1/2.1`` for boxes over 3500 input pixels² and
     ``1/2.4`` otherwise (the paper; the official code has it reversed: ``central_region="official"``);
   - associative embedding (CornerNet): ``|e_tl - e_br| <= 0.5``.
3. Scores: the paper's geometric mean of the corner scores times ``w = exp(-|Δctx||Δcty| / area(R_central))``
   (``pair_score="paper"``), or both codes' arithmetic mean, no ``w``, and pairs whose centre box covers more
   than half of ``R_central`` rejected (``pair_score="code"``, mmdetection's ``distance_threshold``).
   CornerNet's embedding grouping always uses the arithmetic mean.
4. The best ``num_pairs`` pairs with a positive score are the candidates; ``suppress`` applies the per-class
   Gaussian soft-NMS and keeps the top K (done after the flip test concatenates both passes).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pointdet.ops.gather import gather_at
from pointdet.ops.nms import soft_nms
from pointdet.ops.peaks import peak_topk
from pointdet.structures import Detections

PairScore = Literal["paper", "code"]
CentralRegion = Literal["paper", "official"]
LARGE_BOX_AREA = 3500.0  # input pixels², the paper's switch between the two mu
EMBEDDING_THRESHOLD = 0.5  # CornerNet's ae_threshold
CENTRE_BOX_THRESHOLD = 0.5  # mmdetection's distance_threshold (code mode)


class Corners(NamedTuple):
    """Top-K corners of one type; fields are (B, K) except ``xy`` and ``extra`` (B, K, D).

    ``extra`` is the decoded centre (x, y) for the centripetal rule or the embedding (B, K, 1) for CornerNet.
    """

    scores: Tensor
    labels: Tensor
    xy: Tensor
    extra: Tensor


def top_corners(heat: Tensor, offset: Tensor, k: int) -> tuple[Corners, Tensor]:
    """Top-``k`` corners of ``heat`` (B, C, H, W probabilities) refined by ``offset`` (B, 2, H, W); returns
    the corners (with an empty ``extra``) and their flat positions (B, K)."""
    peaks = peak_topk(heat, k)
    xy = torch.stack([peaks.xs, peaks.ys], dim=-1).to(offset.dtype) + gather_at(offset, peaks.flat_index)
    return Corners(peaks.scores, peaks.labels, xy, xy[..., :0]), peaks.flat_index


def centripetal_corners(heat: Tensor, offset: Tensor, centripetal: Tensor, k: int, sign: float) -> Corners:
    """Top-K corners with their decoded centres ``xy + sign * exp(cs)`` (``sign`` +1 top-left, -1 bottom-right)."""
    corners, index = top_corners(heat, offset, k)
    return corners._replace(extra=corners.xy + sign * gather_at(centripetal, index).exp())


def embedding_corners(heat: Tensor, offset: Tensor, embedding: Tensor, k: int) -> Corners:
    """Top-K corners with their associative embeddings (B, K, 1)."""
    corners, index = top_corners(heat, offset, k)
    return corners._replace(extra=gather_at(embedding, index))


def pair_scores(
    tl: Corners,
    br: Corners,
    stride: int,
    matching: Literal["centripetal", "embedding"] = "centripetal",
    pair_score: PairScore = "paper",
    central_region: CentralRegion = "paper",
) -> Tensor:
    """(B, K_tl, K_br) score of every (top-left i, bottom-right j) pair, -1 where the pair is rejected."""
    tl_x, tl_y = tl.xy[..., 0, None], tl.xy[..., 1, None]  # (B, K, 1)
    br_x, br_y = br.xy[..., None, :, 0], br.xy[..., None, :, 1]  # (B, 1, K)
    valid = (tl.labels[:, :, None] == br.labels[:, None, :]) & (br_x > tl_x) & (br_y > tl_y)
    s_tl, s_br = tl.scores[:, :, None], br.scores[:, None, :]
    if matching == "embedding":
        valid &= (tl.extra[:, :, None, 0] - br.extra[:, None, :, 0]).abs() <= EMBEDDING_THRESHOLD
        return torch.where(valid, (s_tl + s_br) / 2, torch.full_like(valid, -1, dtype=s_tl.dtype))
    width, height = br_x - tl_x, br_y - tl_y
    large = width * height * stride**2 > LARGE_BOX_AREA
    if central_region == "official":
        large = ~large
    mu = torch.where(large, 1 / 2.1, 1 / 2.4)
    center_x, center_y = (tl_x + br_x) / 2, (tl_y + br_y) / 2
    half_w, half_h = mu * width / 2, mu * height / 2
    tl_cx, tl_cy = tl.extra[..., 0, None], tl.extra[..., 1, None]
    br_cx, br_cy = br.extra[..., None, :, 0], br.extra[..., None, :, 1]
    for cx, cy in ((tl_cx, tl_cy), (br_cx, br_cy)):
        valid &= ((cx - center_x).abs() < half_w) & ((cy - center_y).abs() < half_h)
    region_area = (2 * half_w) * (2 * half_h)
    centre_box = (br_cx - tl_cx).abs() * (br_cy - tl_cy).abs()
    if pair_score == "paper":
        scores = (s_tl * s_br).sqrt() * torch.exp(-centre_box / region_area.clamp(min=1e-12))
    else:
        valid &= centre_box / region_area.clamp(min=1e-12) <= CENTRE_BOX_THRESHOLD
        scores = (s_tl + s_br) / 2
    return torch.where(valid, scores, torch.full_like(scores, -1))


def pair_candidates(tl: Corners, br: Corners, scores: Tensor, stride: int, num_pairs: int = 1000) -> list[Detections]:
    """The best ``num_pairs`` pairs with a positive score per image, as boxes in input pixels, sorted."""
    batch, num_tl, num_br = scores.shape
    top_scores, flat = scores.reshape(batch, -1).topk(min(num_pairs, num_tl * num_br))
    tl_index, br_index = flat // num_br, flat % num_br
    tl_xy = tl.xy.gather(1, tl_index[..., None].expand(-1, -1, 2))
    br_xy = br.xy.gather(1, br_index[..., None].expand(-1, -1, 2))
    boxes = torch.cat([tl_xy, br_xy], dim=-1).float() * stride
    labels = tl.labels.gather(1, tl_index)
    return [Detections(boxes[b], top_scores[b].float(), labels[b])[top_scores[b] > 0] for b in range(batch)]


def suppress(candidates: Detections, k: int = 100, sigma: float = 0.5, iou_threshold: float = 0.5) -> Detections:
    """Per-class Gaussian soft-NMS, then the top ``k`` with a positive score (METHODS.md CARD 3 (d) step 9)."""
    keep, scores = soft_nms(candidates.boxes, candidates.scores, candidates.labels, sigma, iou_threshold=iou_threshold)
    positive = scores > 0
    return replace(candidates[keep[positive][:k]], scores=scores[positive][:k])


def mirror(detections: Detections, width: float) -> Detections:
    """Boxes of a horizontally flipped image mapped back to the original: ``x -> width - x``."""
    boxes = detections.boxes[:, [2, 1, 0, 3]] * detections.boxes.new_tensor([-1.0, 1.0, -1.0, 1.0])
    return replace(detections, boxes=boxes + detections.boxes.new_tensor([width, 0.0, width, 0.0]))
