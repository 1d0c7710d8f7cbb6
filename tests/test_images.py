import io

import numpy as np
import pytest
import torch
from PIL import Image

from pointdet.data.images import ImageReadError, read_image


def _save(tmp_path, image: Image.Image, name: str, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_grayscale_rgba_palette_cmyk_become_rgb(tmp_path):
    gray = _save(tmp_path, Image.new("L", (5, 4), 100), "gray.png")
    rgba = _save(tmp_path, Image.new("RGBA", (5, 4), (10, 20, 30, 255)), "rgba.png")
    palette = _save(
        tmp_path, Image.new("RGB", (5, 4), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE), "palette.png"
    )
    cmyk = _save(tmp_path, Image.new("CMYK", (5, 4), (0, 255, 255, 0)), "cmyk.jpg")
    assert read_image(gray)[:, 0, 0].tolist() == [100, 100, 100]
    assert read_image(rgba)[:, 0, 0].tolist() == [10, 20, 30]
    assert read_image(palette)[:, 0, 0].tolist() == [200, 0, 0]
    red = read_image(cmyk)[:, 0, 0]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    for path in (gray, rgba, palette, cmyk):
        image = read_image(path)
        assert image.shape == (3, 4, 5) and image.dtype == torch.uint8


def test_16_bit_is_rescaled_not_clipped(tmp_path):
    array = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(array), "deep.png")
    assert read_image(path)[0, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 3), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(tmp_path, image, "rotated.jpg", exif=exif.tobytes(), quality=100)
    decoded = read_image(path)
    assert decoded.shape == (3, 6, 3)  # width and height swapped
    assert decoded[:, 0, 2].float().mean() > 200  # the white top-left corner moved to the top-right


def test_corrupt_and_missing_files_name_themselves(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[:200])
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    for path in (truncated, not_an_image, tmp_path / "missing.jpg"):
        with pytest.raises(ImageReadError, match=path.name):
            read_image(path)
