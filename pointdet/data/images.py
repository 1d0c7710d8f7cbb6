"""Robust image reading: EXIF orientation, odd modes (grayscale, palette, RGBA, CMYK, 16-bit) -> RGB uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor


class ImageReadError(RuntimeError):
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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error


def pil_to_tensor_rgb(image: Image.Image) -> Tensor:
    """A PIL image (any mode, EXIF applied) as a (3, H, W) uint8 tensor."""
    rgb = to_rgb(ImageOps.exif_transpose(image))
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()
