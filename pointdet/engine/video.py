"""Videos through a detector: decode in batches of frames, draw the detections, encode the annotated video (same
size and frame rate) and write one JSON line of detections per frame.

PyAV (FFmpeg in its wheels) reads and writes the files; it is the optional extra ``pointdet[video]``. A file that
cannot be opened is a ``VideoError``; a video cut off or corrupt part-way keeps the frames decoded before the damage
and says how many were lost (``VideoResult.problem``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pointdet.engine.predict_files import writable_path
from pointdet.engine.visualize import draw_detections
from pointdet.errors import PointdetError
from pointdet.evaluation import prediction_records

DEFAULT_RATE = Fraction(25)  # frames per second when a file does not say


class VideoError(PointdetError):
    """A video file could not be read or written (or PyAV is missing); the message names the file."""


def import_av():
    """The ``av`` module, or a ``VideoError`` saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError("videos need PyAV, which is not installed: pip install 'pointdet[video]'") from None
    return av


@dataclass(frozen=True)
class VideoResult:
    """What ``predict_video`` did.

    Attributes:
        frames: frames decoded, detected and written.
        seconds: wall-clock time of the whole video (decode, detect, draw, encode).
        video: the annotated video written.
        lines: the JSON-lines file, one line ``{"frame", "time", "detections"}`` per frame.
        problem: None, or what stopped the decoding early (damage, a cut-off file) and how many frames were lost.
    """

    frames: int
    seconds: float
    video: Path
    lines: Path
    problem: str | None = None


class _Frames:
    """The RGB frames of a video stream as (H, W, 3) uint8 arrays; decoding stops at the first damaged part and
    keeps its reason in ``problem``."""

    def __init__(self, container, stream, path: Path) -> None:
        self.container, self.stream, self.path = container, stream, path
        self.problem: str | None = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, float | None]]:
        av = import_av()
        try:
            for frame in self.container.decode(self.stream):
                yield frame.to_ndarray(format="rgb24"), frame.time
        except (av.error.FFmpegError, ValueError, OSError) as error:
            self.problem = f"decoding stopped ({type(error).__name__}: {error})"


def expected_frames(container, stream, rate: Fraction) -> int | None:
    """The frame count the file's header gives (or its duration x the frame rate); None if it says neither."""
    if stream.frames:
        return int(stream.frames)
    if container.duration:
        return round(container.duration / 1_000_000 * rate)
    return None


def predict_video(
    predictor,
    path: str | Path,
    out: str | Path,
    batch_size: int = 8,
    score_threshold: float = 0.3,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
    progress: bool = True,
    box_ranges: tuple[tuple[float, float], ...] = (),
    name: str | Path | None = None,
) -> VideoResult:
    """Detect objects in every frame of ``path``; writes ``out/NAME.mp4`` (H.264, the input's size and frame
    rate) and ``out/NAME.jsonl``, replacing files of those names.

    Args:
        predictor: an ``api.Predictor`` (2D boxes, keypoints or masks).
        batch_size: frames decoded and run through the model together.
        score_threshold: the lowest score drawn (the JSON lines keep every detection).
        flip, scales, box_ranges: test-time augmentation, as ``api.Predictor.predict``.
        name: the outputs' path below ``out`` without a suffix (default: the video's stem).

    Raises:
        VideoError: PyAV is missing, or the file cannot be opened or holds no video stream.
    """
    av = import_av()
    path, out = Path(path), Path(out)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise VideoError(f"{path}: cannot open the video ({type(error).__name__}: {error})") from None
    started = time.time()
    stem = out / (name if name is not None else path.stem)
    video, lines = writable_path(stem.parent / f"{stem.name}.mp4"), writable_path(stem.parent / f"{stem.name}.jsonl")
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or DEFAULT_RATE
        total = expected_frames(container, stream, rate)
        frames = _Frames(container, stream, path)
        with _Writer(av, video, rate) as writer, lines.open("w") as jsonl:
            bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress)
            count = 0
            for batch in _batches(iter(frames), batch_size):
                images = [torch.from_numpy(array).permute(2, 0, 1) for array, _ in batch]
                detections = predictor.predict(
                    images, flip=flip, scales=scales, batch_size=batch_size, box_ranges=box_ranges
                )
                for (array, when), image, dets in zip(batch, images, detections, strict=True):
                    writer.write(
                        draw_detections(image, dets, predictor.class_names, score_threshold, predictor.skeleton)
                    )
                    records = prediction_records(
                        dets, count, predictor.category_ids, predictor.class_names, array.shape[:2]
                    )
                    moment = when if when is not None else float(count / rate)
                    jsonl.write(json.dumps({"frame": count, "time": round(moment, 4), "detections": records}) + "\n")
                    count += 1
                bar.update(len(batch))
            bar.close()
    problem = frames.problem
    if total is not None and count < total:
        lost = f"{count} of the {total} frames its header announces were decoded"
        problem = f"{problem}; {lost}" if problem else f"the file ends early: {lost}"
    return VideoResult(count, time.time() - started, video, lines, problem)


def _batches(frames: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Writer:
    """H.264 encoding of PIL images; 4:2:0 colour for even sizes (what players expect), 4:4:4 for odd ones."""

    def __init__(self, av, path: Path, rate: Fraction) -> None:
        self.av, self.path, self.rate = av, path, rate
        self.container = None
        self.stream = None

    def __enter__(self) -> _Writer:
        return self

    def write(self, image) -> None:
        if self.stream is None:
            self.container = self.av.open(str(self.path), "w")
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.width, self.stream.height = image.size
            even = image.size[0] % 2 == 0 and image.size[1] % 2 == 0
            self.stream.pix_fmt = "yuv420p" if even else "yuv444p"
        frame = self.av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def __exit__(self, *exc) -> None:
        if self.container is None:
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
