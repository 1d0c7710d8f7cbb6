"""ONNX export: the graph with its decoder runs in onnxruntime and matches PyTorch, at any batch and size."""

import numpy as np
import pytest
import torch
from torch import nn

from pointdet.configs import CenterNetConfig, CornerConfig
from pointdet.export import export_onnx
from pointdet.models.build import build_model

ort = pytest.importorskip("onnxruntime")


def distinct_scores(model):
    """Random heatmap weights wide enough that no two peaks tie (runtimes may order ties differently)."""
    torch.manual_seed(0)
    nn.init.normal_(model.head.heatmap[-1].weight, std=0.5)
    return model.eval()


def assert_same_detections(onnx: dict, dets, names) -> None:
    """The peaks (score > 0) equal and in the same order; the rest of the top-100 are zero-score fillers
    (positions that are not local maxima), whose order between equal zeros is arbitrary."""
    peaks = int((dets.scores > 0).sum())
    assert peaks >= 10 and (onnx["scores"][peaks:] == 0).all()
    assert onnx["labels"][:peaks].tolist() == dets.labels[:peaks].tolist()
    np.testing.assert_allclose(onnx["scores"], dets.scores.numpy(), rtol=1e-4, atol=1e-6)
    for name in names:
        np.testing.assert_allclose(onnx[name][:peaks], getattr(dets, name)[:peaks].numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("task", "extra"), [("detection", []), ("pose", ["keypoints"]), ("mono3d", ["mono3d"])])
def test_onnx_matches_pytorch_with_dynamic_batch_and_size(tmp_path, task, extra):
    joints, pairs = (4, [(1, 3)]) if task == "pose" else (0, [])
    model = distinct_scores(build_model(CenterNetConfig(backbone="resnet18", task=task), 3, joints, pairs))
    path = tmp_path / "model.onnx"
    names = export_onnx(model, path, 128, 128)
    assert names == ["boxes", "scores", "labels", *extra]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, height, width in ((1, 128, 128), (3, 160, 96)):
        images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8)
        outputs = dict(zip(names, session.run(None, {"images": images.numpy()}), strict=True))
        expected = model.predict(images)  # the PyTorch path users call, per image
        assert outputs["boxes"].shape == (batch, 100, 4)
        for b, dets in enumerate(expected):
            assert_same_detections({name: value[b] for name, value in outputs.items()}, dets, ["boxes", *extra])


def test_export_refuses_corner_detectors(tmp_path):
    model = build_model(CornerConfig(method="centripetalnet", backbone="hourglass_small"), 2)
    with pytest.raises(ValueError, match="soft-NMS"):
        export_onnx(model, tmp_path / "m.onnx", 64, 64)


def test_cli_export(tiny_shapes, tmp_path, capsys):
    from pointdet.cli import main

    from .helpers import cli_train_tiny

    run = tmp_path / "run"
    cli_train_tiny("centernet_r18", tiny_shapes, run)
    main(["export", "--weights", str(run), "--out", str(tmp_path / "m.onnx")])
    assert "outputs boxes, scores, labels" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"images": np.zeros((2, 3, 64, 96), dtype=np.uint8)})
    assert boxes.shape == (2, 100, 4) and scores.shape == labels.shape == (2, 100)
