import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pointdet.data.coco import CocoDataset
from pointdet.data.images import ImageReadError, image_size, read_image
from pointdet.errors import DatasetError


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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_orientation_after_the_pixels(path, image: Image.Image, orientation: int, chunk: str) -> None:
    """``image`` as a PNG whose EXIF orientation sits after the pixel data (an ``eXIf`` chunk, or a ``tEXt``
    "Raw profile type exif" as ImageMagick writes it), just before ``IEND``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    tiff = exif.tobytes().removeprefix(b"Exif\x00\x00")
    if chunk == "eXIf":
        extra = _png_chunk(b"eXIf", tiff)
    else:
        text = f"\nexif\n{len(tiff):8}\n{tiff.hex()}\n".encode()
        extra = _png_chunk(b"tEXt", b"Raw profile type exif\0" + text)
    end = data.rindex(b"IEND") - 4
    built = data[:end] + extra + data[end:]
    assert built.index(b"IDAT") < built.index(extra)
    path.write_bytes(built)


@pytest.mark.parametrize("chunk", ["eXIf", "tEXt"])
def test_png_orientation_after_the_pixels_is_read_where_the_decoder_reads_it(tmp_path, chunk):
    image = Image.new("RGB", (6, 3), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    path = tmp_path / "late.png"
    _png_with_orientation_after_the_pixels(path, image, 6, chunk)
    assert Image.open(path).info.get("exif") is None  # nothing before the pixels says so
    decoded = read_image(path)
    assert decoded.shape == (3, 6, 3) and decoded[:, 0, 2].float().mean() > 200  # turned on decoding
    assert image_size(path) == (6, 3) == tuple(decoded.shape[1:])  # and the size check agrees


def test_a_record_of_a_png_turned_after_its_pixels_must_give_the_turned_size(tmp_path):
    """The annotation of an image shown upright (3 x 6) fits; one of the stored pixels (6 x 3) would put every box
    beside its object, and is refused."""
    image = Image.new("RGB", (6, 3), (0, 0, 0))
    _png_with_orientation_after_the_pixels(tmp_path / "late.png", image, 6, "eXIf")
    record = {"id": 1, "file_name": "late.png", "width": 3, "height": 6}
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 4], "area": 8, "iscrowd": 0}
    document = {"images": [record], "annotations": [annotation], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "upright.json").write_text(json.dumps(document))
    assert CocoDataset(tmp_path / "upright.json", tmp_path).records[0].height == 6
    record.update(width=6, height=3)
    (tmp_path / "stored.json").write_text(json.dumps(document))
    with pytest.raises(DatasetError, match=r"the file is 3x6 \(width x height, after its EXIF orientation\)"):
        CocoDataset(tmp_path / "stored.json", tmp_path)
