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
        if header.format == "PNG" and _png_metadata_after_pixels(path):
            header = header._replace(orientation=_decoded_orientation(path))
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
    """The EXIF orientation (1 = upright) of the metadata read when the file was opened (the whole header of a
    JPEG; what precedes the pixel data of a PNG), without decoding the pixels."""
    # A PNG's own getexif() decodes the pixels first, to reach chunks after them (``_png_metadata_after_pixels``);
    # the base method reads the same sources (eXIf, a "Raw profile type exif" text, XMP) from what is already read.
    exif = Image.Image.getexif(image) if image.format == "PNG" else image.getexif()
    return int(exif.get(_EXIF_ORIENTATION, 1) or 1)


def _decoded_orientation(path: str | Path) -> int:
    """The EXIF orientation as ``read_image`` applies it: after decoding, as ``ImageOps.exif_transpose`` reads it."""
    with Image.open(path) as image:
        image.load()
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_PNG_ORIENTATION_TEXTS = (b"Raw profile type exif", b"XML:com.adobe.xmp")  # texts PIL reads an orientation from
_PNG_KEYWORD_BYTES = 80  # a PNG text keyword is 1-79 bytes and a NUL


def _png_metadata_after_pixels(path: str | Path) -> bool:
    """Whether a PNG places an ``eXIf`` chunk, or a text chunk PIL reads an orientation from, after its first
    ``IDAT``: PIL reads those only when it decodes the pixels, and then turns the image by them. Reads the chunk
    headers only (and the keywords of text chunks after the pixels)."""
    with open(path, "rb") as file:
        if file.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
            return False
        after_pixels = False
        while len(header := file.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            skip = length + 4  # the data and its CRC
            if kind == b"IEND":
                return False
            if kind == b"IDAT":
                after_pixels = True
            elif after_pixels and kind == b"eXIf":
                return True
            elif after_pixels and kind in _PNG_TEXT_CHUNKS:
                keyword = file.read(min(length, _PNG_KEYWORD_BYTES))
                if keyword.split(b"\0", 1)[0] in _PNG_ORIENTATION_TEXTS:
                    return True
                skip -= len(keyword)
            file.seek(skip, 1)
    return False


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):  # its message repeats the path
        return "not an image file PIL can read"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def pil_to_tensor_rgb(image: Image.Image) -> Tensor:
    """A PIL image (any mode, EXIF applied) as a (3, H, W) uint8 tensor."""
    rgb = to_rgb(ImageOps.exif_transpose(image))
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()
