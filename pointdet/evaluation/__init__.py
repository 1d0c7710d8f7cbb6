"""Evaluation of ``Detections``: COCO boxes, masks and keypoints, KITTI 2D / orientation / bird's-eye / 3D."""

from pointdet.evaluation.coco import (
    COCO_METRIC_NAMES,
    KEYPOINT_METRIC_NAMES,
    KEYPOINT_PREFIX,
    SEGM_PREFIX,
    detections_to_coco,
    evaluate_coco,
    format_coco_metrics,
    keypoint_sigmas,
    keypoints_to_coco,
    masks_to_coco,
)
from pointdet.evaluation.kitti import detections_to_kitti, evaluate_kitti, format_kitti_metrics


def format_metrics(metrics: dict[str, float]) -> str:
    """The metric tables of either benchmark (KITTI keys look like ``Car/bev/moderate``)."""
    if any("/" in key for key in metrics):
        return format_kitti_metrics(metrics)
    return format_coco_metrics(metrics)


__all__ = [
    "COCO_METRIC_NAMES",
    "KEYPOINT_METRIC_NAMES",
    "KEYPOINT_PREFIX",
    "SEGM_PREFIX",
    "detections_to_coco",
    "detections_to_kitti",
    "evaluate_coco",
    "evaluate_kitti",
    "format_coco_metrics",
    "format_kitti_metrics",
    "format_metrics",
    "keypoint_sigmas",
    "keypoints_to_coco",
    "masks_to_coco",
]
