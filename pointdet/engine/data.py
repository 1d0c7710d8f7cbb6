"""From a ``DataConfig`` to datasets and loaders (the shapes dataset when no files are given)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from pointdet.configs.schema import DataConfig, ExperimentConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import SeededShuffleSampler, ShardSampler, TransformedDataset, collate
from pointdet.data.shapes import generate_shapes
from pointdet.data.transforms import eval_transforms, train_transforms


@dataclass(frozen=True)
class DataPaths:
    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path


def resolve_data_paths(config: DataConfig) -> DataPaths:
    """The configured COCO files, or the generated shapes dataset when ``train_json`` is unset.

    Without ``val_json`` the training set is also used for validation (said in the log by the trainer).
    """
    if config.train_json is None:
        shapes = generate_shapes(None, config.shapes_train, config.shapes_val, config.shapes_image_size)
        return DataPaths(shapes.train_json, shapes.train_images, shapes.val_json, shapes.val_images)
    if config.train_images is None:
        raise ValueError(
            "data.train_json is set but data.train_images is not: give the folder its file_names are relative to"
        )
    train_json, train_images = Path(config.train_json), Path(config.train_images)
    val_json = Path(config.val_json) if config.val_json else train_json
    val_images = (
        Path(config.val_images) if config.val_images else (train_images if config.val_json is None else val_json.parent)
    )
    return DataPaths(train_json, train_images, val_json, val_images)


def train_loader(coco: CocoDataset, config: ExperimentConfig) -> tuple[DataLoader, SeededShuffleSampler]:
    data = config.data
    dataset = TransformedDataset(
        coco,
        train_transforms(data.input_size, data.scales, data.flip, data.color_jitter, coco.flip_pairs, data.lighting),
    )
    sampler = SeededShuffleSampler(len(dataset), seed=config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=data.num_workers,
        collate_fn=collate,
        persistent_workers=False,
        pin_memory=False,
    )
    return loader, sampler


def eval_loader(coco: CocoDataset, input_size: int, batch_size: int, num_workers: int) -> DataLoader:
    """Loader over this process's shard of ``coco``, letterboxed to ``input_size``."""
    dataset = TransformedDataset(coco, eval_transforms(input_size))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset)), num_workers=num_workers, collate_fn=collate
    )
