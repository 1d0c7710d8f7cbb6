"""Corner-pair decoding of CornerNet and CentripetalNet (METHODS.md CARD 3 (d)), batched on the device.

1. Top-K corners per map (3x3 max-pool peaks over the flattened C*H*W), refined by their offsets.
2. All K x K (top-left, bottom-right) pairs are scored at once; a pair is rejected (score -1) when the classes
   differ, the box is empty, or the grouping rule fails:
   - centripetal shift (CentripetalNet): both decoded centres must lie strictly inside the central region
     ``R_central`` (box centre, ``mu`` times its size); ``mu = 1/2.1`` for boxes over 3500 input pixels² and
     ``1/2.4`` otherwise (the paper; the official code has it reversed: ``central_region="official"``);
   - associative embedding (CornerNet): ``|e_tl - e_br| <= 0.5``.
3. Scores: the paper's geometric mean of the corner scores times ``w = exp(-|Δctx||Δcty| / area(R_central))``
   (``pair_score="paper"``), or the codes' arithmetic mean without ``w``: mmdetection's rule rejects the pairs
   whose centre box covers more than half of ``R_central`` (``pair_score="code"``, its ``distance_threshold``);
   the authors' release computes that ratio but never applies it (``pair_score="official"``). Both codes first
   set every corner and centre coordinate that is not positive (left of or above the image) to 0, which moves
   such corners onto the image edge and usually puts a centre outside the central region; the paper's rule reads
   the coordinates as decoded. CornerNet's embedding grouping always uses the arithmetic mean.
4. The best ``num_pairs`` pairs with a positive score are the candidates; ``suppress`` applies the per-class
   Gaussian soft-NMS and keeps the top K (done after the flip test concatenates both passes).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pointdet.decoders.tta import mirror
from pointdet.ops.gather import gather_at
from pointdet.ops.nms import batched_soft_nms
from pointdet.ops.peaks import peak_topk
from pointdet.structures import Detections

PairScore = Literal["paper", "code", "official"]
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


def zero_outside_image(corners: Corners) -> Corners:
    """The codes' border rule: corner and centre coordinates that are not positive become 0 (both official codes
    measure them from the image's top-left corner, pointdet's input frame, and zero them before pairing)."""
    xy, extra = corners.xy, corners.extra
    return corners._replace(xy=xy.where(xy > 0, 0), extra=extra.where(extra > 0, 0))


def pair_scores(
    tl: Corners,
    br: Corners,
    stride: int,
    matching: Literal["centripetal", "embedding"] = "centripetal",
    pair_score: PairScore = "paper",
    central_region: CentralRegion = "paper",
) -> Tensor:
    """(B, K_tl, K_br) score of every (top-left i, bottom-right j) pair, -1 where the pair is rejected (the corners
    as given: ``CornerPostprocess`` applies the codes' ``zero_outside_image`` first)."""
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
        if pair_score == "code":
            valid &= centre_box / region_area.clamp(min=1e-12) <= CENTRE_BOX_THRESHOLD
        scores = (s_tl + s_br) / 2
    return torch.where(valid, scores, torch.full_like(scores, -1))


def batched_pair_candidates(tl: Corners, br: Corners, scores: Tensor, stride: int, num_pairs: int = 1000) -> Detections:
    """The best ``num_pairs`` pairs of every image as one batched ``Detections`` (fields (B, P, ...)), boxes in
    input pixels, sorted; rejected pairs are kept with their score ``<= 0`` (padding)."""
    batch, num_tl, num_br = scores.shape
    top_scores, flat = scores.reshape(batch, -1).topk(min(num_pairs, num_tl * num_br))
    tl_index, br_index = flat // num_br, flat % num_br
    tl_xy = tl.xy.gather(1, tl_index[..., None].expand(-1, -1, 2))
    br_xy = br.xy.gather(1, br_index[..., None].expand(-1, -1, 2))
    boxes = torch.cat([tl_xy, br_xy], dim=-1).float() * stride
    return Detections(boxes, top_scores.float(), tl.labels.gather(1, tl_index))


def pair_candidates(tl: Corners, br: Corners, scores: Tensor, stride: int, num_pairs: int = 1000) -> list[Detections]:
    """The best ``num_pairs`` pairs with a positive score per image, as boxes in input pixels, sorted."""
    batched = batched_pair_candidates(tl, br, scores, stride, num_pairs)
    return [batched[b][batched.scores[b] > 0] for b in range(len(batched))]


def suppress(candidates: Detections, k: int = 100, sigma: float = 0.5, iou_threshold: float = 0.5) -> list[Detections]:
    """Per-class Gaussian soft-NMS of batched candidates (fields (B, P, ...), score ``<= 0`` = padding), then the
    top ``k`` of each image with a positive score (METHODS.md CARD 3 (d) step 9). The soft-NMS runs ``k`` fixed
    steps on the whole batch (``ops.nms.batched_soft_nms``): no host sync until the per-image split."""
    kept = batched_soft_nms(
        candidates.boxes,
        candidates.scores,
        candidates.labels,
        candidates.scores > 0,
        sigma,
        iou_threshold=iou_threshold,
        max_kept=k,
    )
    positive = kept.valid & (kept.scores > 0)
    out = []
    for b in range(len(candidates)):
        image = replace(candidates[b][kept.index[b]], scores=kept.scores[b])
        out.append(image[positive[b]])
    return out


class CornerPostprocess:
    """Raw corner maps of the last hourglass stack -> detections in input pixels (steps 1-4 above).

    Args:
        stride: output stride (4).
        matching: ``centripetal`` (CentripetalNet) or ``embedding`` (CornerNet).
        pair_score, central_region: decoding rules (paper defaults; METHODS.md App. A #7-8): ``pair_score``
            ``paper``, ``code`` (mmdetection) or ``official`` (the authors' release), see the module docstring.
        num_pairs: pairs kept before soft-NMS (1000).
        soft_nms_sigma: Gaussian soft-NMS sigma (mmdetection's 0.5; the official code uses 0.7).
        corners_per_map: top corners taken from each heatmap (100).
        num_proposals: pairs per image offered to an RoI head (the mask head) in training.
    """

    def __init__(
        self,
        stride: int = 4,
        matching: Literal["centripetal", "embedding"] = "centripetal",
        pair_score: PairScore = "paper",
        central_region: CentralRegion = "paper",
        num_pairs: int = 1000,
        soft_nms_sigma: float = 0.5,
        corners_per_map: int = 100,
        num_proposals: int = 32,
    ) -> None:
        if matching not in ("centripetal", "embedding"):
            raise ValueError(f"corner matching must be 'centripetal' or 'embedding', got {matching!r}")
        self.stride, self.matching, self.pair_score, self.central_region = stride, matching, pair_score, central_region
        self.num_pairs, self.soft_nms_sigma = num_pairs, soft_nms_sigma
        self.corners_per_map, self.num_proposals = corners_per_map, num_proposals

    @torch.no_grad()
    def batched_candidates(self, outputs: NamedTuple, num_pairs: int | None = None) -> Detections:
        """Matched corner pairs of the last stack before soft-NMS, boxes in input pixels, best first, as one
        batched ``Detections`` (``batched_pair_candidates``: rejected pairs padded with a score ``<= 0``)."""
        maps = {name: value[:, -1].detach() for name, value in outputs._asdict().items()}
        tl_heat, br_heat = maps["tl_heat"].sigmoid(), maps["br_heat"].sigmoid()
        k = self.corners_per_map
        if self.matching == "centripetal":
            tl = centripetal_corners(tl_heat, maps["tl_offset"], maps["tl_centripetal"], k, sign=1.0)
            br = centripetal_corners(br_heat, maps["br_offset"], maps["br_centripetal"], k, sign=-1.0)
            if self.pair_score != "paper":
                tl, br = zero_outside_image(tl), zero_outside_image(br)
        else:
            tl = embedding_corners(tl_heat, maps["tl_offset"], maps["tl_embedding"], k)
            br = embedding_corners(br_heat, maps["br_offset"], maps["br_embedding"], k)
        scores = pair_scores(tl, br, self.stride, self.matching, self.pair_score, self.central_region)
        return batched_pair_candidates(tl, br, scores, self.stride, num_pairs or self.num_pairs)

    def proposals(self, outputs: NamedTuple) -> list[Tensor]:
        """Training proposals for an RoI head: the boxes (N, 4) of the best ``num_proposals`` pairs per image."""
        batched = self.batched_candidates(outputs, num_pairs=self.num_proposals)
        return [batched.boxes[b][batched.scores[b] > 0] for b in range(len(batched))]

    def __call__(self, outputs: NamedTuple, flipped: NamedTuple | None = None, k: int = 100) -> list[Detections]:
        """Detections in input pixels; with ``flipped`` (outputs of the mirrored batch) the pairs of both passes
        are concatenated before soft-NMS, as both codes do."""
        candidates = self.batched_candidates(outputs)
        if flipped is not None:
            width = outputs.tl_heat.shape[-1] * self.stride
            mirrored = mirror(self.batched_candidates(flipped), width)
            candidates = Detections.cat([candidates, mirrored], dim=1)
        return suppress(candidates, k, self.soft_nms_sigma)
