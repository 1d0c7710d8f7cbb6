"""``data.decode_on_device``: file bytes in the workers, JPEG decode + augmentation in the training process. On the
CPU its batches equal the default loader's, for JPEGs (any EXIF orientation) and PNGs alike."""

import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from pointdet.configs import DataConfig, get_preset
from pointdet.data.coco import CocoDataset
from pointdet.data.device_decode import DeviceDecodedLoader, read_encoded
from pointdet.data.images import apply_orientation, read_image
from pointdet.engine.data import train_loader


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_turns_the_stored_pixels_upright_as_pil_does(tmp_path, orientation):
    stored = torch.randint(0, 256, (3, 12, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"  # lossless, so the pixels compare exactly
    Image.fromarray(stored.permute(1, 2, 0).numpy()).save(path, exif=exif.tobytes())
    assert torch.equal(apply_orientation(stored, orientation), read_image(path))


def mixed_dataset(shapes, folder):
    """The tiny shapes training set with every other image re-saved as a JPEG (EXIF orientations 1, 6, 3, 8, ...:
    the boxes are moved by ``read_image``'s upright size only, which is all the comparison needs)."""
    document = json.loads(shapes.train_json.read_text())
    folder.mkdir()
    for i, image in enumerate(document["images"]):
        pixels = Image.open(shapes.train_images / image["file_name"]).convert("RGB")
        if i % 2:
            pixels.save(folder / image["file_name"])
            continue
        exif = Image.Exif()
        exif[0x0112] = (1, 6, 3, 8)[(i // 2) % 4]
        image["file_name"] = image["file_name"].replace(".png", ".jpg")
        pixels.save(folder / image["file_name"], quality=90, exif=exif.tobytes())
        if exif[0x0112] in (6, 8):
            image["width"], image["height"] = image["height"], image["width"]
    annotation_file = folder / "train.json"
    annotation_file.write_text(json.dumps(document))
    return CocoDataset(annotation_file, folder)


def test_decode_on_device_gives_the_default_loaders_batches_on_the_cpu(tiny_shapes, tmp_path):
    dataset = mixed_dataset(tiny_shapes, tmp_path / "mixed")
    assert {read_encoded(r.path).jpeg for r in dataset.records} == {True, False}
    base = get_preset("centernet_r18")
    data = DataConfig(input_size=64, scales=(0.6, 1.0, 1.3), num_workers=0, lighting=0.1, color_jitter=0.4)
    config = replace(base, data=data, optim=replace(base.optim, batch_size=4))
    normal, sampler = train_loader(dataset, config)
    on_device, device_sampler = train_loader(dataset, replace(config, data=replace(data, decode_on_device=True)))
    assert isinstance(on_device, DeviceDecodedLoader) and len(on_device) == len(normal) == 4
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        device_sampler.set_epoch(epoch)
        for expected, got in zip(normal, on_device, strict=True):
            assert torch.equal(got.images, expected.images)
            assert got.image_ids == expected.image_ids and got.orig_sizes == expected.orig_sizes
            for a, b in zip(got.instances, expected.instances, strict=True):
                assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)


def test_decode_on_device_with_loader_workers(tiny_shapes, tmp_path):
    dataset = mixed_dataset(tiny_shapes, tmp_path / "mixed")
    base = get_preset("centernet_r18")
    data = DataConfig(input_size=64, num_workers=2, decode_on_device=True)
    loader, _ = train_loader(dataset, replace(base, data=data, optim=replace(base.optim, batch_size=8)))
    batches = list(loader)
    assert len(batches) == 2 and all(b.images.shape == (8, 3, 64, 64) for b in batches)


@pytest.mark.gpu
def test_decode_on_cuda_matches_the_cpu_decode_closely(tiny_shapes, tmp_path):
    dataset = mixed_dataset(tiny_shapes, tmp_path / "mixed")
    base = get_preset("centernet_r18")
    data = DataConfig(input_size=64, num_workers=0, decode_on_device=True, flip=0, color_jitter=0, lighting=0)
    config = replace(base, data=data, optim=replace(base.optim, batch_size=4))
    on_cpu, _ = train_loader(dataset, config, "cpu")
    on_cuda, _ = train_loader(dataset, config, "cuda")
    for a, b in zip(on_cpu, on_cuda, strict=True):
        assert b.images.is_cuda
        # nvJPEG's IDCT and the CUDA resize kernels round differently from libjpeg-turbo and the CPU ones.
        assert (a.images.float() - b.images.cpu().float()).abs().mean() < 2.0
