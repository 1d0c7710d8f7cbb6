"""Training batches decoded and augmented on the training device (``data.decode_on_device``).

The loader workers only read: a JPEG's file bytes and header (size, EXIF orientation); other formats (PNG, ...)
are decoded there by PIL as usual. In the training process, ``DeviceDecode`` decodes the JPEGs of a batch in
one ``torchvision.io.decode_jpeg(..., device=...)`` call (nvJPEG on CUDA), turns them upright, and runs the same
seeded training transform on the device tensors. On the CPU this is the normal pipeline moved to the main
process: the batches equal the normal loader's (tested).

A JPEG that is cut off after its header fails in the decode call (its batch's error names the files) instead of
being skipped as the normal loader skips it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_jpeg

from pointdet.data.dataset import Batch, TransformedDataset, collate, transform_seeded
from pointdet.data.images import ImageReadError, apply_orientation, image_header, read_image
from pointdet.data.transforms import Sample, Transform
from pointdet.structures import Instances


@dataclass(frozen=True)
class EncodedImage:
    """An image as a loader worker hands it over.

    Attributes:
        data: (L,) uint8 JPEG file bytes, or the (3, H, W) uint8 decoded image of any other format.
        jpeg: which of the two ``data`` is.
        orientation: EXIF orientation of a JPEG (1 = upright), applied after decoding.
        height, width: size once upright.
    """

    data: Tensor
    jpeg: bool
    orientation: int
    height: int
    width: int


def read_encoded(path: Path) -> EncodedImage:
    """A JPEG's bytes and header, or any other image decoded (``read_image``).

    Raises:
        ImageReadError: the file is missing or not an image (the header of a JPEG is checked, not its pixels).
    """
    header = image_header(path)
    if header.format != "JPEG":
        image = read_image(path)
        return EncodedImage(image, False, 1, *image.shape[-2:])
    try:  # plain memory (torchvision's read_file maps the file: its storage cannot be sent by a loader worker)
        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read file ({error})") from error
    return EncodedImage(data, True, header.orientation, *header.oriented_size())


@dataclass(frozen=True)
class EncodedSample:
    """A training key's image before decoding, its ground truth (in upright pixels) and its augmentation seed."""

    image: EncodedImage
    instances: Instances
    image_id: int
    seed: int | None


class EncodedDataset(TransformedDataset):
    """``TransformedDataset`` stopped before decoding: keys -> ``EncodedSample`` (its ``transform`` is run by
    ``DeviceDecode``). Records whose file cannot be read are skipped as there (a training key takes the next
    readable record)."""

    def __getitem__(self, key: int | tuple[int, int]) -> EncodedSample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        encoded, index = self._decode(index, replace=seed is not None, read=read_encoded)
        instances = self.coco.instances(index, encoded.height, encoded.width)
        return EncodedSample(encoded, instances, self.coco.records[index].image_id, seed)


def _decode_jpegs(data: list[Tensor], device: torch.device) -> list[Tensor]:
    """(3, H, W) uint8 RGB images on ``device`` of JPEG bytes, as stored (no EXIF orientation), in one call."""
    if not data:
        return []
    with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec; decode_jpeg is still the one
        warnings.simplefilter("ignore", DeprecationWarning)  # that decodes a batch with nvJPEG
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


class DeviceDecode:
    """A list of ``EncodedSample`` -> the collated training ``Batch`` on ``device``: JPEGs decoded on it, then
    ``transform`` with each sample's seed (images on the device, ground truth on the CPU)."""

    def __init__(self, transform: Transform, device: torch.device | str) -> None:
        self.transform, self.device = transform, torch.device(device)

    def __call__(self, encoded: list[EncodedSample]) -> Batch:
        decoded = iter(_decode_jpegs([s.image.data for s in encoded if s.image.jpeg], self.device))
        samples = []
        for item in encoded:
            image = item.image
            pixels = apply_orientation(next(decoded), image.orientation) if image.jpeg else image.data.to(self.device)
            sample = Sample(pixels, item.instances, item.image_id, (image.height, image.width))
            samples.append(transform_seeded(self.transform, sample, item.seed))
        return collate(samples)


class DeviceDecodedLoader:
    """A ``DataLoader`` of encoded samples that yields ``DeviceDecode``'s batches; ``len`` and ``batch_size`` as
    the loader's."""

    def __init__(self, loader: DataLoader, decode: DeviceDecode) -> None:
        self.loader, self.decode = loader, decode
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for encoded in self.loader:
            yield self.decode(encoded)


def as_list(samples: list[EncodedSample]) -> list[EncodedSample]:
    """The loader's collate function: the samples as they are (decoding happens in ``DeviceDecode``)."""
    return list(samples)
