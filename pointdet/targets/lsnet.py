"""LSNet targets (METHODS.md CARD 4 (b) and §1.10): landmarks of each GT, then the two stages' assignments.

- Landmarks of the segmentation task (``contour_points``, read by ``targets.lsnet_tasks.Contours``): 36 contour
  points of the largest polygon part, resampled uniformly by edge length (Duankaiwen/LSNet
  code/mmdet/datasets/pipelines/loading.py ``unify_polygons`` / ``uniformsample``, after DeepSnake), clockwise,
  starting nearest the top centre.

- Landmarks of the detection task: the 4 extreme points (top, left, bottom, right) by the ExtremeNet rule the
  LSNet code applies offline (Duankaiwen/LSNet code/tools/gen_coco_lsvr.py ``_get_extreme_points``), then the box
  centre. Objects without a polygon (RLE-only, or polygons not loaded) take the box's border centres instead, which
  is what the official head does when no extreme points are given (``get_border_center``).
- Init stage: ``point_assign`` (scale 4, one positive per GT); refine stage and classification: ``atss_assign``
  (k = 9) on the boxes of the detached init landmarks.

Extreme points are computed from the polygons after augmentation (a flip mirrors the polygon, so left and right
swap by themselves). The code floors the midpoint of a flat extreme (``// 2`` on integer COCO pixels); here the
polygon is in resized float pixels, so the midpoint is kept exact.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.structures import Instances
from pointdet.targets.assigners import atss_assign, point_assign

EXTREME_TOLERANCE = 0.02  # vertices within 2% of the box side of the extreme take part in it ("3 degrees")


def _flat_run(values: Tensor, extreme: int, tolerance: float) -> Tensor:
    """Indices of the vertices contiguous with ``extreme`` in (cyclic) polygon order whose ``values`` lie within
    ``tolerance`` of it; ``values`` is signed so that the extreme is the minimum."""
    count = len(values)
    picked = [extreme]
    for step in (1, -1):
        index = (extreme + step) % count
        while index not in picked and values[index] - values[extreme] <= tolerance:
            picked.append(index)
            index = (index + step) % count
    return torch.tensor(picked)


def extreme_points(vertices: Tensor, tolerance: float = EXTREME_TOLERANCE) -> Tensor:
    """The ExtremeNet extreme points of a polygon.

    Each extreme takes its coordinate from the polygon's extent and, along the other axis, the midpoint of the run
    of vertices contiguous with the (first) extreme vertex that lie within ``tolerance`` x (side + 1) of it. The
    code pads the vertex list with one vertex at each end and walks without wrapping, so a run that crosses the
    list's end is cut (a rectangle listed from its bottom-left corner gets that corner as its bottom point); here
    the walk is cyclic, which is the rule's intent.

    Args:
        vertices: (V, 2) xy, V >= 1 (all parts of an object concatenated).
        tolerance: fraction of the box side.

    Returns:
        (4, 2) xy of the top, left, bottom and right extreme points.
    """
    low, high = vertices.amin(dim=0), vertices.amax(dim=0)
    width, height = (high - low + 1).tolist()
    x, y = vertices[:, 0], vertices[:, 1]
    points = []
    for along, across, sign, side in ((y, x, 1, height), (x, y, 1, width), (y, x, -1, height), (x, y, -1, width)):
        signed = sign * along
        run = _flat_run(signed, int(signed.argmin()), tolerance * side)
        middle = (across[run].amax() + across[run].amin()) / 2
        extreme = along.amin() if sign == 1 else along.amax()
        points.append(torch.stack([middle, extreme]) if along is y else torch.stack([extreme, middle]))
    return torch.stack(points)


def resample_by_edge_length(polygon: Tensor, count: int) -> Tensor:
    """DeepSnake's uniform resampling of a closed polygon to ``count`` points.

    With more vertices than ``count``, the vertices that start the shortest edges are dropped. Otherwise each edge
    gets ``round(length * count / perimeter)`` points (at least 1), evenly spaced from its start vertex; the rounding
    surplus is taken from the longest edges (down to 1 point each), a deficit is added to the longest edge.

    Args:
        polygon: (V, 2) xy vertices.
        count: points wanted.

    Returns:
        (count, 2) xy in polygon order.
    """
    lengths = (polygon.roll(-1, dims=0) - polygon).norm(dim=1)  # (V,) edge i runs from vertex i to i + 1
    if not bool(lengths.sum() > 0):  # a point-like polygon (a degenerate box): its first vertex everywhere
        return polygon[:1].expand(count, 2).clone()
    by_length = lengths.argsort(stable=True)
    if len(polygon) > count:
        return polygon[by_length[len(polygon) - count :].sort().values]
    per_edge = (lengths * count / lengths.sum()).round().long().clamp(min=1)
    surplus = int(per_edge.sum()) - count
    for edge in by_length.flip(0).tolist():  # longest first
        if surplus <= 0:
            break
        taken = min(surplus, int(per_edge[edge]) - 1)
        per_edge[edge] -= taken
        surplus -= taken
    per_edge[by_length[-1]] -= min(surplus, 0)  # a deficit goes to the longest edge
    starts = polygon.repeat_interleave(per_edge, dim=0)
    ends = polygon.roll(-1, dims=0).repeat_interleave(per_edge, dim=0)
    fractions = torch.cat([torch.arange(int(n), dtype=polygon.dtype) / n for n in per_edge.tolist()])[:, None]
    return starts * (1 - fractions) + ends * fractions


def shoelace_area(polygon: Tensor) -> Tensor:
    """Signed area of (V, 2) xy vertices: positive when they turn counter-clockwise with y pointing up."""
    x, y = polygon.unbind(-1)
    return 0.5 * (x * y.roll(-1) - y * x.roll(-1)).sum()


def contour_points(parts: list[Tensor], box: Tensor, count: int = 36, oversampling: int = 10) -> Tensor:
    """LSNet's contour landmarks of one object.

    1. Parts under 1 px in width or height, or of area <= 5 px², are dropped; with none left the box's corners
       (top-left, bottom-left, bottom-right, top-right) stand for the object.
    2. The largest part is kept (holes and other parts ignored, LSNet fn. 2).
    3. It is resampled to ``count * oversampling`` points by edge length and every ``oversampling``-th is kept.
    4. The points are ordered to a negative shoelace area (shapely's "not ccw", the code's ``get_cw_poly``) and
       rolled to start at the point nearest ``(box centre x, y_min)`` of the part.

    Args:
        parts: polygon parts, each (V, 2) xy.
        box: (4,) xyxy GT box (for the fallback).
        count: contour points (36).
        oversampling: resampling factor before the decimation (10).

    Returns:
        (count, 2) xy.
    """
    kept = []
    for part in parts:
        extent = part.amax(dim=0) - part.amin(dim=0)
        if len(part) >= 3 and bool((extent >= 1).all()) and float(shoelace_area(part).abs()) > 5:
            kept.append(part)
    if kept:
        polygon = max(kept, key=lambda part: float(shoelace_area(part).abs()))
    else:
        x1, y1, x2, y2 = box.tolist()
        polygon = box.new_tensor([[x1, y1], [x1, y2], [x2, y2], [x2, y1]])
    points = resample_by_edge_length(polygon, count * oversampling)[::oversampling]
    if shoelace_area(points) > 0:
        points = points.flip(0)
    low, high = points.amin(dim=0), points.amax(dim=0)
    top_centre = torch.stack([(low[0] + high[0]) / 2, low[1]])
    return points.roll(-int((points - top_centre).pow(2).sum(dim=1).argmin()), dims=0)


def points_extent(points: Tensor) -> Tensor:
    """(..., N, 2) xy points -> (..., 4) xyxy box of their extent."""
    return torch.cat([points.amin(dim=-2), points.amax(dim=-2)], dim=-1)


def border_centres(boxes: Tensor) -> Tensor:
    """(M, 4) xyxy -> (M, 4, 2) the midpoints of the top, left, bottom and right sides."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return torch.stack([torch.stack(point, dim=-1) for point in ((cx, y1), (x1, cy), (cx, y2), (x2, cy))], dim=1)


def extreme_landmarks(instances: Instances) -> Tensor:
    """The detection task's landmarks of every object: 4 extreme points and the box centre.

    Args:
        instances: GT of one image; ``polygons`` used where an object has parts.

    Returns:
        (M, 5, 2) xy: top, left, bottom, right, centre.
    """
    boxes = instances.boxes
    extremes = border_centres(boxes)
    if instances.polygons is not None:
        for index, parts in enumerate(instances.polygons):
            if parts:
                vertices = torch.cat(parts).to(device=boxes.device, dtype=boxes.dtype)
                extremes[index] = extreme_points(vertices)
    # A crop clips the boxes but not the polygons: extremes outside the box are brought back onto it.
    extremes = torch.minimum(torch.maximum(extremes, boxes[:, None, :2]), boxes[:, None, 2:])
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
    return torch.cat([extremes, centres], dim=1)


def boxes_from_extremes(landmarks: Tensor) -> Tensor:
    """(..., V >= 4, 2) landmarks whose first 4 are top, left, bottom, right -> (..., 4) xyxy
    ``(left.x, top.y, right.x, bottom.y)`` (LSNet App. A; the code's ``extreme_points2bbox``)."""
    return torch.stack([landmarks[..., 1, 0], landmarks[..., 0, 1], landmarks[..., 3, 0], landmarks[..., 2, 1]], dim=-1)


class LSNetTargets(NamedTuple):
    """Per-prior targets of a batch.

    Attributes:
        init_landmarks: (B, P, V, 2) xy landmarks of the GT of each init positive, zeros elsewhere.
        init_boxes: (B, P, 4) xyxy GT box of each init positive, zeros elsewhere.
        init_positive: (B, P) bool.
        refine_landmarks: (B, P, V, 2) and refine_boxes (B, P, 4): the same for the refine positives.
        refine_positive: (B, P) bool.
        labels: (B, P) int64 class of each refine positive, ``num_classes`` (background) elsewhere.
    """

    init_landmarks: Tensor
    init_boxes: Tensor
    init_positive: Tensor
    refine_landmarks: Tensor
    refine_boxes: Tensor
    refine_positive: Tensor
    labels: Tensor


def _gather(assigned: Tensor, landmarks: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(P,) assignment -> (P, V, 2) landmarks, (P, 4) boxes (zeros at non-positives) and (P,) positive."""
    positive = assigned >= 0
    index = assigned.clamp(min=0)
    if len(boxes) == 0:
        return landmarks.new_zeros(len(assigned), *landmarks.shape[1:]), boxes.new_zeros(len(assigned), 4), positive
    chosen_landmarks = torch.where(positive[:, None, None], landmarks[index], 0.0)
    return chosen_landmarks, torch.where(positive[:, None], boxes[index], 0.0), positive


def build_lsnet_targets(
    priors: Tensor,
    strides: Tensor,
    candidate_boxes: Tensor,
    instances: list[Instances],
    landmarks: list[Tensor],
    num_classes: int,
    point_scale: int = 4,
    atss_k: int = 9,
) -> LSNetTargets:
    """Init and refine targets of B images on one prior layout (P priors, level after level).

    Args:
        priors: (P, 2) xy locations and ``strides`` (P,) their strides, in image pixels.
        candidate_boxes: (B, P, 4) xyxy image-pixel boxes of the detached init landmarks, ATSS's candidates.
        instances: B ground truths, of which the boxes and labels are read.
        landmarks: B (M_b, V, 2) xy landmarks of each image's objects.
        num_classes: C, the background label.
        point_scale: the init point assigner's ``scale``.
        atss_k: ATSS candidates per level.

    Returns:
        ``LSNetTargets`` with (B, P, ...) fields.
    """
    if not len(instances) == len(landmarks) == len(candidate_boxes):
        raise ValueError(
            f"{len(instances)} instances, {len(landmarks)} landmark sets, candidates {tuple(candidate_boxes.shape)}"
        )
    num_per_level = torch.unique_consecutive(strides, return_counts=True)[1].tolist()
    fields = []
    for boxes, gt, gt_landmarks in zip(candidate_boxes, instances, landmarks, strict=True):
        gt_boxes = gt.boxes.to(device=priors.device, dtype=boxes.dtype)
        gt_landmarks = gt_landmarks.to(device=priors.device, dtype=boxes.dtype)
        init = _gather(point_assign(priors, strides, gt_boxes, scale=point_scale), gt_landmarks, gt_boxes)
        assigned = atss_assign(boxes, num_per_level, gt_boxes, k=atss_k)
        refine = _gather(assigned, gt_landmarks, gt_boxes)
        labels = torch.full_like(assigned, num_classes)
        if len(gt_boxes):
            labels = torch.where(refine[2], gt.labels.to(priors.device)[assigned.clamp(min=0)], labels)
        fields.append((*init, *refine, labels))
    return LSNetTargets(*(torch.stack(field) for field in zip(*fields, strict=True)))
