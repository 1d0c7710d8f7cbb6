"""Which files ``pointdet predict`` reads, and where it writes each one's outputs.

Two promises: no input is ever written over, and every input gets outputs of its own. Folders given as inputs keep
their sub-folders below ``--out``; inputs that would still share a name (``a.jpg`` and ``a.png``, or ``x/a.jpg`` and
``y/a.jpg`` given as files) are named apart by their suffix (``a_jpg``, ``a_png``) and then by a number (``a_2``).
Outputs never replace files already in ``--out`` unless asked to (``overwrite``), and even then never an input.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pointdet.engine.output_paths import folder_problem
from pointdet.errors import PointdetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm"}  # read through engine.video (PyAV)
DETECTIONS_FILE = "detections.json"


class PredictOutputError(PointdetError):
    """The output folder cannot take this predict's files without losing something; the message says why."""


@dataclass(frozen=True)
class PredictInput:
    """One file to predict on.

    Attributes:
        path: the file as found (a file argument, or below a folder argument).
        name: its outputs' path below ``--out`` without a suffix, e.g. ``sub/a`` (drawn as ``sub/a.jpg``).
    """

    path: Path
    name: Path

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES

    def output_files(self, out: Path, mono3d: bool = False) -> list[Path]:
        """The files this input's outputs take: a drawn ``.jpg`` (and a KITTI ``labels/NAME.txt`` for monocular 3D),
        or an annotated ``.mp4`` and its ``.jsonl`` for a video."""
        stem = out / self.name
        if self.is_video:
            return [stem.parent / f"{stem.name}.mp4", stem.parent / f"{stem.name}.jsonl"]
        drawn = [stem.parent / f"{stem.name}.jpg"]
        return drawn + ([out / "labels" / self.name.parent / f"{self.name.name}.txt"] if mono3d else [])


def collect_inputs(inputs: list[str], out: Path) -> tuple[list[PredictInput], list[str], int]:
    """The image and video files of ``inputs`` (files, and folders searched recursively by suffix) with their output
    names, one line per input left out, and how many files were passed over because they lie below ``out`` inside
    an input folder (the drawn copies of an earlier run are outputs, not inputs). Only regular files (or links to
    them) are read: a named pipe would block, a device never ends."""
    out_resolved = out.resolve()
    found: list[tuple[Path, Path]] = []
    skipped: list[str] = []
    below_out = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out_inside = path.resolve() in out_resolved.parents
            candidates = []
            for candidate in sorted(path.rglob("*")):
                if candidate.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES or candidate.is_dir():
                    continue
                if out_inside and out_resolved in candidate.resolve().parents:
                    below_out += 1
                else:
                    candidates.append(candidate)
            relative = [candidate.relative_to(path) for candidate in candidates]
        else:
            candidates, relative = [path], [Path(path.name)]
        for candidate, name in zip(candidates, relative, strict=True):
            problem = _not_a_regular_file(candidate)
            if problem is None:
                found.append((candidate, name))
            else:
                skipped.append(f"{candidate}: {problem}")
    names = distinct_names([name for _, name in found])
    return [PredictInput(path, name) for (path, _), name in zip(found, names, strict=True)], skipped, below_out


def distinct_names(relative: list[Path]) -> list[Path]:
    """One output name (a relative path without suffix) per input path, all different, even on a file system that
    ignores case: ``sub/a.jpg -> sub/a``; ``a.jpg, a.png -> a_jpg, a_png``; ``a.jpg, a.jpg -> a, a_2``."""
    names = [path.with_suffix("") for path in relative]
    groups: defaultdict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        groups[str(name).casefold()].append(index)
    for members in groups.values():
        if len({relative[index].suffix.casefold() for index in members}) > 1:
            for index in members:
                if relative[index].suffix:
                    names[index] = names[index].parent / f"{names[index].name}_{relative[index].suffix[1:]}"
    taken: set[str] = set()
    for index, name in enumerate(names):
        candidate, number = name, 1
        while str(candidate).casefold() in taken:
            number += 1
            candidate = name.parent / f"{name.name}_{number}"
        taken.add(str(candidate).casefold())
        names[index] = candidate
    return names


def prepare_output_folder(out: Path, inputs: list[PredictInput], mono3d: bool, overwrite: bool) -> None:
    """Create ``out`` and check, before any work, that every output can be written there without loss.

    Raises:
        PredictOutputError: ``out`` holds an input (or is one), is not a writable folder, or already holds files
            this predict would write and ``overwrite`` is off.
    """
    out_resolved = out.resolve()
    for item in inputs:
        source = item.path.resolve()
        if source == out_resolved or out_resolved in source.parents:
            raise PredictOutputError(
                f"the output folder {out} holds the input {item.path}; drawn copies would sit among (or over) "
                "the photos they come from: choose a folder of their own, e.g. --out predictions"
            )
    problem = folder_problem(out)
    if problem is not None:
        raise PredictOutputError(f"--out {out} {problem}")
    planned = [path for item in inputs for path in item.output_files(out, mono3d)]
    if any(not item.is_video for item in inputs) and not mono3d:
        planned.append(out / DETECTIONS_FILE)
    existing = [path for path in planned if os.path.lexists(path)]
    if existing and not overwrite:
        shown = ", ".join(str(path.relative_to(out)) for path in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise PredictOutputError(
            f"{out} already holds {len(existing)} file(s) this predict would write ({shown}{more}), from an "
            "earlier run: pass --overwrite to replace them, or choose another --out"
        )


def writable_path(path: Path) -> Path:
    """``path`` made ready to be written: its folder exists, and a file or link already there is removed first, so
    that writing can never follow a link (say, one in ``--out`` to an input) onto another file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(path):
        path.unlink()
    return path


def _not_a_regular_file(path: Path) -> str | None:
    """None for a regular file or a link to one, else what the path is instead."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else "not found"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "special")
    return f"{kind}, not a regular file"
