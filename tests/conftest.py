"""Shared fixtures: a tiny shapes dataset generated once per session, and the path to ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pointdet.data.shapes import generate_shapes

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """16 train / 8 val images of 64 px."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=8, image_size=64, seed=1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POINTDET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data is only beside the project checkout)")
    return path
