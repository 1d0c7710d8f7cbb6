"""Evaluate a detector on a COCO dataset (boxes, and keypoints for pose models), sharded over processes and
gathered on every rank."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pointdet.data.coco import CocoDataset
from pointdet.distributed import broadcast_object, gather_objects, is_main_process
from pointdet.engine.inference import predict_images, to_original_pixels
from pointdet.evaluation import KEYPOINT_PREFIX, detections_to_coco, evaluate_coco, keypoints_to_coco
from pointdet.evaluation import keypoint_sigmas as keypoint_sigmas_for
from pointdet.structures import Detections


@torch.no_grad()
def run_inference(
    model: torch.nn.Module, loader: DataLoader, flip: bool, scales: Sequence[float], k: int, progress: bool = True
) -> tuple[list[Detections], list[int]]:
    """Detections (original pixels, on CPU) and image ids of this process's shard."""
    was_training = model.training
    model.eval()
    detections, image_ids = [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and is_main_process())):
        predictions = predict_images(model, batch.images, flip=flip, scales=scales, k=k)
        detections += [
            d.to("cpu")
            for d in to_original_pixels(predictions, batch.scales.to(predictions[0].boxes.device), batch.orig_sizes)
        ]
        image_ids += batch.image_ids
    model.train(was_training)
    return detections, image_ids


def evaluate_detector(
    model: torch.nn.Module,
    loader: DataLoader,
    coco: CocoDataset,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    k: int = 100,
    backend: str = "pycocotools",
    results_file: str | Path | None = None,
    keypoint_sigmas: Sequence[float] = (),
) -> dict[str, float]:
    """COCO box metrics of ``model`` on ``coco`` — plus keypoint (OKS) metrics, prefixed ``kp_``, when the model
    predicts keypoints; every process gets the same numbers.

    Args:
        results_file: also write the COCO results JSON here (main process); keypoint results go beside it
            with ``_keypoints`` added to the name.
        keypoint_sigmas: OKS sigmas (default: COCO's for 17 joints, else 0.05 each).
    """
    detections, image_ids = run_inference(model, loader, flip, scales, k)
    with_keypoints = bool(detections) and detections[0].keypoints is not None
    shards = gather_objects(
        (
            detections_to_coco(detections, image_ids, coco.category_ids),
            keypoints_to_coco(detections, image_ids, coco.category_ids) if with_keypoints else [],
        )
    )
    metrics = None
    if is_main_process():
        boxes = [record for shard in shards for record in shard[0]]
        keypoints = [record for shard in shards for record in shard[1]]
        image_ids = [r.image_id for r in coco.records]
        if results_file is not None:
            Path(results_file).write_text(json.dumps(boxes))
        metrics = evaluate_coco(coco.annotation_file, boxes, image_ids, backend=backend)
        if keypoints:
            if results_file is not None:
                path = Path(results_file)
                path.with_name(f"{path.stem}_keypoints{path.suffix}").write_text(json.dumps(keypoints))
            sigmas = keypoint_sigmas_for(len(coco.keypoint_names), keypoint_sigmas)
            oks = evaluate_coco(coco.annotation_file, keypoints, image_ids, backend, "keypoints", sigmas)
            metrics.update({KEYPOINT_PREFIX + name: value for name, value in oks.items()})
    return broadcast_object(metrics)


def primary_metric(metrics: dict[str, float]) -> str:
    """The number a run keeps its best checkpoint by: keypoint AP for pose, box AP otherwise."""
    return KEYPOINT_PREFIX + "AP" if KEYPOINT_PREFIX + "AP" in metrics else "AP"
