"""The papers' remaining details: the code's 3D loss normalisation, CenterNet on stacked hourglasses, starting a
run from another run's weights, and every preset's model."""

import math

import pytest
import torch
import torch.nn.functional as F

from pointdet.configs import PRESETS, CenterNetConfig, get_preset
from pointdet.decoders.mono3d import decode_depth
from pointdet.engine.checkpoint import save_checkpoint
from pointdet.models import build as build_module
from pointdet.models.backbones.hourglass import Hourglass
from pointdet.models.backbones.weights import WeightsError
from pointdet.models.build import build_model
from pointdet.models.detector import Detector
from pointdet.models.heads import CenterNetHead, Mono3DHead, StackedHead
from pointdet.models.heads.mono3d import Mono3DOutputs
from pointdet.models.init_from import initialise_from
from pointdet.ops.gather import gather_at
from pointdet.structures import Instances
from pointdet.targets.centernet import build_centernet_targets
from pointdet.targets.mono3d import build_mono3d_targets

# ------------------------------------------------------------------------- 3D loss normalisation (App. A #3)

SLOTS = 50  # the code's max_objs for KITTI


def _scene(boxes: list[list[float]], labels: list[int]) -> Instances:
    """Objects with KITTI cuboids ``(h, w, l, x, y, z, rotation_y, alpha)`` of varied depth and heading."""
    n = len(boxes)
    cuboids = torch.tensor(
        [[1.5, 1.6, 3.9 + i, -2.0 + i, 1.6, 12.0 + 7 * i, 0.3 * i, -2.5 + 1.7 * i] for i in range(n)]
    )
    return Instances(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.long),
        torch.zeros(n, 0, 3),
        boxes3d=cuboids.reshape(-1, 8),
    )


def _padded(values: torch.Tensor) -> torch.Tensor:
    """(B, M, D) slots -> the code's (B, 50, D), empty slots zero."""
    out = values.new_zeros(values.shape[0], SLOTS, values.shape[-1])
    out[:, : values.shape[1]] = values
    return out


def _code_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet ``losses.py L1Loss``: ``l1_loss(pred * mask, target * mask, reduction='elementwise_mean')``."""
    mask = mask.expand_as(pred)
    return F.l1_loss(pred * mask, target * mask, reduction="mean")


def _code_rotation(rotation: torch.Tensor, bins: torch.Tensor, residuals: torch.Tensor, mask: torch.Tensor):
    """CenterNet ``compute_rot_loss`` on (B, 50, .) slots: bin cross-entropy over every slot (zeroed logits in the
    empty ones), smooth-L1 residuals over the active bins."""
    output, bins, residuals = (rotation * mask).view(-1, 8), bins.view(-1, 2), residuals.view(-1, 2)
    loss = F.cross_entropy(output[:, 0:2], bins[:, 0]) + F.cross_entropy(output[:, 4:6], bins[:, 1])
    for which, (sin, cos) in enumerate(((2, 3), (6, 7))):
        active = bins[:, which].nonzero()[:, 0]
        loss = loss + F.smooth_l1_loss(output[active, sin], residuals[active, which].sin())
        loss = loss + F.smooth_l1_loss(output[active, cos], residuals[active, which].cos())
    return loss


def test_mono3d_terms_are_divided_by_all_slots_as_the_code_or_by_objects_on_request():
    torch.manual_seed(0)
    batch, classes, shape = 3, 2, (24, 32)
    instances = [
        _scene([[4, 8, 40, 60], [50, 10, 90, 50], [70, 40, 120, 90]], [0, 1, 1]),
        _scene([[20, 20, 60, 80]], [1]),
        _scene([], []),
    ]
    channels = (classes, 2, 2, 1, 3, 8)
    outputs = Mono3DOutputs(*(torch.randn(batch, c, *shape) for c in channels))
    losses = Mono3DHead(8, classes, head_conv=8).loss(outputs, instances)
    objects = Mono3DHead(8, classes, head_conv=8, normalisation="objects").loss(outputs, instances)

    targets = build_centernet_targets(instances, classes, shape, 4)
    cuboids = build_mono3d_targets(instances, targets)
    mask = _padded(targets.mask[..., None].float())
    depth = decode_depth(gather_at(outputs.depth, targets.index))
    close = {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(losses["loss_depth"], _code_l1(_padded(depth), _padded(cuboids.depth), mask), **close)
    dimensions = _padded(gather_at(outputs.dimensions, targets.index))
    torch.testing.assert_close(
        losses["loss_dimensions"], _code_l1(dimensions, _padded(cuboids.dimensions), mask), **close
    )
    size = _code_l1(_padded(gather_at(outputs.size, targets.index)), _padded(targets.size), mask)
    torch.testing.assert_close(losses["loss_size"], 0.1 * size, **close)  # trains/ddd.py: L1Loss for wh too
    offset = _code_l1(_padded(gather_at(outputs.offset, targets.index)), _padded(targets.offset), mask)
    torch.testing.assert_close(losses["loss_offset"], offset, **close)
    rotation = _padded(gather_at(outputs.rotation, targets.index))
    code = _code_rotation(rotation, _padded(cuboids.bins), _padded(cuboids.residuals), mask)
    empty = batch * SLOTS - 4  # the code's empty slots add log 2 per bin each (zeroed logits): no gradient
    torch.testing.assert_close(losses["loss_rotation"], code - 2 * math.log(2) * empty / (batch * SLOTS), **close)

    # ``objects``: the 2D heads' division by the 4 real objects, 150 / 4 times heavier here.
    expected = (depth - cuboids.depth).abs().mul(targets.mask[..., None]).sum() / 4
    torch.testing.assert_close(objects["loss_depth"], expected, rtol=1e-4, atol=0)
    ratio = (objects["loss_dimensions"] / losses["loss_dimensions"]).item()
    assert ratio == pytest.approx(batch * SLOTS / 4, rel=1e-4)
    assert objects["loss_heatmap"] == losses["loss_heatmap"]


def test_mono3d_normalisation_is_a_config_field():
    assert CenterNetConfig().mono3d_normalisation == "slots"
    model = build_model(CenterNetConfig(task="mono3d", mono3d_normalisation="objects"), num_classes=1)
    assert model.head.normalisation == "objects"


# --------------------------------------------------------------------- CenterNet on a stacked hourglass


def test_stacked_head_supervises_every_stack_and_predicts_with_the_last():
    torch.manual_seed(0)
    heads = [CenterNetHead(16, 3, head_conv=8) for _ in range(2)]
    stacked = StackedHead(heads)
    features = [torch.randn(2, 16, 16, 16), torch.randn(2, 16, 16, 16)]
    instances = [
        Instances(torch.tensor([[4.0, 6.0, 30.0, 40.0]]), torch.tensor([1]), torch.zeros(1, 0, 3)),
        Instances(
            torch.tensor([[10.0, 8.0, 50.0, 60.0], [0.0, 0.0, 20.0, 12.0]]), torch.tensor([0, 2]), torch.zeros(2, 0, 3)
        ),
    ]
    outputs = stacked.train()(features)
    assert type(outputs) is type(heads[0]([features[0]])) and outputs.heatmap.shape == (4, 3, 16, 16)
    losses = stacked.loss(outputs, instances)
    each = [head.loss(head([feature]), instances) for head, feature in zip(heads, features, strict=True)]
    for name, value in losses.items():  # trains/ctdet.py: every term / num_stacks
        torch.testing.assert_close(value, (each[0][name] + each[1][name]) / 2)
    sum(losses.values()).backward()
    for name, parameter in stacked.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    last = stacked.eval()(features)
    assert last.heatmap.shape == (2, 3, 16, 16)
    torch.testing.assert_close(last.heatmap, heads[1]([features[1]]).heatmap)
    assert set(stacked.loss(last, instances)) == set(losses)  # a validation loss reads the last stack


def test_centernet_pose_on_a_two_stack_hourglass_trains_and_predicts(monkeypatch):
    def two_small_stacks() -> Hourglass:
        return Hourglass(num_stacks=2, dims=(32, 48, 64), modules=(1, 1, 1), stem_channels=16, out_channels=32)

    monkeypatch.setitem(build_module.HOURGLASSES, "hourglass_small", two_small_stacks)
    torch.manual_seed(0)
    config = CenterNetConfig(backbone="hourglass_small", task="pose")
    model = build_model(config, num_classes=1, num_joints=4, flip_pairs=[(1, 3)])
    assert isinstance(model.head, StackedHead) and len(model.head.stacks) == 2 and model.neck is None
    assert model.head.stacks[0].heatmap[0].out_channels == 32  # the stack's channels, as the code's kp layers
    images = torch.randint(0, 255, (2, 3, 64, 80), dtype=torch.uint8)
    keypoints = torch.tensor([[[10.0, 8.0, 2.0], [30.0, 20.0, 2.0], [20.0, 40.0, 2.0], [8.0, 20.0, 1.0]]])
    gt = [Instances(torch.tensor([[6.0, 6.0, 34.0, 44.0]]), torch.tensor([0]), keypoints), Instances.empty(4)]
    losses = model.loss(images, gt)
    assert "loss_joints" in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for s in range(2):
        assert model.head.stacks[s].joints[-1].weight.grad.abs().sum() > 0
    detections = model.eval().predict(images, flip=True, k=5)
    assert len(detections) == 2 and detections[0].keypoints.shape == (5, 4, 3)


# ---------------------------------------------------------------------------------- model.init_from


def _save_run(folder, model) -> None:
    save_checkpoint({"model": model.state_dict(), "config": {}, "class_names": ["a", "b", "c"]}, folder / "last.pt")


def test_init_from_a_detection_run_starts_pose_with_fresh_heads_where_shapes_differ(tmp_path, caplog):
    torch.manual_seed(0)
    detector = build_model(CenterNetConfig(backbone="resnet18"), num_classes=3)
    _save_run(tmp_path / "run", detector)
    caplog.set_level("INFO", logger="pointdet.models.init_from")
    config = CenterNetConfig(backbone="resnet18", task="pose", init_from=str(tmp_path / "run"))
    pose = build_model(config, num_classes=1, num_joints=4)
    trained, started = detector.state_dict(), pose.state_dict()
    torch.testing.assert_close(started["backbone.stem.0.weight"], trained["backbone.stem.0.weight"])
    torch.testing.assert_close(started["head.size.0.weight"], trained["head.size.0.weight"])
    assert started["head.heatmap.2.weight"].shape == (1, 64, 1, 1)  # another class count: fresh
    report = caplog.text
    assert f"model.init_from: {tmp_path / 'run' / 'last.pt'}: loaded " in report
    assert "2 re-initialised, another shape there: head.heatmap.2.weight (3, 64, 1, 1) -> (1, 64, 1, 1)" in report
    assert "re-initialised, not in the file: head.joints.0.weight" in report
    # Rebuilding a trained model (pointdet.load, eval) never reads the other run again.
    (tmp_path / "run" / "last.pt").unlink()
    build_model(config, num_classes=1, num_joints=4, with_backbone_weights=False)


def test_init_from_reports_what_it_loaded(tmp_path):
    model = build_model(CenterNetConfig(backbone="resnet18"), num_classes=2)
    report = initialise_from(build_model(CenterNetConfig(backbone="resnet18"), num_classes=2), _saved(tmp_path, model))
    assert not report.reshaped and not report.missing and not report.unused
    assert len(report.loaded) == len(model.state_dict())


def _saved(tmp_path, model):
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)  # a plain state dict works too
    return path


def test_init_from_errors_are_one_line(tmp_path):
    torch.save({"foo": torch.zeros(3)}, tmp_path / "foreign.pt")
    model = build_model(CenterNetConfig(backbone="resnet18"), num_classes=2)
    with pytest.raises(WeightsError, match="foreign.pt: not one tensor fits this model"):
        initialise_from(model, tmp_path / "foreign.pt")
    with pytest.raises(WeightsError, match=r"model.init_from: .*nowhere/last.pt: weights file not found"):
        (tmp_path / "nowhere").mkdir()
        initialise_from(model, tmp_path / "nowhere")


def test_cli_init_from_a_missing_run_is_one_line(tiny_shapes, tmp_path):
    from pointdet.cli import main

    from .helpers import tiny_data_overrides

    overrides = [*tiny_data_overrides(tiny_shapes), "device=cpu", "optim.batch_size=4", f"out_dir={tmp_path}"]
    overrides.append("model.init_from=nope.pt")
    with pytest.raises(SystemExit, match="^error: model.init_from: nope.pt: weights file not found$"):
        main(["train", "centernet_r18", *overrides])


# ------------------------------------------------------------------------------------- every preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_its_model(name):
    config = get_preset(name)
    joints = 4 if config.model.task == "pose" else 0
    model = build_model(config.model, num_classes=2, num_joints=joints, flip_pairs=[(1, 3)] if joints else ())
    assert isinstance(model, Detector)
    if config.model.backbone == "hourglass104" and isinstance(config.model, CenterNetConfig):
        assert isinstance(model.head, StackedHead) and len(model.head.stacks) == 2
        assert model.backbone.size_divisor == 128
        assert model.head.stacks[-1].heatmap[0].out_channels == 256
        assert 185e6 < sum(p.numel() for p in model.parameters()) < 200e6  # the paper's ~190 M


def test_schedules_of_the_new_presets():
    hourglass = get_preset("centernet_hg104").optim
    assert (hourglass.lr, hourglass.base_batch, hourglass.epochs, hourglass.lr_steps) == (2.5e-4, 29, 50, (40,))
    pose = get_preset("centernet_pose_hg104")
    assert pose.model.task == "pose" and (pose.optim.epochs, pose.optim.lr_steps, pose.optim.base_batch) == (
        150,
        (130,),
        24,
    )
    two_x = get_preset("centernet_dla34_2x").optim
    assert (two_x.epochs, two_x.lr_steps) == (230, (180, 210))
    assert "36.3" in PRESETS["centernet_dla34"].__doc__ and "37.4" in PRESETS["centernet_dla34_2x"].__doc__
