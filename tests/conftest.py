"""Shared fixtures: a tiny shapes dataset generated once per session, and the path to ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision

from pointdet.data.shapes import generate_shapes
from pointdet.models.backbones.weights import imagenet_url

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


MAX_WORKERS = 4  # each worker holds its own models and data: the cap keeps a many-core small machine out of swap


def _cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most ``MAX_WORKERS``."""
    return min(_cores(), MAX_WORKERS)


# The default suite's longest test (about 4 of its 10 minutes on the 2-core CI machine, CI log 2026-12-06). Collected
# in file order it started about two thirds of the way through and ran on alone at the end; first, it runs beside the
# rest on the other worker.
LONGEST_TEST = "tests/test_raccoon.py::test_centernet_lite0_learns_real_photos_in_a_short_fine_tune"


def pytest_collection_modifyitems(config, items):
    """Start ``LONGEST_TEST`` first (pytest-xdist hands the tests out in this order); the others keep theirs."""
    items.sort(key=lambda item: item.nodeid != LONGEST_TEST)


def pytest_configure(config):
    """Under pytest-xdist (``-n auto``, the default suite) each worker takes its share of the cores, for torch and
    for the processes the tests start (CLI runs, DDP workers): N workers of N threads each on N cores spend the run
    fighting over them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = str(max(1, _cores() // int(workers)))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """16 train / 8 val images of 64 px."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=8, image_size=64, seed=1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POINTDET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


IMAGENET_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "dla34")


@pytest.fixture(scope="session", autouse=True)
def _no_downloads(tmp_path_factory):
    """Tests never download: for the whole session (fixtures of every scope included) torch's cache is a session
    folder, and the "download" of a backbone's ImageNet file (``model.backbone_weights=imagenet``, the paper presets'
    default) writes a locally built file of that network with random weights; any other download fails as offline."""
    files = {imagenet_url(name).rsplit("/", 1)[-1]: name for name in IMAGENET_BACKBONES}

    def local_file(url: str, destination: str, *args, **kwargs) -> None:
        name = files.get(url.rsplit("/", 1)[-1])
        if name is None:
            raise OSError(f"tests do not download ({url})")
        torch.save(_random_imagenet_state(name), destination)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        patch.setattr(torch.hub, "download_url_to_file", local_file)
        yield


def _random_imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """A state dict in the layout of the official ImageNet file of ``name``, with seeded random values."""
    torch.manual_seed(0)
    if name != "dla34":
        return torchvision.models.get_model(name, weights=None).state_dict()
    manifest = Path(__file__).parent / "data" / "official_centernet" / "dla34_det.json"
    tensors = json.loads(manifest.read_text())["tensors"]
    return {key.removeprefix("base."): torch.rand(shape) for key, shape in tensors.items() if key.startswith("base.")}


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is only beside the project checkout)")
    return path
