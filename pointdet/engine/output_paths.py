"""Output paths checked before the work that fills them, and a full disk told as one sentence.

``pointdet export --out``, ``eval --results`` and ``eval --plots`` are checked before the model is loaded or the
evaluation runs, so that an unwritable path, a path below a file or a folder where a file belongs costs nothing.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from pointdet.errors import PointdetError

NO_SPACE = "No space left on device"


class OutputPathError(PointdetError):
    """An output path that cannot be written; the message names it and the option it came from."""


class DiskFullError(PointdetError, OSError):
    """A write failed because the disk is full; the message says where and what was kept."""


def writable_folder(folder: str | Path, option: str) -> Path:
    """Create ``folder`` (and its parents) and check that a file can be made in it.

    Raises:
        OutputPathError: it, or a folder above it, is a file, or it cannot be created or written.
    """
    folder = Path(folder)
    problem = folder_problem(folder)
    if problem is not None:
        raise OutputPathError(f"{option} {folder} {problem}")
    return folder


def writable_file(path: str | Path, option: str) -> Path:
    """Check that the file ``path`` can be written (its folder is created): not a folder, not below a file, not
    read-only.

    Raises:
        OutputPathError: it cannot be written; the message says why.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name (e.g. {path / 'out'}{path.suffix})")
    problem = folder_problem(path.parent)
    if problem is not None:
        raise OutputPathError(f"{option} {path}: its folder {path.parent} {problem}")
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError as error:
            raise OutputPathError(f"{option} {path} cannot be written ({error.strerror or error})") from None
    return path


def folder_problem(folder: Path) -> str | None:
    """None if ``folder`` exists or can be created and takes a new file; else what is wrong, in words."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return None
    except FileExistsError:
        return "is a file, not a folder"
    except OSError as error:
        return f"cannot be written ({error.strerror or error})"


def is_disk_full(error: BaseException) -> bool:
    """True if ``error`` or an exception it was raised from (``__cause__`` / ``__context__``) is ``ENOSPC``: torch's
    checkpoint writer, for one, reports it as a ``RuntimeError`` ("unexpected pos") raised while handling it."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if NO_SPACE in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def free_space(folder: str | Path) -> str:
    """The free space of the file system holding ``folder``, in words (``12.5 MB free``)."""
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
    except OSError:
        return "free space unknown"
