"""Evaluate a detector on a COCO dataset, sharded over processes and gathered on every rank."""

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
from pointdet.evaluation import detections_to_coco, evaluate_coco
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
) -> dict[str, float]:
    """COCO box metrics of ``model`` on ``coco``; every process gets the same numbers.

    Args:
        results_file: also write the COCO results JSON here (main process).
    """
    detections, image_ids = run_inference(model, loader, flip, scales, k)
    shards = gather_objects(detections_to_coco(detections, image_ids, coco.category_ids))
    metrics = None
    if is_main_process():
        results = [record for shard in shards for record in shard]
        if results_file is not None:
            Path(results_file).write_text(json.dumps(results))
        metrics = evaluate_coco(coco.annotation_file, results, [r.image_id for r in coco.records], backend=backend)
    return broadcast_object(metrics)
