"""From a ``DataConfig`` to datasets and loaders (generated data when no files are given).

Every dataset type offers what the engine uses: ``records`` (with ``path`` and ``image_id``),
``instances(index, height, width)``, ``class_names``, ``category_ids``, ``keypoint_names``, ``flip_pairs``,
``skeleton`` and ``annotation_file``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pointdet.configs.schema import DataConfig, ExperimentConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import SeededShuffleSampler, ShardSampler, TransformedDataset, collate
from pointdet.data.device_decode import DeviceDecode, DeviceDecodedLoader, EncodedDataset, as_list
from pointdet.data.kitti import KittiDataset
from pointdet.data.raccoon import raccoon_files
from pointdet.data.shapes import generate_shapes
from pointdet.data.synthetic3d import generate_kitti_scenes
from pointdet.data.transforms import (
    Transform,
    eval_transforms,
    keep_ratio_eval_transforms,
    keep_ratio_train_transforms,
    original_size_transforms,
    train_transforms,
)
from pointdet.errors import ConfigError


@dataclass(frozen=True)
class DataPaths:
    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path


def resolve_data_paths(config: DataConfig) -> DataPaths:
    """The configured COCO files, or when ``train_json`` is unset the dataset of ``config.dataset``: the shipped
    raccoon photos (train / test split) or the generated shapes.

    An explicit ``val_json`` always wins (also over the generated shapes' val split); its images are
    ``val_images`` or the JSON's folder. Without ``val_json`` a COCO training set is also used for validation
    (said in the log by the trainer).
    """
    explicit_val = _explicit_val_paths(config)
    if config.train_json is None and config.dataset == "raccoon":
        files = raccoon_files()
        val_json, val_images = explicit_val or (files.val_json, files.val_images)
        return DataPaths(files.train_json, files.train_images, val_json, val_images)
    if config.train_json is None:
        shapes = generate_shapes(None, config.shapes_train, config.shapes_val, config.shapes_image_size)
        val_json, val_images = explicit_val or (shapes.val_json, shapes.val_images)
        return DataPaths(shapes.train_json, shapes.train_images, val_json, val_images)
    if config.train_images is None:
        raise ConfigError(
            "data.train_json is set but data.train_images is not: give the folder its file_names are relative to"
        )
    train_json, train_images = Path(config.train_json), Path(config.train_images)
    val_json, val_images = explicit_val or (train_json, Path(config.val_images or train_images))
    return DataPaths(train_json, train_images, val_json, val_images)


def _explicit_val_paths(config: DataConfig) -> tuple[Path, Path] | None:
    """``(val_json, its images)`` when ``data.val_json`` is given, else None."""
    if config.val_json is None:
        return None
    val_json = Path(config.val_json)
    return val_json, Path(config.val_images) if config.val_images else val_json.parent


Dataset = CocoDataset | KittiDataset


def _kitti_root(config: DataConfig) -> str | Path:
    """``data.kitti_root``, or the generated synthetic scenes when it is unset."""
    if config.kitti_root is not None:
        return config.kitti_root
    return generate_kitti_scenes(None, config.synthetic_train, config.synthetic_val).root


def load_datasets(config: DataConfig, with_masks: bool = False, with_polygons: bool = False) -> tuple[Dataset, Dataset]:
    """The training and validation datasets of ``config`` (COCO ones with instance masks if ``with_masks``, with
    polygons if ``with_polygons``)."""
    if config.format == "kitti":
        root = _kitti_root(config)
        return KittiDataset(root, config.train_split, config.classes), KittiDataset(
            root, config.val_split, config.classes
        )
    paths = resolve_data_paths(config)
    skip = config.skip_bad_images
    return (
        CocoDataset(paths.train_json, paths.train_images, with_masks, with_polygons, skip_bad_images=skip),
        CocoDataset(paths.val_json, paths.val_images, with_masks, with_polygons, skip_bad_images=skip),
    )


def load_val_dataset(config: DataConfig, with_masks: bool = False, with_polygons: bool = False) -> Dataset:
    """The validation dataset alone (``pointdet eval``)."""
    if config.format == "kitti":
        return KittiDataset(_kitti_root(config), config.val_split, config.classes)
    explicit = _explicit_val_paths(config)  # no shapes are generated just to be ignored
    if explicit is None:
        paths = resolve_data_paths(config)
        explicit = paths.val_json, paths.val_images
    return CocoDataset(*explicit, with_masks, with_polygons, skip_bad_images=config.skip_bad_images)


def select_train_transforms(data: DataConfig, flip_pairs: list[tuple[int, int]], task: str = "detection") -> Transform:
    """The training pipeline of ``data.resize``: ``crop`` (CenterNet's random scale + square crop) or
    ``keep_ratio`` (mmdetection's keep-ratio resize, multi-scale with two ``min_size`` values). Monocular 3D
    uses no augmentation (METHODS.md §2c(b)): it trains at the test geometry."""
    if task == "mono3d":
        return select_eval_transforms(data)
    if data.resize == "keep_ratio":
        return keep_ratio_train_transforms(
            data.min_size, data.max_size, data.flip, data.color_jitter, flip_pairs, data.lighting
        )
    return train_transforms(data.input_size, data.scales, data.flip, data.color_jitter, flip_pairs, data.lighting)


def select_eval_transforms(data: DataConfig) -> Transform:
    """The test pipeline of ``data.test_resize``: ``letterbox`` (into ``input_height x input_size``), ``keep_ratio``
    (shorter side ``test_min_size``, longer side at most ``max_size``) or ``original`` (no resize, scale 1)."""
    if data.test_resize == "keep_ratio":
        return keep_ratio_eval_transforms(data.test_min_size, data.max_size)
    if data.test_resize == "original":
        return original_size_transforms()
    return eval_transforms(data.input_size, data.input_height)


def _ignore_interrupts(worker_id: int) -> None:
    """Loader processes leave Ctrl-C to the training process, which finishes its step before stopping (a worker
    that died of the terminal's SIGINT would end the run with "DataLoader worker exited unexpectedly")."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_loader(
    dataset: Dataset, config: ExperimentConfig, device: torch.device | str = "cpu"
) -> tuple[DataLoader | DeviceDecodedLoader, SeededShuffleSampler]:
    """Shuffled, augmented batches, transformed as ``select_train_transforms`` picks. With
    ``data.decode_on_device`` the workers only read the files, and JPEG decoding and the transform run on
    ``device`` in this process (``data.device_decode``); the batches' images are then on ``device``."""
    data = config.data
    transform = select_train_transforms(data, dataset.flip_pairs, config.model.task)
    wrapped = (EncodedDataset if data.decode_on_device else TransformedDataset)(dataset, transform)
    sampler = SeededShuffleSampler(len(wrapped), seed=config.seed)
    loader = DataLoader(
        wrapped,
        batch_size=config.optim.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=data.num_workers,
        collate_fn=as_list if data.decode_on_device else collate,
        worker_init_fn=_ignore_interrupts,
        persistent_workers=False,
        pin_memory=False,
    )
    if data.decode_on_device:
        return DeviceDecodedLoader(loader, DeviceDecode(transform, device)), sampler
    return loader, sampler


def eval_loader(dataset: Dataset, data: DataConfig, batch_size: int, num_workers: int) -> DataLoader:
    """Loader over this process's shard of ``dataset``, resized as ``select_eval_transforms(data)`` picks."""
    dataset = TransformedDataset(dataset, select_eval_transforms(data))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset)), num_workers=num_workers, collate_fn=collate
    )
