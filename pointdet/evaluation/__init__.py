"""Evaluation of ``Detections``: COCO boxes, masks and keypoints, KITTI 2D / orientation / bird's-eye / 3D."""

from collections.abc import Mapping

from pointdet.evaluation.coco import (
    COCO_METRIC_NAMES,
    KEYPOINT_METRIC_NAMES,
    KEYPOINT_PREFIX,
    SEGM_PREFIX,
    CocoEvaluation,
    detections_to_coco,
    evaluate_coco,
    format_coco_metrics,
    keypoint_sigmas,
    keypoints_to_coco,
    masks_to_coco,
    merge_classes,
    per_joint_ap,
    prediction_records,
    run_coco_evaluation,
)
from pointdet.evaluation.confusion import ImageBoxes, coco_confusion_matrix, confusion_matrix, row_normalised
from pointdet.evaluation.kitti import detections_to_kitti, evaluate_kitti, format_kitti_metrics
from pointdet.evaluation.per_class import format_per_class, per_class_ap, pr_curves


def format_metrics(metrics: Mapping[str, float]) -> str:
    """The metric tables of either benchmark (KITTI keys look like ``Car/bev/moderate``)."""
    if any("/" in key for key in metrics):
        return format_kitti_metrics(metrics)
    return format_coco_metrics(metrics)


__all__ = [
    "COCO_METRIC_NAMES",
    "CocoEvaluation",
    "ImageBoxes",
    "KEYPOINT_METRIC_NAMES",
    "KEYPOINT_PREFIX",
    "SEGM_PREFIX",
    "coco_confusion_matrix",
    "confusion_matrix",
    "detections_to_coco",
    "detections_to_kitti",
    "evaluate_coco",
    "evaluate_kitti",
    "format_coco_metrics",
    "format_kitti_metrics",
    "format_metrics",
    "format_per_class",
    "keypoint_sigmas",
    "keypoints_to_coco",
    "masks_to_coco",
    "merge_classes",
    "per_class_ap",
    "per_joint_ap",
    "pr_curves",
    "prediction_records",
    "row_normalised",
    "run_coco_evaluation",
]
