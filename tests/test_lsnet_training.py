"""LSNet end to end: overfitting a few shapes images, the CLI / API / export, and the config family."""

import json
from dataclasses import replace

import pytest
import torch

from pointdet.configs import ConfigError, LSNetConfig, apply_overrides, get_preset
from pointdet.models.build import build_model

from .helpers import overfit_four_shapes

SMALL = LSNetConfig(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False, tower="conv")


@pytest.mark.slow  # 62 s on the 2-core CPU with niced jobs beside it (14 min when it shared the cores), 2026-11-30
def test_lsnet_overfits_four_shapes_images(tmp_path):
    """The extreme points come from the shapes' polygons."""
    history, metrics = overfit_four_shapes(SMALL, tmp_path, with_polygons=True)
    assert history[-1] < 0.1 * history[0], history[::10]
    assert metrics["AP"] >= 0.9, metrics


@pytest.mark.slow  # 64 s on the 2-core CPU, 2026-11-30: box AP 0.902, mask AP 0.918 (loss 3.16 -> 0.15)
def test_lsnet_contours_overfit_four_shapes_images(tmp_path):
    """Instance segmentation by 36 contour points: boxes and polygon masks of 4 images learnt."""
    config = replace(SMALL, task="segmentation")
    history, metrics = overfit_four_shapes(config, tmp_path, with_polygons=True)
    print(f"loss {history[0]:.3f} -> {history[-1]:.3f}; box AP {metrics['AP']:.3f}, mask AP {metrics['segm_AP']:.3f}")
    assert history[-1] < 0.2 * history[0], history[::10]
    assert metrics["segm_AP"] >= 0.85 and metrics["AP"] >= 0.85, metrics


def test_cli_lsnet_train_eval_predict_and_api(tiny_shapes, tmp_path, capsys):
    """Two training steps, then eval with a decode option and the flip test, predict and the Python API."""
    import pointdet
    from pointdet.cli import main

    from .helpers import cli_train_tiny

    run, image, out = tmp_path / "run", tiny_shapes.val_images / "000001.png", tmp_path / "p"
    cli_train_tiny("lsnet_shapes", tiny_shapes, run)
    assert "AP50" in capsys.readouterr().out
    results = tmp_path / "r.json"
    main(["eval", "--weights", str(run), "--results", str(results), "--flip", "model.score_threshold=0.01"])
    assert "(flip)" in capsys.readouterr().out and isinstance(json.loads(results.read_text()), list)
    main(["predict", str(image), "--weights", str(run), "--out", str(out), "--score-threshold", "0"])
    assert [path.suffix for path in out.iterdir()].count(".jpg") == 1 and (out / "detections.json").is_file()
    predictor = pointdet.load(run, device="cpu")
    predictor.model.postprocess.score_threshold = 0.0  # two steps leave every score near the 0.01 prior
    detections = predictor.predict(image, flip=True)[0]
    assert 0 < len(detections) <= 100 and detections.boxes.shape[1:] == (4,)
    assert detections.landmarks.shape == (len(detections), 4, 2) and detections.contours is None  # extreme points


def test_lsnet_exports_to_onnx_with_dcn_towers(tmp_path):
    """The DCNv2 towers and the pyramid DCN trace to grid_sample; the graph gives ``batched``'s candidates."""
    ort = pytest.importorskip("onnxruntime")
    from pointdet.export import export_onnx

    torch.manual_seed(0)
    config = LSNetConfig(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False, tower="dcn")
    model = build_model(config, 3).eval()
    torch.nn.init.normal_(model.head.cls_refine.out.weight, std=2.0)  # scores spread over (0, 1)
    path = tmp_path / "lsnet.onnx"
    assert export_onnx(model, path, 64, 64) == ["boxes", "scores", "labels"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randint(0, 256, (2, 3, 160, 192), dtype=torch.uint8)
    boxes, scores, labels = (torch.from_numpy(a) for a in session.run(None, {"images": images.numpy()}))
    with torch.no_grad():
        expected = model.postprocess.batched(model(model.preprocess(images)), k=1000)
    torch.testing.assert_close(scores, expected.scores, rtol=0, atol=1e-4)
    top = scores[:, :50] > scores[:, 50:51] + 1e-4  # away from near-ties, the rows match one to one
    torch.testing.assert_close(boxes[:, :50][top], expected.boxes[:, :50][top], rtol=0, atol=1e-2)
    assert torch.equal(labels[:, :50][top], expected.labels[:, :50][top])


def test_the_lsnet_section_is_checked_against_its_family():
    switched = apply_overrides(get_preset("reppoints_shapes"), ["model.method=lsnet", "model.tower=dcn"])
    assert isinstance(switched.model, LSNetConfig) and switched.model.tower == "dcn"
    with pytest.raises(ConfigError, match="'model.transform' for method=lsnet"):
        apply_overrides(get_preset("lsnet_shapes"), ["model.transform=minmax"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        LSNetConfig(channels=48)
    with pytest.raises(ConfigError, match="deformable"):
        apply_overrides(get_preset("lsnet_shapes"), ["model.tower=deformable"])
    assert get_preset("lsnet_r50_fpn").model.nms_iou == 0.6 and get_preset("lsnet_r50_fpn").optim.epochs == 12


def test_cli_lsnet_segm_train_eval_predict(tiny_shapes, tmp_path, capsys):
    """The contour task end to end: eval reports mask AP, predict writes RLE masks and contours to its JSON."""
    import pointdet
    from pointdet.cli import main

    from .helpers import cli_train_tiny

    run, image, out = tmp_path / "run", tiny_shapes.val_images / "000001.png", tmp_path / "p"
    cli_train_tiny("lsnet_segm_shapes", tiny_shapes, run)
    capsys.readouterr()
    results = tmp_path / "r.json"
    main(["eval", "--weights", str(run), "--results", str(results), "model.score_threshold=0.0"])
    printed = capsys.readouterr().out
    assert "masks:" in printed and (tmp_path / "r_segm.json").is_file(), printed
    main(["predict", str(image), "--weights", str(run), "--out", str(out), "--score-threshold", "0"])
    assert (out / "000001.jpg").is_file() and (out / "detections.json").is_file()
    predictor = pointdet.load(run, device="cpu")
    predictor.model.postprocess.score_threshold = 0.0  # two steps leave every score near the 0.01 prior
    detections = predictor.predict(image)[0]
    assert len(detections) > 0 and detections.contours.shape == (len(detections), 36, 2)
    assert detections.masks is None and detections.landmarks is None
