"""Robust image reading: EXIF orientation, odd modes (grayscale, palette, RGBA, CMYK, 16-bit) -> RGB uint8, and
a cheap header check (``image_size``) for the files of a data set before a run starts."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from pointdet.errors import PointdetError

# What PIL raises for files that are not images, are cut short, or decode into more pixels than PIL allows
# (``Image.MAX_IMAGE_PIXELS``: a "decompression bomb").
_UNREADABLE = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotations by 90 degrees: width and height swap


class ImageReadError(PointdetError, RuntimeError):
    """An image file could not be read; the message names the file."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB. 16/32-bit grayscale is rescaled from its full range, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = (array - array.min()) / max(array.max() - array.min(), 1e-12)
        image = Image.fromarray((array * 255 + 0.5).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def read_image(path: str | Path) -> Tensor:
    """Read an image file as a (3, H, W) uint8 RGB tensor with its EXIF orientation applied.

    Raises:
        ImageReadError: the file is missing, truncated or not an image; the message names the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_tensor_rgb(image)
    except FileNotFoundError as error:
        raise ImageReadError(f"{path}: image file not found") from error
    except _UNREADABLE as error:
        raise ImageReadError(f"{path}: cannot decode image ({_reason(error)})") from error


class ImageHeader(NamedTuple):
    """What ``image_header`` reads: the stored size, the EXIF orientation (1 = upright) and the PIL format name."""

    height: int
    width: int
    orientation: int
    format: str

    def oriented_size(self) -> tuple[int, int]:
        """``(height, width)`` once the EXIF orientation is applied (as ``read_image`` returns the image)."""
        transposed = self.orientation in _TRANSPOSING_ORIENTATIONS
        return (self.width, self.height) if transposed else (self.height, self.width)


def image_header(path: str | Path) -> ImageHeader:
    """The header of an image file, read without decoding the pixels. PNG files are also verified (chunk
    checksums up to the end: a cut-off file fails here); a JPEG cut off after its header is only found when it is
    decoded.

    Raises:
        ImageReadError: the file is missing, empty, not an image, a decompression bomb or (PNG) cut off.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            header = ImageHeader(height, width, _orientation(image), image.format or "")
            image.verify()
    except FileNotFoundError as error:
        raise ImageReadError(f"{path}: image file not found") from error
    except _UNREADABLE as error:
        raise ImageReadError(f"{path}: cannot read image header ({_reason(error)})") from error
    return header


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file as ``read_image`` returns it (EXIF orientation applied), from its
    header (``image_header``)."""
    return image_header(path).oriented_size()


def apply_orientation(image: Tensor, orientation: int) -> Tensor:
    """A (C, H, W) image decoded as stored, turned upright by its EXIF ``orientation`` (1-8) as PIL's
    ``ImageOps.exif_transpose`` does; on any device."""
    if orientation in (2, 4):  # mirrored left-right / top-bottom
        return image.flip(-1 if orientation == 2 else -2)
    if orientation == 3:  # rotated 180
        return image.flip(-2, -1)
    if orientation in (5, 7):  # transposed about the main / the anti diagonal
        transposed = image.transpose(-2, -1)
        return transposed if orientation == 5 else transposed.flip(-2, -1)
    if orientation in (6, 8):  # rotated 90 degrees clockwise / counter-clockwise
        return torch.rot90(image, -1 if orientation == 6 else 1, dims=(-2, -1))
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) without decoding the pixels."""
    if image.format == "PNG":  # PIL's getexif() decodes a PNG whose eXIf chunk follows the pixel data
        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = image.getexif()
    return int(exif.get(_EXIF_ORIENTATION, 1) or 1)


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):  # its message repeats the path
        return "not an image file PIL can read"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def pil_to_tensor_rgb(image: Image.Image) -> Tensor:
    """A PIL image (any mode, EXIF applied) as a (3, H, W) uint8 tensor."""
    rgb = to_rgb(ImageOps.exif_transpose(image))
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()
