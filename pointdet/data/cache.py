"""Where generated datasets live, and how they are written: once, atomically, with a progress bar when large."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

GENERATION_PROGRESS_FROM = 100  # generated images from which their writing shows a progress bar

Item = TypeVar("Item")


def generation_progress(items: Iterable[Item], total: int, description: str) -> Iterator[Item]:
    """``items``, with a progress bar (on stderr, removed when done) when there are many of them."""
    return iter(
        tqdm(items, total=total, desc=description, unit="image", leave=False, disable=total < GENERATION_PROGRESS_FROM)
    )


def cache_dir() -> Path:
    """``$POINTDET_CACHE``, else ``$XDG_CACHE_HOME/pointdet``, else ``~/.cache/pointdet``."""
    if os.environ.get("POINTDET_CACHE"):
        return Path(os.environ["POINTDET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pointdet"


def build_once(folder: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(staging_folder)`` unless ``folder`` is complete, then move the result into place atomically:
    a half-written dataset is never seen, and concurrent builders leave one complete copy."""
    if not (folder / "COMPLETE").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            write(staging)
            (staging / "COMPLETE").write_text("ok\n")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder
