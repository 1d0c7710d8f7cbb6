"""Evaluate a detector — COCO boxes (and keypoints for pose models) or KITTI 2D/AOS/BEV/3D — sharded over
processes and gathered on every rank.

A model's classes are matched to a dataset's categories by name (ids and order may differ between files, as in
COCO subsets): a file holding a subset of the model's classes scores those classes only, and a file holding a
category the model does not know is refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_area
from tqdm import tqdm

from pointdet.configs.schema import EvalConfig
from pointdet.data.coco import CocoDataset, DatasetError
from pointdet.data.kitti import KittiDataset, write_label_file
from pointdet.distributed import broadcast_object, gather_objects, is_main_process
from pointdet.engine.inference import predict_images, to_original_pixels
from pointdet.evaluation import (
    KEYPOINT_PREFIX,
    SEGM_PREFIX,
    coco_confusion_matrix,
    detections_to_coco,
    detections_to_kitti,
    evaluate_kitti,
    format_metrics,
    format_per_class,
    keypoints_to_coco,
    masks_to_coco,
    merge_classes,
    per_class_ap,
    per_joint_ap,
    run_coco_evaluation,
)
from pointdet.evaluation import keypoint_sigmas as keypoint_sigmas_for
from pointdet.structures import Detections

CONFUSION_IOU = 0.5


@dataclasses.dataclass
class Evaluation(Mapping):
    """The result of one evaluation; it reads as its ``metrics`` dict (``evaluation["AP"]``).

    Attributes:
        metrics: the benchmark's numbers in [0, 1] (``format_metrics``).
        per_class: ``{"boxes" | "masks" | "keypoints": {class name: {"AP": ..., "AP50": ...}}}`` (COCO), and
            ``"keypoint joints"``: the same per joint (``evaluation.per_joint_ap``).
        box_precision: COCOeval's box ``(T, R, K, A, M)`` precision array (``evaluation.pr_curves``), or None.
        class_names: the K class names of ``box_precision`` and ``confusion``.
        confusion: (K + 1, K + 1) box confusion matrix at IoU 0.5 (``evaluation.confusion``), or None.
        confusion_threshold: the score threshold it was counted at.
        class_agnostic: the box numbers (``COCO_METRIC_NAMES``) with every class merged into one
            (``evaluation.merge_classes``) on a set of several classes, else None: against ``metrics``, it tells
            wrong classes (a large gap) from wrong boxes (both low).
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)
    box_precision: np.ndarray | None = None
    class_names: list[str] = dataclasses.field(default_factory=list)
    confusion: np.ndarray | None = None
    confusion_threshold: float = 0.3
    class_agnostic: dict[str, float] | None = None

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def describe(self) -> str:
        """The metric tables, the class-agnostic box AP line, then the per-class AP / AP50 tables (best and worst ten
        above 20 classes)."""
        titles = {
            "boxes": "box AP per class",
            "masks": "mask AP per class",
            "keypoints": "keypoint AP per class",
            "keypoint joints": "keypoint AP per joint (OKS of that joint alone)",
        }
        tables = [format_per_class(table, titles.get(kind, kind)) for kind, table in self.per_class.items()]
        if self.class_agnostic is not None:
            merged = self.class_agnostic
            tables.insert(
                0,
                f"class-agnostic box AP {100 * merged['AP']:.2f} | AP50 {100 * merged['AP50']:.2f} | "
                f"AP75 {100 * merged['AP75']:.2f} (every class merged: the boxes alone)",
            )
        return "\n\n".join([format_metrics(self.metrics), *tables])


def match_categories(class_names: Sequence[str], dataset: CocoDataset | KittiDataset) -> list[int | None]:
    """For each of the model's ``class_names``, the label of the dataset's category of that name (None: absent).

    Raises:
        DatasetError: the dataset holds a category the model does not know, or names two categories alike;
            the message lists what the model knows and what the file holds.
    """
    model, held = list(class_names), list(dataset.class_names)
    if held == model:
        return list(range(len(model)))
    unknown = [name for name in held if name not in model]
    repeated = sorted({name for name in held if held.count(name) > 1})
    if unknown or repeated:
        problem = f"it holds {unknown} that the model does not know" if unknown else f"it repeats {repeated}"
        raise DatasetError(
            f"{dataset.annotation_file}: its categories do not match the model's ({problem}); the model knows "
            f"{model}, the file holds {held}. Categories are matched by name; evaluate on a file with the "
            "model's categories, or a subset of them."
        )
    return [held.index(name) if name in held else None for name in model]


def describe_subset(class_names: Sequence[str], labels: Sequence[int | None]) -> str | None:
    """A sentence saying which classes are scored when a dataset holds only some of the model's; None if all."""
    absent = [name for name, label in zip(class_names, labels, strict=True) if label is None]
    if not absent:
        return None
    return (
        f"the file holds {len(class_names) - len(absent)} of the model's {len(class_names)} classes: only those "
        f"are scored (detections of {', '.join(absent)} are left out)"
    )


def to_dataset_labels(detections: Sequence[Detections], labels: Sequence[int | None]) -> list[Detections]:
    """``detections`` with the model's labels turned into the dataset's, those of absent classes dropped."""
    if list(labels) == list(range(len(labels))):
        return list(detections)
    lookup = torch.tensor([-1 if label is None else label for label in labels], dtype=torch.int64)
    converted = []
    for dets in detections:
        mapped = lookup[dets.labels.cpu()].to(dets.labels.device)
        keep = mapped >= 0
        converted.append(dataclasses.replace(dets[keep], labels=mapped[keep]))
    return converted


@torch.no_grad()
def run_inference(
    model: torch.nn.Module,
    loader: DataLoader,
    flip: bool,
    scales: Sequence[float],
    k: int,
    progress: bool = True,
    box_ranges: Sequence[tuple[float, float]] = (),
) -> tuple[list[Detections], list[int]]:
    """Detections (original pixels, on CPU) and image ids of this process's shard (``box_ranges``: one valid box-size
    range per scale, ``engine.inference.predict_images``)."""
    was_training = model.training
    model.eval()
    detections, image_ids = [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and is_main_process())):
        predictions = predict_images(model, batch.images, flip=flip, scales=scales, k=k, box_ranges=box_ranges)
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
    labels: Sequence[int | None] | None = None,
    confusion_threshold: float = 0.3,
    min_box_area: float = 0.0,
    box_ranges: Sequence[tuple[float, float]] = (),
) -> Evaluation:
    """COCO box metrics of ``model`` on ``coco`` — plus keypoint (OKS) metrics, prefixed ``kp_``, when the model
    predicts keypoints and mask metrics, prefixed ``segm_``, when it predicts masks — with their per-class tables,
    the box precision array and the box confusion matrix; every process gets the same ``Evaluation``.

    Args:
        results_file: also write the COCO results JSON here (main process); keypoint and mask results go beside
            it with ``_keypoints`` / ``_segm`` added to the name.
        keypoint_sigmas: OKS sigmas (default: COCO's for 17 joints, else 0.05 each).
        labels: the dataset label of each model label (``match_categories``); None: the same classes.
        confusion_threshold: the score a detection needs to count in the confusion matrix.
        min_box_area: detections with a box of at most this area (original pixels) are dropped first.
        box_ranges: empty, or the valid box-size range of each of ``scales`` (``engine.inference.predict_images``).
    """
    detections, image_ids = run_inference(model, loader, flip, scales, k, box_ranges=box_ranges)
    if min_box_area > 0:
        detections = [dets[box_area(dets.boxes) > min_box_area] for dets in detections]
    if labels is not None:
        detections = to_dataset_labels(detections, labels)
    with_keypoints = bool(detections) and detections[0].keypoints is not None
    with_masks = bool(detections) and detections[0].has_masks
    size_of = {r.image_id: (r.height, r.width) for r in coco.records}
    sizes = [size_of[i] for i in image_ids]
    shards = gather_objects(
        (
            detections_to_coco(detections, image_ids, coco.category_ids),
            keypoints_to_coco(detections, image_ids, coco.category_ids) if with_keypoints else [],
            masks_to_coco(detections, image_ids, coco.category_ids, sizes) if with_masks else [],
        )
    )
    evaluation = None
    if is_main_process():
        boxes, keypoints, masks = ([record for shard in shards for record in shard[part]] for part in range(3))
        image_ids = [r.image_id for r in coco.records]
        if results_file is not None:
            Path(results_file).write_text(json.dumps(boxes))
        box = run_coco_evaluation(coco.ground_truth, boxes, image_ids, backend=backend)
        evaluation = Evaluation(
            dict(box.metrics),
            box_precision=box.precision,
            class_names=box.category_names,
            confusion_threshold=confusion_threshold,
        )
        _add_per_class(evaluation, "boxes", box)
        if len(box.category_ids) > 1:
            merged = run_coco_evaluation(*merge_classes(coco.ground_truth, boxes), image_ids, backend=backend)
            evaluation.class_agnostic = merged.metrics
        evaluation.confusion = coco_confusion_matrix(
            box.ground_truth, boxes, image_ids, box.category_ids, CONFUSION_IOU, confusion_threshold
        )
        if keypoints or with_keypoints:  # also without a single detection: every evaluation prints the same tables
            _write_beside(results_file, "keypoints", keypoints)
            sigmas = keypoint_sigmas_for(len(coco.keypoint_names), keypoint_sigmas)
            oks = run_coco_evaluation(coco.ground_truth, keypoints, image_ids, backend, "keypoints", sigmas)
            evaluation.metrics.update({KEYPOINT_PREFIX + name: value for name, value in oks.metrics.items()})
            _add_per_class(evaluation, "keypoints", oks)
            joints = per_joint_ap(coco.ground_truth, keypoints, coco.keypoint_names, sigmas, image_ids, backend)
            evaluation.per_class["keypoint joints"] = joints
        if masks or with_masks:
            _write_beside(results_file, "segm", masks)
            segm = run_coco_evaluation(coco.ground_truth, masks, image_ids, backend, "segm")
            evaluation.metrics.update({SEGM_PREFIX + name: value for name, value in segm.metrics.items()})
            _add_per_class(evaluation, "masks", segm)
    return broadcast_object(evaluation)


def _add_per_class(evaluation: Evaluation, kind: str, result) -> None:
    """The per-class AP / AP50 table of one COCOeval ``result`` (zeros when there were no detections)."""
    evaluation.per_class[kind] = per_class_ap(result.precision, result.category_names)


def _write_beside(results_file: str | Path | None, kind: str, records: list[dict]) -> None:
    """Write ``records`` next to the box results file as ``<stem>_<kind><suffix>`` (nothing without a file)."""
    if results_file is not None:
        path = Path(results_file)
        path.with_name(f"{path.stem}_{kind}{path.suffix}").write_text(json.dumps(records))


def evaluate_kitti_detector(
    model: torch.nn.Module,
    loader: DataLoader,
    dataset: KittiDataset,
    k: int = 100,
    recall_points: int = 11,
    min_overlaps: str = "official",
    score_threshold: float = 0.0,
    results_dir: str | Path | None = None,
    labels: Sequence[int | None] | None = None,
) -> dict[str, float]:
    """KITTI metrics (``Class/metric/difficulty`` in [0, 1]) of a monocular 3D ``model``; optionally writes one
    KITTI result file per image into ``results_dir`` (main process). ``labels`` as in ``evaluate_detector``."""
    detections, image_ids = run_inference(model, loader, flip=False, scales=(1.0,), k=k)
    if labels is not None:
        detections = to_dataset_labels(detections, labels)
    record_of = {record.image_id: record for record in dataset.records}
    results = {}
    for dets, image_id in zip(detections, image_ids, strict=True):
        dets = dets[dets.scores > score_threshold]
        results[image_id] = detections_to_kitti(dets, record_of[image_id].calibration, dataset.class_names)
    shards = gather_objects(results)
    metrics = None
    if is_main_process():
        merged = {image_id: objects for shard in shards for image_id, objects in shard.items()}
        if results_dir is not None:
            Path(results_dir).mkdir(parents=True, exist_ok=True)
            for record in dataset.records:
                write_label_file(Path(results_dir) / f"{record.name}.txt", merged[record.image_id])
        metrics = evaluate_kitti(
            [record.objects for record in dataset.records],
            [merged[record.image_id] for record in dataset.records],
            dataset.class_names,
            recall_points,
            min_overlaps,
        )
    return broadcast_object(metrics)


def evaluate_model(
    model: torch.nn.Module,
    loader: DataLoader,
    dataset: CocoDataset | KittiDataset,
    config: EvalConfig,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    backend: str | None = None,
    results: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> Evaluation:
    """The benchmark of ``dataset`` with the settings of ``config`` (arguments given here take precedence).

    Args:
        scales: replaces ``config.scales``, without ``config.scale_box_ranges`` (the ranges belong to its scales).
        results: COCO results JSON file, or the folder of KITTI result files.
        class_names: the model's classes, matched to the dataset's by name (``match_categories``); None: the
            dataset's own.
    """
    labels = None if class_names is None else match_categories(class_names, dataset)
    if isinstance(dataset, KittiDataset):
        kitti = evaluate_kitti_detector(
            model,
            loader,
            dataset,
            config.topk,
            config.kitti_recall_points,
            config.kitti_overlaps,
            config.score_threshold,
            results,
            labels,
        )
        return Evaluation(kitti)  # KITTI's numbers are per class already
    return evaluate_detector(
        model,
        loader,
        dataset,
        config.flip if flip is None else flip,
        config.scales if scales is None else scales,
        config.topk,
        config.backend if backend is None else backend,
        results,
        keypoint_sigmas=config.keypoint_sigmas,
        labels=labels,
        confusion_threshold=config.confusion_threshold,
        min_box_area=config.min_box_area,
        box_ranges=config.scale_box_ranges if scales is None else (),
    )


def primary_metric(metrics: Mapping[str, float]) -> str:
    """The number a run keeps its best checkpoint by: moderate BEV AP of the first class for KITTI, keypoint AP
    for pose, box AP otherwise."""
    kitti = [key for key in metrics if key.endswith("/bev/moderate")]
    if kitti:
        return kitti[0]
    return KEYPOINT_PREFIX + "AP" if KEYPOINT_PREFIX + "AP" in metrics else "AP"
