"""A run folder belongs to one live run: generated folder names never collide, and a lock held while a run trains
refuses a second training into the same folder, naming the process that holds it.

The lock is ``fcntl.flock`` on ``RUN/.lock``. The operating system releases it when the holding process ends in any
way (normal exit, exception, Ctrl-C, ``kill -9``), so a lock left by a dead run never blocks anyone; the file's text
(pid, host, start time, command) only serves the refusal message. Systems without ``fcntl`` (Windows) train without
the lock, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from pointdet.errors import PointdetError

LOCK_FILE = ".lock"
logger = logging.getLogger(__name__)


class RunFolderError(PointdetError):
    """The run folder is held by another live run, or cannot be created; the message names the folder."""


@dataclass
class RunFolderLock:
    """The lock of one run folder, held until ``release``.

    Attributes:
        folder: the run folder.
        handle: the open lock file (None once released, or where the system has no ``fcntl``).
        created: the folder did not exist before this run claimed it.
    """

    folder: Path
    handle: IO[str] | None
    created: bool

    def release(self, remove_if_unused: bool = False) -> None:
        """Give the folder up; with ``remove_if_unused``, also delete it when this run created it and wrote nothing
        into it but the lock (a run that failed before its first file)."""
        unused = remove_if_unused and self.created and {p.name for p in self.folder.iterdir()} <= {LOCK_FILE}
        if unused:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
            self.folder.rmdir()
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def new_run_folder(out_dir: str | Path, name: str, now: datetime | None = None) -> Path:
    """Create and return ``out_dir/NAME-YYYYmmdd-HHMMSS``, or ``...-2``, ``...-3`` when other runs took that name in
    the same second. ``mkdir`` without ``exist_ok`` is atomic, so two runs never get one folder.

    Raises:
        RunFolderError: ``out_dir`` cannot be created or written.
    """
    stamp = f"{name}-{(now or datetime.now()):%Y%m%d-%H%M%S}"
    folder, number = Path(out_dir) / stamp, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:  # another run's, made in the same second: take the next number
            pass
        except OSError as error:
            raise RunFolderError(f"cannot create the run folder {folder} ({error.strerror or error})") from None
        number += 1
        folder = Path(out_dir) / f"{stamp}-{number}"


def lock_run_folder(folder: str | Path, created: bool = False) -> RunFolderLock:
    """Create ``folder`` if needed and take its lock for this process (``created``: the caller has just created it,
    as ``new_run_folder`` does).

    Raises:
        RunFolderError: another live process holds the folder (the message gives its pid, host, start time and
            command), or the folder cannot be created or written.
    """
    folder = Path(folder)
    created = created or not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the run's life
    except FileExistsError:
        raise RunFolderError(f"cannot use {folder} as a run folder: it is a file") from None
    except OSError as error:
        raise RunFolderError(f"cannot create the run folder {folder} ({error.strerror or error})") from None
    if not _try_lock(handle):
        handle.seek(0)
        holder = _describe_holder(handle.read())
        handle.close()
        raise RunFolderError(
            f"{folder} belongs to a run in progress ({holder}): a second training there would write over its "
            "checkpoints; wait for that run to end or stop it, or train into another run_dir"
        )
    handle.seek(0)
    handle.truncate()
    command = " ".join(sys.argv)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": f"{datetime.now():%Y-%m-%d %H:%M:%S}"}
    handle.write(json.dumps({**record, "command": command[:200]}))
    handle.flush()
    return RunFolderLock(folder, handle, created)


def _try_lock(handle: IO[str]) -> bool:
    """Take an exclusive lock on ``handle`` without waiting; False if another open file holds it."""
    try:
        import fcntl
    except ImportError:
        logger.warning("this system has no fcntl: run folders are not locked against a second training")
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _describe_holder(text: str) -> str:
    """The lock file's record as words: ``pid 1234 on host h, started 2025-01-01 12:00:00: pointdet train ...``."""
    try:
        record = json.loads(text)
        pid, host, started, command = record["pid"], record["host"], record["started"], record["command"]
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"
    same = " (this very process: finish or drop the other Trainer first)" if pid == os.getpid() else ""
    return f"pid {pid}{same} on host {host}, started {started}: {command}"
