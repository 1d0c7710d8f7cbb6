"""COCO evaluation of ``Detections`` (boxes and keypoints)."""

from pointdet.evaluation.coco import (
    COCO_METRIC_NAMES,
    KEYPOINT_METRIC_NAMES,
    KEYPOINT_PREFIX,
    detections_to_coco,
    evaluate_coco,
    format_metrics,
    keypoint_sigmas,
    keypoints_to_coco,
)

__all__ = [
    "COCO_METRIC_NAMES",
    "KEYPOINT_METRIC_NAMES",
    "KEYPOINT_PREFIX",
    "detections_to_coco",
    "evaluate_coco",
    "format_metrics",
    "keypoint_sigmas",
    "keypoints_to_coco",
]
