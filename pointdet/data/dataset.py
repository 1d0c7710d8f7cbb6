"""Torch datasets over a ``CocoDataset``: decoding, seeded augmentation, collation and samplers."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from pointdet.data.coco import CocoDataset, DatasetError
from pointdet.data.images import ImageReadError, image_size, read_image
from pointdet.data.kitti import KittiDataset
from pointdet.data.transforms import Sample, Transform
from pointdet.distributed import world
from pointdet.structures import Instances

logger = logging.getLogger(__name__)


class TransformedDataset(Dataset):
    """Decode record ``index`` of a ``CocoDataset`` or ``KittiDataset`` and run ``transform`` on it.

    Keys are either an index or ``(index, seed)``; with a seed, every random choice of the transform is drawn
    from a generator seeded by it, so augmentation depends only on the key — not on the worker that ran
    it or on what ran before — which makes resumed and distributed runs reproducible.

    An image that fails to decode (its header was fine when the data set was opened: e.g. a JPEG cut off
    mid-file) does not end the run: it is logged with the file and the reason, counted in ``decode_failures``
    (shared with the loader's worker processes) and skipped. A training key (with a seed) takes the next record
    whose image decodes, with the same seed, so the replacement is the same in a resumed run; an evaluation key
    keeps its record with a black image (no detections: its objects count as missed).
    """

    def __init__(self, coco: CocoDataset | KittiDataset, transform: Transform) -> None:
        self.coco, self.transform = coco, transform
        self.decode_failures = multiprocessing.Value("i", 0)  # inherited by forked or spawned loader workers

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, index = self._decode(index, replace=seed is not None)
        record = self.coco.records[index]
        height, width = image.shape[-2:]
        sample = Sample(image, self.coco.instances(index, height, width), record.image_id, (height, width))
        return transform_seeded(self.transform, sample, seed)

    def _decode(self, index: int, replace: bool, read: Callable[[Path], Any] = read_image) -> tuple[Any, int]:
        """``read`` (by default: decode) the image of record ``index``; returns it and the index it belongs to
        (another one when ``replace`` skips it)."""
        records = self.coco.records
        for attempt in range(len(records)):
            candidate = (index + attempt) % len(records)
            try:
                return read(records[candidate].path), candidate
            except ImageReadError as error:
                with self.decode_failures.get_lock():
                    self.decode_failures.value += 1
                    count = self.decode_failures.value
                logger.warning("%s: skipped (%d image decode failure(s) so far)", error, count)
                if not replace:
                    return torch.zeros(3, *_recorded_size(records[candidate]), dtype=torch.uint8), candidate
        raise DatasetError(f"{self.coco.annotation_file}: not one image of the data set can be decoded")


def transform_seeded(transform: Transform, sample: Sample, seed: int | None) -> Sample:
    """``transform(sample)``, with every random choice drawn from a generator seeded by ``seed`` (if not None)."""
    if seed is None:
        return transform(sample)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(sample)


def _recorded_size(record) -> tuple[int, int]:
    """``(height, width)`` of a record whose image does not decode: its annotation, else its file's header."""
    if getattr(record, "height", None) and getattr(record, "width", None):
        return record.height, record.width
    try:
        return image_size(record.path)
    except ImageReadError:
        return 1, 1


@dataclass(frozen=True)
class Batch:
    """A collated batch.

    Attributes:
        images: (B, 3, H, W) uint8, all padded to the same size (on the device of the samples' images).
        instances: B ground truths in the pixel frame of ``images``.
        image_ids: B dataset image ids.
        scales: (B,) factors from original to ``images`` pixels.
        orig_sizes: B ``(height, width)`` of the original files.
    """

    images: Tensor
    instances: list[Instances]
    image_ids: list[int]
    scales: Tensor
    orig_sizes: list[tuple[int, int]]


def collate(samples: Sequence[Sample]) -> Batch:
    height = max(s.image.shape[-2] for s in samples)
    width = max(s.image.shape[-1] for s in samples)
    images = torch.zeros(len(samples), 3, height, width, dtype=torch.uint8, device=samples[0].image.device)
    for i, sample in enumerate(samples):
        images[i, :, : sample.image.shape[-2], : sample.image.shape[-1]] = sample.image
    return Batch(
        images=images,
        instances=[s.instances for s in samples],
        image_ids=[s.image_id for s in samples],
        scales=torch.tensor([s.scale for s in samples], dtype=torch.float32),
        orig_sizes=[s.orig_size for s in samples],
    )


class SeededShuffleSampler(Sampler):
    """Epoch-wise shuffled, rank-sharded keys ``(index, seed)`` that can start mid-epoch.

    The permutation depends only on ``(seed, epoch)``; each rank takes every ``world_size``-th element of it
    (the tail is dropped so ranks see equal counts). ``set_epoch(epoch, skip=n)`` skips the first ``n`` keys
    of this rank, which is how a resumed run continues with the exact data order it stopped in.
    """

    def __init__(self, size: int, seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        default_rank, default_world = world()
        self.size, self.seed = size, seed
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        self.per_rank = size // self.world_size
        if self.per_rank == 0:
            raise ValueError(f"dataset of {size} images cannot be split over {self.world_size} processes")
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[: self.per_rank * self.world_size]
        mine = order[self.rank :: self.world_size].tolist()
        for position in range(self.skip, self.per_rank):
            sample_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + position * self.world_size + self.rank
            yield mine[position], sample_seed % (2**63)


class ShardSampler(Sampler):
    """Evaluation keys of this rank: every ``world_size``-th index, no padding, no duplicates."""

    def __init__(self, size: int) -> None:
        self.rank, self.world_size = world()
        self.indices = list(range(self.rank, size, self.world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
