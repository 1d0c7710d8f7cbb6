"""``pointdet convert --from SOURCE``: the converter of each official source and the options it takes, in one
table (``SOURCES``); ``convert_official`` refuses the options a source does not take, naming them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pointdet.convert.centernet import convert_centernet
from pointdet.convert.common import ConversionError
from pointdet.convert.corners import convert_corners
from pointdet.convert.grid import convert_grid, is_grid_rcnn_checkpoint
from pointdet.convert.lsnet import convert_lsnet
from pointdet.convert.reppoints import convert_reppoints


class Request(NamedTuple):
    """What the user asks for: the official file, the run folder to write, and the options (None: read from the
    file, or the source's default)."""

    file: str | Path
    out: str | Path
    arch: str | None = None
    task: str | None = None
    classes: str | None = None
    input_size: int | None = None


@dataclass(frozen=True)
class Source:
    """One ``--from`` choice: ``convert(request) -> written checkpoint``; the ``--task`` values it accepts (empty: it
    reads the task from the file); whether it takes ``--arch`` and ``--input-size``; ``fixed``: why the options it
    does not take do not apply (the refusal's reason)."""

    convert: Callable[[Request], Path]
    tasks: tuple[str, ...] = ()
    arch: bool = True
    input_size: bool = False
    fixed: str = ""


_GRID_FIXED = "a Grid / CPM R-CNN is read whole from the file"
_CORNERS_FIXED = "box detectors tested at the image's own size"
SOURCES: dict[str, Source] = {
    "centernet": Source(
        lambda r: convert_centernet(r.file, r.out, r.arch, r.task, r.classes, r.input_size),
        tasks=("det", "pose", "3d"),
        input_size=True,
        fixed="its tasks are det, pose and 3d",
    ),
    "centripetalnet": Source(
        lambda r: convert_corners(r.file, r.out, "centripetalnet", r.arch, r.classes), ("det",), fixed=_CORNERS_FIXED
    ),
    "mmdet": Source(
        lambda r: convert_corners(r.file, r.out, "mmdet", r.arch, r.classes), ("det",), fixed=_CORNERS_FIXED
    ),
    "cpm": Source(lambda r: convert_grid(r.file, r.out, "cpm", r.classes), ("det",), arch=False, fixed=_GRID_FIXED),
    "reppointsv2": Source(
        lambda r: convert_reppoints(r.file, r.out, r.arch, r.classes),
        fixed="the task is read from the file and the test size is (1333, 800)",
    ),
    "lsnet": Source(
        lambda r: convert_lsnet(r.file, r.out, r.arch, r.classes),
        fixed="the task is read from the file and the test size is (1333, 800)",
    ),
}
# An mmdetection file that holds a Grid R-CNN (``roi_head.grid_head.*``) rather than a corner detector.
MMDET_GRID = Source(lambda r: convert_grid(r.file, r.out, "mmdet", r.classes), ("det",), arch=False, fixed=_GRID_FIXED)


def source_of(framework: str, path: str | Path) -> Source:
    """The entry of ``--from framework`` for the file ``path`` (``mmdet``: by what the file holds)."""
    if framework not in SOURCES:
        raise ConversionError(f"--from {framework}: unknown source; one of {', '.join(SOURCES)}")
    if framework == "mmdet" and is_grid_rcnn_checkpoint(path):
        return MMDET_GRID
    return SOURCES[framework]


def convert_official(framework: str, request: Request) -> Path:
    """Convert ``request.file`` with the converter of ``--from framework``; returns the written checkpoint.

    Raises:
        ConversionError: an option the source does not take is given (all such options named), or the converter
            refuses the file.
    """
    source = source_of(framework, request.file)
    refused = [
        option
        for option, given in (
            ("--arch", request.arch is not None and not source.arch),
            ("--task", request.task is not None and request.task not in source.tasks),
            ("--input-size", request.input_size is not None and not source.input_size),
        )
        if given
    ]
    if refused:
        raise ConversionError(f"--from {framework}: {source.fixed}; drop {' and '.join(refused)}")
    return source.convert(request)
