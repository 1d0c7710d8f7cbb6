"""``pointdet convert --from``'s table of sources: the CLI offers exactly its sources, options a source does not take
are refused by name before anything is written, and an mmdetection file goes to the converter of what it holds.
(Each converter's own end-to-end test runs through the CLI: tests/test_convert_*.py.)"""

from __future__ import annotations

import argparse

import pytest
import torch

from pointdet.cli import build_parser
from pointdet.convert.common import ConversionError
from pointdet.convert.grid import GRID_HEAD_KEY
from pointdet.convert.sources import MMDET_GRID, SOURCES, Request, convert_official, source_of
from pointdet.errors import PointdetError


def test_the_cli_offers_exactly_the_table_of_sources():
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    framework = next(action for action in commands.choices["convert"]._actions if action.dest == "framework")
    assert framework.choices == list(SOURCES)


@pytest.mark.parametrize("framework", ["cpm", "reppointsv2", "lsnet", "centripetalnet"])
def test_options_a_source_does_not_take_are_refused_by_name(tmp_path, framework):
    source = SOURCES[framework]
    options = {"arch": "resnet50", "task": "pose", "input_size": 512}
    request = Request(tmp_path / "missing.pth", tmp_path / "run", **options)
    with pytest.raises(ConversionError) as refusal:
        convert_official(framework, request)
    message = str(refusal.value)
    assert message.startswith(f"--from {framework}: {source.fixed}; drop ")
    assert ("--arch" in message) == (not source.arch)
    assert "--task" in message and "--input-size" in message
    assert not (tmp_path / "run").exists()


def test_a_task_the_source_takes_is_not_refused(tmp_path):
    request = Request(tmp_path / "missing.pth", tmp_path / "run", task="det")
    with pytest.raises(PointdetError, match="missing.pth: weights file not found"):  # past the options: read
        convert_official("cpm", request)


def test_an_mmdetection_file_goes_to_the_converter_of_what_it_holds(tmp_path):
    grid, corners = tmp_path / "grid.pth", tmp_path / "corners.pth"
    torch.save({"meta": {}, "state_dict": {f"{GRID_HEAD_KEY}deconv1.weight": torch.zeros(1)}}, grid)
    torch.save({"meta": {}, "state_dict": {"bbox_head.tl_heat.0.weight": torch.zeros(1)}}, corners)
    assert source_of("mmdet", grid) is MMDET_GRID
    assert source_of("mmdet", corners) is SOURCES["mmdet"]
    with pytest.raises(ConversionError, match="a Grid / CPM R-CNN is read whole from the file; drop --arch$"):
        convert_official("mmdet", Request(grid, tmp_path / "run", arch="resnet50"))
    with pytest.raises(ConversionError, match="tested at the image's own size; drop --input-size$"):
        convert_official("mmdet", Request(corners, tmp_path / "run", input_size=512))


def test_an_unknown_source_is_named():
    with pytest.raises(ConversionError, match="--from caffe: unknown source; one of centernet, "):
        source_of("caffe", "model.pth")
