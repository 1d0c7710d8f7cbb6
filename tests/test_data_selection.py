"""The DataConfig's choice of training and test geometry (``resize``, ``test_resize``) in ``engine.data``."""

from dataclasses import replace

import torch

from pointdet.configs import DataConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset
from pointdet.data.transforms import eval_transforms, train_transforms
from pointdet.engine.data import eval_loader, select_eval_transforms, select_train_transforms, train_loader

from .helpers import tiny_config


def _step_names(transform):
    return [getattr(step, "__name__", type(step).__name__) for step in transform.transforms]


def _run(transform, dataset, index, seed):
    torch.manual_seed(seed)
    return TransformedDataset(dataset, transform)[index]


def test_default_geometries_are_todays_crop_and_letterbox(tiny_shapes):
    dataset = CocoDataset(tiny_shapes.train_json, tiny_shapes.train_images)
    data = DataConfig(input_size=64)
    chosen = select_train_transforms(data, dataset.flip_pairs)
    today = train_transforms(64, data.scales, data.flip, data.color_jitter, dataset.flip_pairs, data.lighting)
    assert _step_names(chosen) == _step_names(today)
    for seed in range(3):
        ours, theirs = _run(chosen, dataset, seed, seed), _run(today, dataset, seed, seed)
        assert torch.equal(ours.image, theirs.image) and torch.equal(ours.instances.boxes, theirs.instances.boxes)
    letterbox = select_eval_transforms(replace(data, input_height=48))
    assert torch.equal(_run(letterbox, dataset, 0, 0).image, _run(eval_transforms(64, 48), dataset, 0, 0).image)
    assert _step_names(select_train_transforms(data, [], task="mono3d")) == ["Letterbox", "sanitize"]


def test_keep_ratio_and_original_choices(tiny_shapes):
    data = DataConfig(resize="keep_ratio", min_size=(40, 48), max_size=100, color_jitter=0.0, lighting=0.0)
    assert _step_names(select_train_transforms(data, [(3, 1)])) == [
        "KeepRatioResize",
        "RandomHorizontalFlip",
        "sanitize",
    ]
    jittered = replace(data, color_jitter=0.4, flip=0.0)
    assert _step_names(select_train_transforms(jittered, [])) == ["KeepRatioResize", "ColorJitter", "sanitize"]
    assert _step_names(select_eval_transforms(replace(data, test_resize="keep_ratio"))) == [
        "KeepRatioResize",
        "sanitize",
    ]
    assert _step_names(select_eval_transforms(replace(data, test_resize="original"))) == ["sanitize"]


def test_loaders_with_keep_ratio_geometry(tiny_shapes, tmp_path):
    dataset = CocoDataset(tiny_shapes.val_json, tiny_shapes.val_images)
    data = DataConfig(test_resize="keep_ratio", test_min_size=80, max_size=96)
    batch = next(iter(eval_loader(dataset, data, batch_size=4, num_workers=0)))
    assert batch.images.shape[-2:] == (80, 80) and batch.scales.tolist() == [1.25] * 4  # 64 px shapes images
    original = next(iter(eval_loader(dataset, replace(data, test_resize="original"), batch_size=2, num_workers=0)))
    assert original.images.shape[-2:] == (64, 64) and original.scales.tolist() == [1.0, 1.0]
    letterboxed = replace(data, test_resize="letterbox", input_size=48, input_height=32)
    old_form = next(iter(eval_loader(dataset, letterboxed, batch_size=2, num_workers=0)))
    assert old_form.images.shape[-2:] == (32, 48) and old_form.scales.tolist() == [0.5, 0.5]
    config = tiny_config(tiny_shapes, tmp_path)
    config = replace(config, data=replace(config.data, resize="keep_ratio", min_size=(48, 80), max_size=200))
    train = CocoDataset(tiny_shapes.train_json, tiny_shapes.train_images)
    loader, _ = train_loader(train, config)
    batch = next(iter(loader))
    assert all(48 / 64 <= scale <= 80 / 64 for scale in batch.scales.tolist())
    assert batch.images.shape[-1] == round(64 * batch.scales.max().item())  # padded to the largest image
