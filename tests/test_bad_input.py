"""Bad input never costs a run and never prints a traceback: broken COCO sets and image files, built here.

Each case is either an error (one line naming the file, the record and the field) or a counted, reported skip.
"""

import io
import json
import os
import shutil
import socket

import pytest
import torch
from PIL import Image

from pointdet.cli import main
from pointdet.data.coco import CocoDataset, DatasetError
from pointdet.data.dataset import TransformedDataset, collate
from pointdet.data.images import ImageReadError, image_size, read_image
from pointdet.data.transforms import eval_transforms
from pointdet.errors import PointdetError

from .helpers import untrained_checkpoint


@pytest.fixture()
def data(tiny_shapes, tmp_path):
    """A private copy of the tiny shapes training set (16 images of 64 px) to break, and its JSON document."""
    images = tmp_path / "images"
    shutil.copytree(tiny_shapes.train_images, images)
    return images, json.loads(tiny_shapes.train_json.read_text())


def _open(tmp_path, images, document, **kwargs) -> CocoDataset:
    path = tmp_path / "set.json"
    path.write_text(json.dumps(document))
    return CocoDataset(path, images, **kwargs)


def _cut_jpeg(size=(64, 64)) -> bytes:
    """A noisy JPEG cut off in its scan data: the header is whole, so only decoding finds the missing part."""
    buffer = io.BytesIO()
    noise = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    Image.fromarray(noise.numpy()).save(buffer, format="JPEG")
    whole = buffer.getvalue()
    return whole[: len(whole) // 2]


def _break_files(images, document) -> dict[str, str]:
    """Zero bytes, a text file named .png and a PNG cut off mid-file, over the first three records."""
    names = [image["file_name"] for image in document["images"][:3]]
    (images / names[0]).write_bytes(b"")
    (images / names[1]).write_text("not an image at all")
    whole = (images / names[2]).read_bytes()
    (images / names[2]).write_bytes(whole[: len(whole) // 2])
    return dict(zip(("empty", "text", "cut"), names, strict=True))


# ------------------------------------------------------------------------------------------ image files


def test_unreadable_images_are_listed_before_training(tmp_path, data):
    images, document = data
    _break_files(images, document)
    with pytest.raises(DatasetError) as caught:
        _open(tmp_path, images, document)
    message = str(caught.value)
    assert "3 image file(s) cannot be used (data.skip_bad_images=true leaves them out)" in message
    lines = message.splitlines()[1:]
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.strip().startswith(f"images[{i}] id={document['images'][i]['id']} file_name=")


def test_many_bad_images_are_listed_then_counted(tmp_path, data):
    images, document = data
    for image in document["images"][:13]:
        (images / image["file_name"]).write_bytes(b"")
    with pytest.raises(DatasetError, match=r"13 image file\(s\)") as caught:
        _open(tmp_path, images, document)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 + 10 + 1 and lines[-1].strip() == "... and 3 more"


def test_bad_images_are_left_out_on_request(tmp_path, data, caplog):
    images, document = data
    _break_files(images, document)
    dataset = _open(tmp_path, images, document, skip_bad_images=True)
    bad_ids = {image["id"] for image in document["images"][:3]}
    assert len(dataset) == len(document["images"]) - 3 and not bad_ids & {r.image_id for r in dataset.records}
    assert len(dataset.left_out) == 3 and "left out 3 image(s)" in caplog.text
    bad_annotations = sum(a["image_id"] in bad_ids for a in document["annotations"])
    assert dataset.skipped["annotation of a left-out image"] == bad_annotations


def test_size_disagreeing_with_the_file_is_an_error_exif_rotation_is_not(tmp_path, data):
    images, document = data
    document["images"][4]["width"] = 128
    with pytest.raises(DatasetError, match=r"images\[4\] .*the file is 64x64 .* but the record says width=128"):
        _open(tmp_path, images, document)
    document["images"][4]["width"] = 64
    # A 40 x 20 photo stored sideways (EXIF orientation 6): read_image and the record see it as 20 wide, 40 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(images / "rotated.jpg", exif=exif.tobytes())
    document["images"][5].update(file_name="rotated.jpg", width=20, height=40)
    assert image_size(images / "rotated.jpg") == (40, 20) == tuple(read_image(images / "rotated.jpg").shape[1:])
    _open(tmp_path, images, document)


def test_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 pixels > 2 x the limit: PIL refuses to open
    for read in (read_image, image_size):
        with pytest.raises(ImageReadError, match="bomb.png: .*DecompressionBombError"):
            read(path)


def test_image_failing_mid_run_is_skipped_and_counted(tmp_path, data, caplog):
    images, document = data
    name = document["images"][2]["file_name"]
    (images / name).unlink()
    cut = images / "cut.jpg"
    cut.write_bytes(_cut_jpeg())
    document["images"][2]["file_name"] = "cut.jpg"
    dataset = _open(tmp_path, images, document)  # passes the header check
    wrapped = TransformedDataset(dataset, eval_transforms(64))
    replaced = wrapped[(2, 1234)]  # a training key: the next image, same seed
    assert replaced.image_id == dataset.records[3].image_id
    blank = wrapped[2]  # an evaluation key: its own record with a black image, so no detections
    assert blank.image_id == dataset.records[2].image_id and blank.image.max() == 0
    assert wrapped.decode_failures.value == 2 and "cut.jpg: cannot decode image" in caplog.text
    # The count is shared with the loader's worker processes.
    loader = torch.utils.data.DataLoader(wrapped, batch_size=4, num_workers=1, collate_fn=collate)
    assert sum(len(batch.image_ids) for batch in loader) == len(dataset)
    assert wrapped.decode_failures.value == 3


# ------------------------------------------------------------------------------------------- annotations


@pytest.mark.parametrize("file_name", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.png"])
def test_file_names_leaving_the_images_folder_are_refused(tmp_path, data, file_name):
    images, document = data
    document["images"][3]["file_name"] = file_name
    with pytest.raises(DatasetError, match=r"set.json images\[3\] \(id=4\): field 'file_name' = .* leaves the images"):
        _open(tmp_path, images, document)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("width", "sixty-four", r"images\[1\] \(id=2\): field 'width' must be an integer, got 'sixty-four'"),
        ("height", None, r"images\[1\] \(id=2\): field 'height' must be an integer, got None"),
        ("width", 0, r"images\[1\] \(id=2\): field 'width' must be positive, got 0"),
        ("id", 1, r"images\[1\] \(id=1\): field 'id' = 1 repeats images\[0\]"),
    ],
)
def test_bad_image_records(tmp_path, data, field, value, message):
    images, document = data
    document["images"][1][field] = value
    with pytest.raises(DatasetError, match=message):
        _open(tmp_path, images, document)


def test_repeated_category_id(tmp_path, data):
    images, document = data
    document["categories"].append({**document["categories"][0], "name": "again"})
    position = len(document["categories"]) - 1
    with pytest.raises(
        DatasetError, match=rf"categories\[{position}\] \(id=1\): field 'id' = 1 repeats categories\[0\]"
    ):
        _open(tmp_path, images, document)


def test_box_entirely_outside_its_image_is_a_counted_skip(tmp_path, data, caplog):
    images, document = data
    total = len(document["annotations"])
    document["annotations"][0]["bbox"] = [70.0, 10.0, 5.0, 5.0]  # right of a 64 px image
    document["annotations"][1]["bbox"] = [-20.0, -20.0, 10.0, 10.0]  # above and left of it
    document["annotations"][2]["bbox"] = [60.0, 60.0, 10.0, 10.0]  # partly inside: kept (clipped later)
    dataset = _open(tmp_path, images, document)
    assert dataset.skipped == {"bbox entirely outside its image": 2}
    assert sum(len(r.boxes) for r in dataset.records) == total - 2 and "entirely outside" in caplog.text


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]], "has a polygon of odd length 7"),
        ([[1.0, "2", 3.0, 4.0, 5.0, 6.0]], "has a polygon that is not a flat list of numbers"),
        ({"size": [64, 64], "counts": "!!garbage~~"}, "RLE 'counts' is not a COCO compressed RLE string"),
        ({"size": [64, 64], "counts": [10, 20]}, r"RLE runs cover 30 pixels .* not the image's 64x64 = 4096"),
        ({"size": [32, 32], "counts": [1024]}, r"RLE 'size' = \[32, 32\] is not the image's \[height, width\]"),
        ({"counts": [4096]}, r"RLE 'size' = None"),
        ("polygon", "must be a list of polygons or an RLE object"),
    ],
)
def test_broken_segmentations_are_errors(tmp_path, data, segmentation, message):
    images, document = data
    document["annotations"][1]["segmentation"] = segmentation
    with pytest.raises(DatasetError, match=r"annotations\[1\] \(id=2\): field 'segmentation'.*" + message):
        _open(tmp_path, images, document)


def test_valid_rle_strings_pass(tmp_path, data):
    from pycocotools import mask as mask_utils

    images, document = data
    mask = torch.zeros(64, 64, dtype=torch.uint8)
    mask[10:30, 5:50] = 1
    rle = mask_utils.encode(mask.numpy().copy(order="F"))
    document["annotations"][1]["segmentation"] = {"size": [64, 64], "counts": rle["counts"].decode()}
    document["annotations"][2]["segmentation"] = {"size": [64, 64], "counts": [100, 50, 3946]}
    dataset = _open(tmp_path, images, document, with_masks=True)
    index = next(i for i, r in enumerate(dataset.records) if r.image_id == document["annotations"][1]["image_id"])
    assert dataset.instances(index, 64, 64).masks.sum() > 0


# ------------------------------------------------------------------------------------------ command line


def test_cli_names_bad_training_images_in_one_line_each(tmp_path, data, tiny_shapes):
    images, document = data
    broken = _break_files(images, document)
    annotations = tmp_path / "set.json"
    annotations.write_text(json.dumps(document))
    overrides = [f"data.train_json={annotations}", f"data.train_images={images}", "device=cpu", "data.num_workers=0"]
    with pytest.raises(SystemExit) as caught:
        main(["train", "centernet_r18", *overrides, f"out_dir={tmp_path}"])
    message = str(caught.value.code)
    assert message.startswith("error: ") and "Traceback" not in message
    for name in broken.values():
        assert sum(name in line for line in message.splitlines()) == 1


def test_cli_keeps_the_traceback_of_real_bugs(monkeypatch):
    def broken(_):
        raise KeyError("a bug in pointdet")

    monkeypatch.setattr("pointdet.cli.cmd_presets", broken)
    with pytest.raises(KeyError, match="a bug in pointdet"):
        main(["presets"])
    assert issubclass(DatasetError, PointdetError) and issubclass(ImageReadError, PointdetError)
    with pytest.raises(SystemExit, match="config error: unknown preset 'nope'"):
        main(["train", "nope"])


def test_cli_data_paths_error_is_one_line(tiny_shapes):
    with pytest.raises(SystemExit, match="config error: data.train_json is set but data.train_images is not"):
        main(["train", "centernet_r18", f"data.train_json={tiny_shapes.train_json}", "device=cpu"])


def test_predict_skips_what_it_cannot_read_and_exits_non_zero(tmp_path, tiny_shapes, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = sorted(tiny_shapes.val_images.glob("*.png"))[:3]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("hello")
    (folder / "cut.jpg").write_bytes(_cut_jpeg())
    Image.new("RGB", (200, 200)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # bomb.png is over twice the limit, the 64 px ones not
    os.mkfifo(folder / "pipe.jpg")  # reading it would block forever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.png"))
    weights = untrained_checkpoint(tiny_shapes, tmp_path / "model.pt")
    out = tmp_path / "out"
    try:
        with pytest.raises(SystemExit) as caught:
            main(
                ["predict", str(folder), "/dev/null", "--weights", str(weights), "--out", str(out), "--batch-size", "2"]
            )
    finally:
        server.close()
    assert str(caught.value.code) == "predict: 7 input(s) skipped (listed above), 3 image(s) processed"
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if line.startswith("predict: skipped")]
    assert len(skipped) == 7 and "Traceback" not in captured.err
    expected = {
        "pipe.jpg: a named pipe, not a regular file",
        "socket.png: a socket, not a regular file",
        "/dev/null: a character device, not a regular file",
        "empty.jpg: cannot decode image",
        "notes.png: cannot decode image",
        "cut.jpg: cannot decode image",
        "bomb.png: cannot decode image (DecompressionBombError",
    }
    for fragment in expected:
        assert sum(fragment in line for line in skipped) == 1, fragment
    assert "3 image(s) in" in captured.out
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(f"{p.stem}.jpg" for p in good)
    records = json.loads((out / "detections.json").read_text())
    assert {r["file_name"] for r in records} <= {str(folder / p.name) for p in good}


def test_predict_with_nothing_readable_is_one_line(tmp_path, tiny_shapes):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"predict: no readable images .*; 1 input\(s\) skipped"):
        main(["predict", str(tmp_path / "missing.jpg"), "--weights", "unused.pt"])
    weights = untrained_checkpoint(tiny_shapes, tmp_path / "model.pt")
    with pytest.raises(SystemExit, match=r"predict: 1 input\(s\) skipped \(listed above\), 0 image\(s\) processed"):
        main(["predict", str(tmp_path / "empty.jpg"), "--weights", str(weights), "--out", str(tmp_path / "out")])
