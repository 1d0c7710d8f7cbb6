"""``pointdet predict`` never writes over an input, and every input gets outputs of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pointdet.cli import main
from pointdet.engine.predict_files import distinct_names
from tests.helpers import untrained_checkpoint


def test_distinct_names_keep_folders_and_name_clashes_apart():
    relative = [Path("a.jpg"), Path("a.png"), Path("sub/a.jpg"), Path("b.jpg"), Path("b.jpg"), Path("A.JPG")]
    names = distinct_names(relative)
    assert [str(name) for name in names] == ["a_jpg", "a_png", "sub/a", "b", "b_2", "A_JPG_2"]
    assert distinct_names([Path("x.tar.jpg"), Path("x.tar.png")]) == [Path("x.tar_jpg"), Path("x.tar_png")]


@pytest.fixture
def photos(tmp_path, tiny_shapes):
    """A folder of three images that share the stem ``a`` (two suffixes and a sub-folder), plus ``b.png``; and an
    untrained checkpoint beside it."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    first, second = sorted(tiny_shapes.val_images.glob("*.png"))[:2]
    shutil.copy(first, folder / "a.png")
    shutil.copy(first, folder / "b.png")
    shutil.copy(second, folder / "sub" / "a.png")
    from PIL import Image

    Image.open(second).convert("RGB").save(folder / "a.jpg")
    return folder, untrained_checkpoint(tiny_shapes, tmp_path / "model.pt")


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_predict_into_the_input_folder_is_refused_and_touches_nothing(photos):
    folder, weights = photos
    before = _contents(folder)
    with pytest.raises(SystemExit, match=r"predict: the output folder .* holds the input .*choose a folder"):
        main(["predict", str(folder), "--weights", str(weights), "--out", str(folder)])
    with pytest.raises(SystemExit, match=r"holds the input"):
        main(["predict", str(folder / "a.jpg"), "--weights", str(weights), "--out", str(folder)])
    with pytest.raises(SystemExit, match=r"holds the input"):
        main(["predict", str(folder / "sub"), "--weights", str(weights), "--out", str(folder)])
    assert _contents(folder) == before


def test_every_input_gets_its_own_output_and_subfolders_are_kept(photos, capsys):
    folder, weights = photos
    out = folder / "drawn"  # inside the input folder: its files are outputs, never inputs
    before = _contents(folder)
    main(["predict", str(folder), "--weights", str(weights), "--out", str(out)])
    drawn = sorted(str(path.relative_to(out)) for path in out.rglob("*.jpg"))
    assert drawn == ["a_jpg.jpg", "a_png.jpg", "b.jpg", "sub/a.jpg"]
    assert {key: value for key, value in _contents(folder).items() if not key.startswith("drawn")} == before
    records = json.loads((out / "detections.json").read_text())
    assert {record["file_name"] for record in records} <= {str(folder / name) for name in before}
    assert "4 image(s)" in capsys.readouterr().out
    # the second run reads the same four photos, not the drawn copies below --out, and says so
    main(["predict", str(folder), "--weights", str(weights), "--out", str(out), "--overwrite"])
    captured = capsys.readouterr()
    assert "4 image(s)" in captured.out and "left out 4 file(s) below the output folder" in captured.err
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*.jpg")) == drawn
    # files given one by one from two folders, with one name: both kept
    other = folder.parent / "other"
    other.mkdir()
    shutil.copy(folder / "a.jpg", other / "a.jpg")
    spread = folder.parent / "spread"
    main(["predict", str(folder / "a.jpg"), str(other / "a.jpg"), "--weights", str(weights), "--out", str(spread)])
    assert sorted(path.name for path in spread.glob("*.jpg")) == ["a.jpg", "a_2.jpg"]


def test_a_second_predict_into_one_folder_needs_overwrite(photos):
    folder, weights = photos
    out = folder.parent / "out"
    main(["predict", str(folder / "b.png"), "--weights", str(weights), "--out", str(out)])
    first = (out / "detections.json").read_bytes()
    with pytest.raises(
        SystemExit, match=r"already holds 2 file\(s\) this predict would write \(b.jpg, detections.json"
    ):
        main(["predict", str(folder / "b.png"), "--weights", str(weights), "--out", str(out)])
    assert (out / "detections.json").read_bytes() == first
    # --overwrite replaces a link in --out by a file of its own: the file the link pointed to keeps its bytes
    (out / "b.jpg").unlink()
    (out / "b.jpg").symlink_to(folder / "a.jpg")
    original = (folder / "a.jpg").read_bytes()
    main(["predict", str(folder / "b.png"), "--weights", str(weights), "--out", str(out), "--overwrite"])
    assert not (out / "b.jpg").is_symlink() and (folder / "a.jpg").read_bytes() == original


def test_an_output_path_that_is_a_file_is_one_line(photos):
    folder, weights = photos
    with pytest.raises(SystemExit, match=r"predict: --out .*b.png is a file, not a folder"):
        main(["predict", str(folder / "a.jpg"), "--weights", str(weights), "--out", str(folder / "b.png")])
    with pytest.raises(SystemExit, match=r"predict: --out .*b.png/x cannot be written \(Not a directory\)"):
        main(["predict", str(folder / "a.jpg"), "--weights", str(weights), "--out", str(folder / "b.png" / "x")])
