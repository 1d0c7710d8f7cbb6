"""Per-scale valid box-size ranges of the ATSS / LSNet multi-scale test (METHODS.md CARD 4 (d) 8): each scale keeps
the boxes whose sqrt(area), in the pixels its network input has, lies in [low, high] (both included), before the
scales are merged (Duankaiwen/LSNet code/mmdet/models/detectors/lsnet.py ``aug_test_vote`` / ``remove_boxes``)."""

import argparse
import math

import pytest
import torch
from torch import nn

from pointdet.configs import EvalConfig
from pointdet.configs.overrides import apply_overrides
from pointdet.configs.presets import ATSS_TEST_BOX_RANGES, ATSS_TEST_SHORTER_SIDES, atss_multiscale_eval, get_preset
from pointdet.decoders.lsnet import LSNetPostprocess
from pointdet.decoders.tta import keep_box_sizes
from pointdet.engine.inference import predict_images
from pointdet.errors import ConfigError
from pointdet.structures import Detections

INF = math.inf


def _with_extreme_points(boxes: list[list[float]], scores: list[float]) -> Detections:
    """Box detections of class 0 with LSNet's extreme points (top, left, bottom, right: the edge midpoints)."""
    boxes = torch.tensor(boxes, dtype=torch.float32)
    x1, y1, x2, y2 = boxes.unbind(-1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    landmarks = torch.stack([torch.stack(pair, -1) for pair in ((cx, y1), (x1, cy), (cx, y2), (x2, cy))], 1)
    return Detections(boxes, torch.tensor(scores), torch.zeros(len(boxes), dtype=torch.long), landmarks=landmarks)


def test_keep_box_sizes_includes_both_ends():
    # sqrt(area): 63.50, 64, 96, 96.50, 200 (x 10, a thin box); [64, 96] keeps the 64 and the 96 px boxes.
    boxes = [[0, 0, 63, 64], [0, 0, 64, 64], [10, 10, 106, 106], [0, 0, 97, 96], [0, 0, 4000, 10]]
    detections = _with_extreme_points(boxes, [0.9, 0.8, 0.7, 0.6, 0.5])
    assert keep_box_sizes(detections, 64, 96).scores.tolist() == pytest.approx([0.8, 0.7])
    assert keep_box_sizes(detections, 96, INF).scores.tolist() == pytest.approx([0.7, 0.6, 0.5])
    kept = keep_box_sizes(detections, 0, 64)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8]) and kept.landmarks.shape == (2, 4, 2)


class HandMadeDetector(nn.Module):
    """A detector whose detections at each network input width are given by hand, in that input's pixels, with
    LSNet's post-processor (its ``merge_scales``: class-wise box voting, IoU 0.66)."""

    def __init__(self, per_width: dict[int, Detections]) -> None:
        super().__init__()
        self.per_width = per_width
        self.device_probe = nn.Parameter(torch.zeros(()))  # predict_images reads the device off the parameters
        self.postprocess = LSNetPostprocess()

    def predict(self, images: torch.Tensor, flip: bool = False, k: int = 100) -> list[Detections]:
        return [self.per_width[images.shape[-1]]] * len(images)


def _two_scale_detector() -> HandMadeDetector:
    # Scale 0.5 (128 px input): a 50 px, b 100 px, c 64 px. Scale 1 (256 px input): a' 100 px, b' 200 px, c' 128 px.
    # In the 256 px image: a = a' = [20, 20, 120, 120], b = b' = [40, 40, 240, 240], c = [0, 0, 128, 128] and c' the
    # same shifted by 4 px (IoU 124 / 132).
    half = _with_extreme_points([[0, 0, 64, 64], [10, 10, 60, 60], [20, 20, 120, 120]], [0.9, 0.8, 0.7])
    full = _with_extreme_points([[4, 0, 132, 128], [20, 20, 120, 120], [40, 40, 240, 240]], [0.6, 0.6, 0.5])
    return HandMadeDetector({128: half, 256: full})


def test_ranges_drop_boxes_by_their_size_at_each_scale_then_the_vote_merges_the_rest():
    model = _two_scale_detector()
    images = torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    ranges = ((64.0, INF), (0.0, 128.0))
    (merged,) = predict_images(model, images, scales=(0.5, 1.0), box_ranges=ranges)
    # Kept: c (64 px, the low end included) and b at 0.5; c' (128 px, the high end included) and a' at 1. Dropped:
    # a (50 px at 0.5, although 100 px in the 256 px image: sizes are measured at the scale) and b' (200 px).
    # c and c' vote: (0.9 [0, 0, 128, 128] + 0.6 [4, 0, 132, 128]) / 1.5, score 0.9; c' re-scored 0.6 (1 - 124/132)
    # = 0.036 < 0.05 is gone. b (0.7) and a' (0.6) overlap at IoU 0.15 and stay as they are.
    torch.testing.assert_close(merged.scores, torch.tensor([0.9, 0.7, 0.6]))
    expected = torch.tensor([[1.6, 0.0, 129.6, 128.0], [40.0, 40.0, 240.0, 240.0], [20.0, 20.0, 120.0, 120.0]])
    torch.testing.assert_close(merged.boxes, expected)
    torch.testing.assert_close(merged.landmarks, _with_extreme_points(expected.tolist(), [0.9, 0.7, 0.6]).landmarks)
    # Without the ranges a (0.8) survives (voted with a') and b' joins b: the filter is what changed the result.
    (unfiltered,) = predict_images(model, images, scales=(0.5, 1.0))
    torch.testing.assert_close(unfiltered.scores[:3], torch.tensor([0.9, 0.8, 0.7]))


def test_predict_images_refuses_ranges_that_do_not_fit_the_scales():
    model, images = _two_scale_detector(), torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"one \(low, high\) pair per test scale: 2 scale\(s\), 1 range\(s\)"):
        predict_images(model, images, scales=(0.5, 1.0), box_ranges=((0.0, INF),))
    with pytest.raises(ValueError, match=r"0 <= low < high, got \(96.0, 64.0\)"):
        predict_images(model, images, scales=(0.5, 1.0), box_ranges=((0.0, INF), (96.0, 64.0)))


@pytest.mark.parametrize("family", ["lsnet", "centernet"])
def test_untrained_models_run_two_scales_with_ranges(family):
    """End to end on a tiny untrained network: LSNet (its own box-voting merge) and CenterNet (soft-NMS merge)."""
    from pointdet.configs import CenterNetConfig, LSNetConfig
    from pointdet.models.build import build_model

    torch.manual_seed(0)
    if family == "lsnet":
        config = LSNetConfig(backbone="resnet18", channels=64, stacked_convs=1, tower="conv")
    else:
        config = CenterNetConfig(backbone="resnet18", head_conv=16, upsampler_conv="plain")
    model = build_model(config, 2, with_backbone_weights=False).eval()
    model.postprocess.score_threshold = 0.0
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        (everything,) = predict_images(model, images, scales=(1.0, 0.5), k=20)
        (only_first,) = predict_images(model, images, scales=(1.0, 0.5), k=20, box_ranges=((0, INF), (1e4, INF)))
        (first_alone,) = predict_images(model, images, scales=(1.0,), k=20, box_ranges=((0, INF),))
        (nothing,) = predict_images(model, images, scales=(1.0, 0.5), k=20, box_ranges=((1e4, INF), (1e4, INF)))
    assert 0 < len(everything) <= 20 and 0 < len(first_alone) <= 20
    # Nothing at scale 0.5 passes [1e4, inf]: the merge sees scale 1's detections only.
    torch.testing.assert_close(only_first.boxes, first_alone.boxes)
    torch.testing.assert_close(only_first.scores, first_alone.scores)
    assert nothing.boxes.shape == (0, 4) and nothing.scores.shape == (0,)
    if family == "lsnet":
        assert only_first.landmarks.shape == (len(only_first), 4, 2)


def test_eval_config_checks_the_ranges():
    config = EvalConfig(scales=(0.5, 1.0), scale_box_ranges=((96.0, INF), (0.0, 256.0)))
    assert config.scale_box_ranges[0] == (96.0, INF)
    with pytest.raises(ConfigError, match=r"^eval.scale_box_ranges=\[\[0.0, inf\]\]: must have one \[low, high\] pair"):
        EvalConfig(scales=(0.5, 1.0), scale_box_ranges=((0.0, INF),))
    with pytest.raises(
        ConfigError, match=r"^eval.scale_box_ranges=\[\[96.0, 64.0\]\]: must be a list of \[low, high\]"
    ):
        EvalConfig(scale_box_ranges=((96.0, 64.0),))
    with pytest.raises(ConfigError, match=r"^eval.scale_box_ranges=\[96.0, 64.0\]: must be a list of \[low, high\]"):
        EvalConfig(scales=(0.5, 1.0), scale_box_ranges=(96.0, 64.0))  # built in Python without the inner pair
    # As typed on the command line (YAML): inf and .inf are both infinity; a flat pair is refused.
    typed = apply_overrides(
        get_preset("lsnet_shapes"), ["eval.scales=[0.5,1]", "eval.scale_box_ranges=[[96,inf],[0,.inf]]"]
    )
    assert typed.eval.scale_box_ranges == ((96.0, INF), (0.0, INF))
    with pytest.raises(ConfigError, match=r"eval.scale_box_ranges=\[\[96.0\], \[64.0\]\]: must be a list"):
        apply_overrides(get_preset("lsnet_shapes"), ["eval.scales=[0.5,1]", "eval.scale_box_ranges=[96,64]"])


def test_atss_test_recipe_pairs_each_shorter_side_with_its_range():
    settings = atss_multiscale_eval(EvalConfig(), short_side=800)
    assert settings.flip and len(settings.scales) == len(settings.scale_box_ranges) == 12
    assert settings.scales == pytest.approx([side / 800 for side in ATSS_TEST_SHORTER_SIDES])
    assert settings.scales[0] == 0.5 and settings.scales[-1] == 2.25
    pairs = dict(zip(ATSS_TEST_SHORTER_SIDES, ATSS_TEST_BOX_RANGES, strict=True))
    assert pairs[400] == pairs[500] == (96, INF) and pairs[600] == pairs[640] == pairs[700] == (64, INF)
    assert pairs[900] == pairs[1000] == (0, INF) and pairs[1100] == pairs[1200] == (0, 256)
    assert pairs[1300] == pairs[1400] == (0, 192) and pairs[1800] == (0, 96)
    # The training presets keep the single-scale test: the periodic evaluation stays as fast.
    default = get_preset("lsnet_r50_fpn_2x_ms").eval
    assert default.scales == (1.0,) and default.scale_box_ranges == () and not default.flip


def _eval_args(**given) -> argparse.Namespace:
    args = {"flip": None, "scales": None, "scale_box_ranges": None, "atss_ms_test": False, "confusion_threshold": None}
    return argparse.Namespace(**{**args, **given})


def test_eval_command_line_settings():
    from pointdet.cli import _eval_settings, build_parser

    config = get_preset("lsnet_r50_fpn_2x_ms")  # keep-ratio test, shorter side 800
    settings = _eval_settings(config, _eval_args(atss_ms_test=True))
    assert settings.scales[-1] == 2.25 and settings.scale_box_ranges == ATSS_TEST_BOX_RANGES and settings.flip
    assert not _eval_settings(config, _eval_args(atss_ms_test=True, flip=False)).flip
    with pytest.raises(SystemExit, match="--atss-ms-test sets the scales"):
        _eval_settings(config, _eval_args(atss_ms_test=True, scales=(1.0,)))
    with pytest.raises(SystemExit, match="data.test_resize=letterbox: give --scales and --scale-box-ranges"):
        _eval_settings(get_preset("lsnet_shapes"), _eval_args(atss_ms_test=True))
    parsed = build_parser().parse_args(
        ["eval", "--weights", "w.pt", "--scales", "0.5,1", "--scale-box-ranges", "64:inf,0:256"]
    )
    settings = _eval_settings(config, parsed)
    assert settings.scales == (0.5, 1.0) and settings.scale_box_ranges == ((64.0, INF), (0.0, 256.0))
    with pytest.raises(ConfigError, match="must have one"):
        _eval_settings(config, _eval_args(scales=(0.5, 1.0), scale_box_ranges=((0.0, INF),)))
    with pytest.raises(SystemExit):  # argparse: "'64-inf' is not LOW:HIGH"
        build_parser().parse_args(["eval", "--weights", "w.pt", "--scale-box-ranges", "64-inf"])


def test_predict_command_refuses_ranges_before_loading_anything():
    from pointdet.cli import main

    with pytest.raises(SystemExit, match=r"^predict: --scale-box-ranges: .*2 scale\(s\), 1 range\(s\)"):
        main(["predict", "missing.jpg", "--weights", "missing.pt", "--scales", "0.5,1", "--scale-box-ranges", "0:inf"])


def test_cli_eval_and_predict_with_ranges(tiny_shapes, tmp_path, capsys):
    """Two training steps of LSNet on the tiny shapes, then ``pointdet eval`` with ranges from the flags, from the
    config and from ``--atss-ms-test``, and ``pointdet predict`` with ranges."""
    from pointdet.cli import main

    from .helpers import tiny_data_overrides

    run = tmp_path / "run"
    tiny = [*tiny_data_overrides(tiny_shapes), "optim.batch_size=4", "optim.epochs=1", "device=cpu", "max_steps=2"]
    main(["train", "lsnet_shapes", *tiny, f"run_dir={run}", "num_visualizations=0"])
    capsys.readouterr()
    main(["eval", "--weights", str(run), "--scales", "0.5,1", "--scale-box-ranges", "16:inf,0:48"])
    assert ", scales 0.5,1.0, per-scale box ranges)" in capsys.readouterr().out
    main(["eval", "--weights", str(run), "eval.scales=[0.5,1]", "eval.scale_box_ranges=[[16,inf],[0,48]]"])
    assert ", scales 0.5,1.0, per-scale box ranges)" in capsys.readouterr().out
    # The ATSS test's 12 shorter sides as factors of a keep-ratio test at 4000 px: every pass at the 32 px minimum.
    keep_ratio = ["data.test_resize=keep_ratio", "data.test_min_size=4000", "data.max_size=64"]
    main(["eval", "--weights", str(run), "--atss-ms-test", *keep_ratio])
    assert "(flip, scales 0.1,0.125,0.15,0.16,0.175" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"^config error: eval.scale_box_ranges=\[\[0.0, 48.0\]\]: must have one"):
        main(["eval", "--weights", str(run), "--scales", "0.5,1", "--scale-box-ranges", "0:48"])
    image = tiny_shapes.val_images / "000001.png"
    out = tmp_path / "p"
    main(["predict", str(image), "--weights", str(run), "--out", str(out), "--scales", "0.5,1", "--scale-box-ranges",
          "16:inf,0:48"])  # fmt: skip
    assert (out / "detections.json").is_file()
