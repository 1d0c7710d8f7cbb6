"""COCO evaluation of ``Detections``."""

from pointdet.evaluation.coco import COCO_METRIC_NAMES, detections_to_coco, evaluate_coco, format_metrics

__all__ = ["COCO_METRIC_NAMES", "detections_to_coco", "evaluate_coco", "format_metrics"]
