"""``pointdet convert --from centernet``: official CenterNet checkpoints, built from manifests of the official state
dicts (tests/data/official_centernet/, names and shapes read off the official definitions) with random values,
convert one-to-one and compute what the official networks compute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pointdet
from pointdet.cli import main
from pointdet.convert import ARCHITECTURES, ConversionError, convert_centernet
from pointdet.convert.centernet import HEAD_BRANCHES, converted_config, default_classes
from pointdet.convert.classes import keypoint_layout
from pointdet.convert.common import pointdet_state
from pointdet.data.shapes import CLASS_NAMES
from pointdet.models.build import build_model
from tests.helpers import random_state
from tests.official_reference import (
    official_dla_neck,
    official_head,
    official_hourglass,
    official_resdcn_neck,
    official_stack_head,
)

MANIFESTS = Path(__file__).parent / "data" / "official_centernet"
COUNTER = "num_batches_tracked"


def manifest(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def official_state(name: str, seed: int = 0, counters: bool = True) -> dict[str, torch.Tensor]:
    return random_state(manifest(name)["tensors"], seed, counters)


def model_for(name: str) -> torch.nn.Module:
    """pointdet's network for the official one of a manifest, as ``pointdet convert`` builds it."""
    arch, task = name.split("_")
    tensors, heads = manifest(name)["tensors"], manifest(name)["heads"]
    head_conv = tensors["hm.0.0.conv.weight" if arch == "hg104" else "hm.0.weight"][0]
    config = converted_config(arch, task, head_conv, default_classes(task, heads["hm"]))
    keypoints = keypoint_layout(task)
    return build_model(
        config.model, heads["hm"], len(keypoints.names), keypoints.flip_pairs, with_backbone_weights=False
    ).eval()


@pytest.mark.parametrize("name", [m.stem for m in sorted(MANIFESTS.glob("*.json"))])
def test_official_tensors_map_one_to_one_onto_pointdet(name):
    official = official_state(name)
    architecture = ARCHITECTURES[name.split("_")[0]]
    model = model_for(name)
    state = pointdet_state(official, architecture, model, name)
    own = model.state_dict()
    assert state.keys() == own.keys()
    unused = [key for key in official if key.startswith(architecture.unused)]
    assert len(official) - len(unused) == len(own)  # one-to-one: no tensor is read twice or left over
    # Every official tensor lands once (the first convolution as its channel-reversed copy).
    sources = {id(tensor): key for key, tensor in official.items()}
    landed = [sources[id(tensor)] for tensor in state.values() if id(tensor) in sources]
    assert len(set(landed)) == len(landed) == len(own) - 1
    (first,) = [name for name, tensor in state.items() if id(tensor) not in sources]
    assert torch.equal(state[first], official[architecture.first_conv].flip(1))
    if name == "dla34_det":
        assert sorted(unused) == sorted(
            ["base.fc.weight", "base.fc.bias"]
            + [f"base.level{i}.project.{t}" for i in (3, 4) for t in ("0.weight", "1.weight", "1.bias")]
            + [f"base.level{i}.project.1.{t}" for i in (3, 4) for t in ("running_mean", "running_var", COUNTER)]
        )


def test_the_converted_model_reads_rgb_as_the_official_one_reads_bgr():
    official = official_state("resdcn18_det", seed=7)
    model = model_for("resdcn18_det")
    model.load_state_dict(pointdet_state(official, ARCHITECTURES["resdcn18"], model, "converted"))
    as_official = model_for("resdcn18_det")
    state = pointdet_state(official, ARCHITECTURES["resdcn18"], as_official, "official")
    state["backbone.stem.0.weight"] = official["conv1.weight"]
    as_official.load_state_dict(state)
    rgb = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        converted, expected = model(rgb), as_official(rgb.flip(1))
    for field in expected._fields:
        torch.testing.assert_close(getattr(converted, field), getattr(expected, field))


@pytest.mark.parametrize("name", ["dla34_det", "resdcn18_det", "dla34_pose", "resdcn18_3d"])
def test_converted_necks_and_heads_compute_the_official_arithmetic(name):
    """The up-sampler and head of the converted model against tests/official_reference.py on the official tensors:
    checks every index mapping (IDA ``proj_k``/``node_k``/``up_k``, the six-module deconv stages) numerically."""
    official = official_state(name, seed=1)
    model = model_for(name)
    model.load_state_dict(pointdet_state(official, ARCHITECTURES[name.split("_")[0]], model, name))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 96, generator=generator))
        (neck,) = model.neck(features)
        expected = (
            official_dla_neck(official, features)
            if name.startswith("dla")
            else official_resdcn_neck(official, features[-1])
        )
        torch.testing.assert_close(neck, expected, rtol=1e-4, atol=1e-5)
        outputs = model.head([neck])
        branches = {branch: head for head, branch in HEAD_BRANCHES.items()}
        for field in outputs._fields:
            head = branches[field]
            torch.testing.assert_close(
                getattr(outputs, field), official_head(official, head, expected), rtol=1e-4, atol=1e-5
            )
    assert neck.abs().mean() > 1e-2  # the random weights keep a signal to compare


@pytest.mark.parametrize("prefixed", [True, False])
def test_convert_writes_a_checkpoint_that_loads_with_the_official_head_maps(tmp_path, prefixed):
    official = official_state("dla34_det", seed=3, counters=not prefixed)  # files of PyTorch < 0.4.1: no counters
    saved = {("module." + key if prefixed else key): tensor for key, tensor in official.items()}
    torch.save({"epoch": 230, "state_dict": saved}, tmp_path / "ctdet_coco_dla_2x.pth")
    main(["convert", str(tmp_path / "ctdet_coco_dla_2x.pth"), "--from", "centernet", "--arch", "dla34", "--out",
          str(tmp_path / "run")])  # fmt: skip
    predictor = pointdet.load(tmp_path / "run", device="cpu")
    assert len(predictor.class_names) == 80 and predictor.class_names[0] == "person"
    assert predictor.category_ids[-1] == 90
    reference = model_for("dla34_det")
    reference.load_state_dict(pointdet_state(official, ARCHITECTURES["dla34"], reference, "reference"))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        converted, expected = predictor.model.eval()(x), reference(x)
    for field in expected._fields:
        torch.testing.assert_close(getattr(converted, field), getattr(expected, field), rtol=0, atol=0)
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    (detections,) = predictor.predict([image])
    assert len(detections) > 0 and torch.isfinite(detections.boxes).all()


def test_missing_unknown_and_reshaped_tensors_are_listed_in_one_message(tmp_path):
    official = official_state("resdcn18_det")
    del official["deconv_layers.0.bias"], official["layer1.0.bn1.running_mean"]
    official["deconv_layers.2.weight"] = torch.zeros(3)  # a ReLU position
    official["wh.2.weight"] = torch.zeros(4, 64, 1, 1)
    official["deconv_layers.6.offset_mask.bias"] = torch.zeros(27)  # lands where conv_offset_mask.bias lands
    torch.save({"epoch": 1, "state_dict": official}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as error:
        convert_centernet(tmp_path / "bad.pth", tmp_path / "run")
    message = str(error.value)
    for text in ("deconv_layers.2.weight", "neck.layers.0.0.bias", "backbone.layer1.0.bn1.running_mean",
                 "wh.2.weight (4, 64, 1, 1) -> head.size.2.weight (2, 64, 1, 1)",
                 "deconv_layers.6.conv_offset_mask.bias and deconv_layers.6.offset_mask.bias -> "
                 "neck.layers.4.0.offset_mask.bias"):  # fmt: skip
        assert text in message
    assert not (tmp_path / "run").exists()


def test_options_that_contradict_the_file_are_refused(tmp_path):
    torch.save({"epoch": 1, "state_dict": official_state("resdcn18_det")}, tmp_path / "r18.pth")
    with pytest.raises(ConversionError, match="--arch dla34, but the file holds a resdcn18 network"):
        convert_centernet(tmp_path / "r18.pth", tmp_path / "run", arch="dla34")
    with pytest.raises(ConversionError, match="--task pose, but the file holds a det network"):
        convert_centernet(tmp_path / "r18.pth", tmp_path / "run", task="pose")
    with pytest.raises(ConversionError, match="80 classes, --classes voc names 20"):
        convert_centernet(tmp_path / "r18.pth", tmp_path / "run", classes="voc")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing{i}\n" for i in range(80)))
    written = convert_centernet(tmp_path / "r18.pth", tmp_path / "run", classes=str(names))
    assert pointdet.load(written, device="cpu").class_names[79] == "thing79"


def test_a_converted_model_evaluates_and_exports(tiny_shapes, tmp_path, capsys):
    """``pointdet eval`` and ``pointdet export`` take a converted run (a 3-class ResNet-18 model named by a file)."""
    ort = pytest.importorskip("onnxruntime")
    official = official_state("resdcn18_det", seed=6)
    official["hm.2.weight"], official["hm.2.bias"] = official["hm.2.weight"][:3], official["hm.2.bias"][:3]
    torch.save({"epoch": 70, "state_dict": official}, tmp_path / "ctdet_shapes_resdcn18.pth")
    (tmp_path / "names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    run = str(tmp_path / "run")
    main(["convert", str(tmp_path / "ctdet_shapes_resdcn18.pth"), "--classes", str(tmp_path / "names.txt"),
          "--out", run])  # fmt: skip
    data = [f"data.val_json={tiny_shapes.val_json}", f"data.val_images={tiny_shapes.val_images}", "data.input_size=64"]
    main(["eval", "--weights", run, *data, "device=cpu"])
    assert "AP" in capsys.readouterr().out
    main(["export", "--weights", run, "--out", str(tmp_path / "m.onnx")])
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"images": np.zeros((1, 3, 64, 64), dtype=np.uint8)})
    assert boxes.shape == (1, 100, 4) and np.isfinite(scores).all() and labels.max() < 3


def test_pose_and_3d_models_convert_with_their_keypoints_classes_and_normalisation(tmp_path):
    torch.save({"epoch": 320, "state_dict": official_state("dla34_pose")}, tmp_path / "multi_pose_dla_3x.pth")
    pose = pointdet.load(convert_centernet(tmp_path / "multi_pose_dla_3x.pth", tmp_path / "pose"), device="cpu")
    assert pose.class_names == ["person"] and len(pose.keypoint_names) == 17
    official_flip_idx = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]  # coco_hp.py
    assert sorted(pose.model.postprocess.flip_pairs) == official_flip_idx
    torch.testing.assert_close(pose.model.pixel_mean.flatten() / 255, torch.tensor([0.470, 0.447, 0.408]))

    torch.save({"epoch": 70, "state_dict": official_state("resdcn18_3d")}, tmp_path / "ddd_3dop.pth")
    written = convert_centernet(tmp_path / "ddd_3dop.pth", tmp_path / "3d", arch="resdcn18", task="3d")
    mono3d = pointdet.load(written, device="cpu")
    assert mono3d.class_names == ["Pedestrian", "Car", "Cyclist"]
    assert (mono3d.input_height, mono3d.input_size) == (384, 1280)
    torch.testing.assert_close(mono3d.model.pixel_mean.flatten() / 255, torch.tensor([0.406, 0.456, 0.485]))
    torch.testing.assert_close(mono3d.model.pixel_std.flatten() / 255, torch.tensor([0.225, 0.224, 0.229]))


@pytest.mark.parametrize("task", ["det", "pose"])
def test_converted_hourglass_computes_the_official_arithmetic(task):
    """The whole Hourglass-104 network, on an RGB image against the official one on the same image in BGR."""
    official = official_state(f"hg104_{task}", seed=9)
    model = model_for(f"hg104_{task}")
    model.load_state_dict(pointdet_state(official, ARCHITECTURES["hg104"], model, "hg104"))
    rgb = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        features = model.backbone(rgb)
        expected = official_hourglass(official, rgb.flip(1))
        for feature, reference in zip(features, expected, strict=True):
            torch.testing.assert_close(feature, reference, rtol=1e-4, atol=1e-4)
        outputs = model.head(features)  # eval mode: the last stack's branches, as the official test
        branches = {branch: head for head, branch in HEAD_BRANCHES.items()}
        for field in outputs._fields:
            reference = official_stack_head(official, branches[field], 1, expected[-1])
            torch.testing.assert_close(getattr(outputs, field), reference, rtol=1e-4, atol=1e-4)
    assert features[-1].abs().mean() > 1e-2


def test_pascal_voc_models_convert_with_their_classes_size_and_normalisation(tmp_path):
    official = official_state("resdcn18_det", seed=11)
    official["hm.2.weight"], official["hm.2.bias"] = official["hm.2.weight"][:20], official["hm.2.bias"][:20]
    torch.save({"epoch": 70, "state_dict": official}, tmp_path / "ctdet_pascal_resdcn18_512.pth")
    main(["convert", str(tmp_path / "ctdet_pascal_resdcn18_512.pth"), "--input-size", "512", "--out",
          str(tmp_path / "voc")])  # fmt: skip
    voc = pointdet.load(tmp_path / "voc", device="cpu")
    assert voc.class_names[0] == "aeroplane" and voc.category_ids == list(range(1, 21)) and voc.input_size == 512
    torch.testing.assert_close(voc.model.pixel_std.flatten() / 255, torch.tensor([0.225, 0.224, 0.229]))
    coco = converted_config("resdcn18", "det", 64, "coco")
    assert coco.data.test_resize == "original" and coco.data.input_size == 512  # the official --keep_res test
