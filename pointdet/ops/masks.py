"""Box-relative instance masks: cropping ground truth into boxes and pasting predictions back (Mask R-CNN's
convention, used by CentripetalNet's mask head; METHODS.md CARD 3 (e')); polygon masks (LSNet's contours,
rasterised on the image as its code does with ``pycocotools``, CARD 4 (d) step 5); point-set masks (Dense RepPoints'
interpolated point scores, CARD 5 §5.2)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes

from pointdet.structures import Detections


def crop_masks(masks: Tensor, boxes: Tensor, index: Tensor, size: int) -> Tensor:
    """Mask targets: ``masks[index[i]]`` resampled inside ``boxes[i]`` (torchvision's Mask R-CNN
    ``project_masks_on_boxes``: RoIAlign, soft values at the borders), the inverse of ``paste_masks``.

    Args:
        masks: (G, H, W) binary masks in image pixels.
        boxes: (N, 4) xyxy boxes in the same pixels.
        index: (N,) int64 mask of each box.
        size: output side M.

    Returns:
        (N, M, M) float in [0, 1].
    """
    if len(boxes) == 0:
        return torch.zeros(0, size, size, device=boxes.device)
    return project_masks_on_boxes(masks.float(), boxes.float(), index, size)


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """Paste box-relative mask probabilities into a ``height x width`` image (torchvision's Mask R-CNN paste).

    Args:
        masks: (N, M, M) probabilities inside each box.
        boxes: (N, 4) xyxy in the image's pixels.
        threshold: probability at which a pixel belongs to the object.

    Returns:
        (N, height, width) bool.
    """
    if len(boxes) == 0:
        return torch.zeros(0, height, width, dtype=torch.bool, device=masks.device)
    pasted = paste_masks_in_image(masks[:, None].float(), boxes.float(), (height, width), padding=1)
    return pasted[:, 0] >= threshold


def rasterise_polygons(polygons: Tensor, height: int, width: int) -> Tensor:
    """Fill closed polygons on a ``height x width`` image with pycocotools (COCO's own polygon-to-mask rule).

    Args:
        polygons: (N, V, 2) xy pixels, V >= 3.

    Returns:
        (N, height, width) bool on the polygons' device.
    """
    if len(polygons) == 0:
        return torch.zeros(0, height, width, dtype=torch.bool, device=polygons.device)
    flat = polygons.detach().double().flatten(1).cpu().tolist()
    encoded = mask_utils.frPyObjects(flat, height, width)
    masks = np.ascontiguousarray(mask_utils.decode(encoded).transpose(2, 0, 1))
    return torch.from_numpy(masks).to(device=polygons.device, dtype=torch.bool)


def instance_masks(detections: Detections, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """(N, height, width) bool masks of detections in a ``height x width`` image: box-relative ``masks`` pasted
    (thresholded at ``threshold``), or ``contours`` rasterised."""
    if detections.masks is not None:
        return paste_masks(detections.masks, detections.boxes, height, width, threshold)
    if detections.contours is not None:
        return rasterise_polygons(detections.contours, height, width)
    raise ValueError("these detections have no masks: neither box-relative masks nor contours")


def point_set_masks(points: Tensor, values: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Box-relative masks of scored point sets, Dense RepPoints' rule (METHODS.md CARD 5 §5.2).

    Scalsol/RepPointsV2 ``DenseRepPointsV2Detector.get_seg_masks``, as summarised here (no code copied): the points
    with a positive value, plus the 4 corners of the box at value 0, are interpolated linearly over their Delaunay
    triangulation (``scipy.interpolate.griddata``), 0 outside it; a pixel belongs to the object where the
    interpolation exceeds 0.5. The code evaluates it on the box's pixel grid (its box cut to integers; its corner
    list mixes width and height); here it is evaluated at the centres of a ``size x size`` grid over the box and
    pasted like every box-relative mask (``paste_masks``, threshold 0.5). A box corner that coincides with a point
    of the set is not added (the code leaves the tie to the triangulation).

    Args:
        points: (N, K, 2) xy image pixels.
        values: (N, K) point values in [0, 1] (mask probabilities; 0 drops a point).
        boxes: (N, 4) xyxy boxes in the same pixels.
        size: side M of the box-relative grid.

    Returns:
        (N, M, M) float interpolated values, on ``points``' device.
    """
    from scipy.interpolate import griddata

    masks = np.zeros((len(points), size, size), dtype=np.float32)
    steps = (np.arange(size) + 0.5) / size
    for index, (set_points, set_values, box) in enumerate(
        zip(
            points.detach().double().cpu().numpy(),
            values.detach().double().cpu().numpy(),
            boxes.double().cpu().numpy(),
            strict=True,
        )
    ):
        x1, y1, x2, y2 = box
        if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
            continue
        kept, kept_values = set_points[set_values > 0], set_values[set_values > 0]
        corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]])
        new = ~(np.abs(corners[:, None] - kept[None]).max(axis=-1) < 1e-6).any(axis=1)
        known = np.concatenate([kept, corners[new]])
        known_values = np.concatenate([kept_values, np.zeros(int(new.sum()))])
        grid_x, grid_y = np.meshgrid(x1 + steps * (x2 - x1), y1 + steps * (y2 - y1))
        interpolated = griddata(known, known_values, (grid_x, grid_y), method="linear", fill_value=0.0)
        masks[index] = interpolated
    return torch.from_numpy(masks).to(points.device)


def point_set_hulls(points: Tensor, values: Tensor, boxes: Tensor) -> Tensor:
    """Polygon masks of scored point sets: the convex hull of the points with a positive value (the same points the
    triangulation rule ``point_set_masks`` interpolates), as closed polygons for ``rasterise_polygons``.

    Dense RepPoints' hull inference for point sets on the contour (justimyhxu/Dense-RepPoints' README: "both the
    concave hull and triangulation methods are supported"; here the convex hull, exact for convex objects). A set
    with fewer than 3 such points, or all on a line, stands for its box.

    Args:
        points: (N, K, 2) xy image pixels.
        values: (N, K) point values (0 drops a point).
        boxes: (N, 4) xyxy boxes, the fallback.

    Returns:
        (N, K + 4, 2) hull vertices in order, the last one repeated to pad each polygon to K + 4 vertices.
    """
    from scipy.spatial import ConvexHull, QhullError

    hulls = []
    for set_points, set_values, box in zip(
        points.detach().double().cpu().numpy(),
        values.detach().double().cpu().numpy(),
        boxes.detach().double().cpu().numpy(),
        strict=True,
    ):
        kept = set_points[set_values > 0]
        x1, y1, x2, y2 = box
        vertices = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
        if len(kept) >= 3:
            with contextlib.suppress(QhullError):  # collinear or coincident points keep the box
                vertices = kept[ConvexHull(kept).vertices]
        padding = np.repeat(vertices[-1:], points.shape[1] + 4 - len(vertices), axis=0)
        hulls.append(np.concatenate([vertices, padding]))
    shape = (len(hulls), points.shape[1] + 4, 2)
    stacked = np.stack(hulls) if hulls else np.zeros(shape)
    return torch.from_numpy(stacked).to(device=points.device, dtype=points.dtype)
