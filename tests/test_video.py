"""``pointdet predict`` on videos: the annotated video, one JSON line per frame, damaged files, no PyAV."""

import json
import shutil
import sys
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from pointdet.cli import main

from .helpers import untrained_checkpoint

av = pytest.importorskip("av")

RATE = 5


def _write_video(path, frames: list[np.ndarray], codec: str = "libx264") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _decode(path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], stream.average_rate


def _shape_frames(shapes, count: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(shapes.val_images.glob("*.png"))[:count]]


@pytest.fixture(scope="module")
def weights(tiny_shapes, tmp_path_factory):
    return untrained_checkpoint(tiny_shapes, tmp_path_factory.mktemp("model") / "model.pt")


def test_a_video_gives_the_annotated_video_and_json_lines_equal_to_image_predictions(
    tiny_shapes, weights, tmp_path, capsys
):
    video = tmp_path / "clip.mp4"
    _write_video(video, _shape_frames(tiny_shapes, 7))
    out = tmp_path / "out"
    main(["predict", str(video), "--weights", str(weights), "--out", str(out), "--batch-size", "3"])
    printed = capsys.readouterr().out
    assert "clip.mp4: 7 frame(s) in" in printed and "frames/s" in printed

    annotated, rate = _decode(out / "clip.mp4")
    assert len(annotated) == 7 and annotated[0].shape == (64, 64, 3) and rate == RATE
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(7))
    assert lines[2]["time"] == pytest.approx(2 / RATE)

    # The same decoded frames as PNG images through `pointdet predict` in the same batches: the same records.
    frames, _ = _decode(video)
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:03d}.png")
    main(["predict", str(folder), "--weights", str(weights), "--out", str(tmp_path / "images"), "--batch-size", "3"])
    images = json.loads((tmp_path / "images" / "detections.json").read_text())
    for line in lines:
        expected = [
            {key: value for key, value in record.items() if key != "file_name"}
            for record in images
            if record["image_id"] == line["frame"]
        ]
        assert line["detections"] == expected and expected, line["frame"]


def test_a_folder_mixes_images_and_videos(tiny_shapes, weights, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted(tiny_shapes.val_images.glob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    _write_video(folder / "a.webm", _shape_frames(tiny_shapes, 3), codec="libvpx-vp9")
    _write_video(folder / "b.avi", _shape_frames(tiny_shapes, 2))
    out = tmp_path / "out"
    main(["predict", str(folder), "--weights", str(weights), "--out", str(out)])
    assert "2 image(s) in" in capsys.readouterr().out
    assert len(json.loads((out / "detections.json").read_text())) > 0
    assert len(_decode(out / "a.mp4")[0]) == 3 and len(_decode(out / "b.mp4")[0]) == 2
    assert len((out / "a.jsonl").read_text().splitlines()) == 3


def test_cut_off_and_corrupt_videos_are_reported_without_a_traceback(tiny_shapes, weights, tmp_path, capsys):
    whole = tmp_path / "whole.mkv"
    frames = _shape_frames(tiny_shapes, 8) * 5  # 40 frames: the cut leaves some whole
    _write_video(whole, frames)
    data = whole.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    inputs = [str(tmp_path / "cut.mkv"), str(tmp_path / "noise.mp4")]
    with pytest.raises(SystemExit) as caught:
        main(["predict", *inputs, "--weights", str(weights), "--out", str(out), "--batch-size", "8"])
    decoded = len(_decode(out / "cut.mp4")[0])
    assert 0 < decoded < 40
    assert (
        str(caught.value.code)
        == f"predict: 2 input(s) skipped (listed above), 0 image(s) and {decoded} video frame(s) processed"
    )
    err = capsys.readouterr().err
    assert f"{decoded} of the 40 frames its header announces were decoded" in err
    assert "noise.mp4: cannot open the video" in err and "Traceback" not in err
    assert len((out / "cut.jsonl").read_text().splitlines()) == decoded


def test_without_pyav_a_video_is_one_sentence(tiny_shapes, weights, tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    _write_video(video, _shape_frames(tiny_shapes, 2))
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets where PyAV is not installed
    with pytest.raises(SystemExit, match=r"error: videos need PyAV, .*pip install 'pointdet\[video\]'"):
        main(["predict", str(video), "--weights", str(weights), "--out", str(tmp_path / "out")])
