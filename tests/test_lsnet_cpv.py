"""LSNet-CPV: RepPoints v2's corner + foreground verification on the LSNet head (METHODS.md CARD 4 (d) 9): the head,
its targets and losses on a hand-made box, the fusion's gradients, joint inference in the LSNet decoder, the
configs and a CLI run."""

import pytest
import torch

from pointdet.configs import ConfigError, LSNetConfig, apply_overrides, get_preset
from pointdet.decoders.lsnet import LSNetPostprocess
from pointdet.models.heads.lsnet import LSNetCPVOutputs, LSNetHead, LSNetOutputs
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.lsnet_tasks import Contours
from pointdet.targets.reppoints_v2 import build_corner_targets, build_foreground_targets

STRIDES = (8, 16, 32)
BOX = [10.0, 18.0, 43.0, 51.0]  # on a 64 x 64 input: P3 8 x 8, P4 4 x 4, P5 2 x 2


def small_head(**verification):
    torch.manual_seed(0)
    return LSNetHead(16, num_classes=3, strides=STRIDES, tower="conv", channels=32, stacked_convs=1, **verification)


def features(batch=2, channels=16):
    return [torch.randn(batch, channels, 64 // s, 64 // s) for s in STRIDES]


def one_box(box=BOX):
    return Instances(torch.tensor([box]), torch.tensor([1]), torch.zeros(1, 0, 3))


CPV = {"corner_verification": True, "foreground_verification": True}


def test_cpv_head_outputs_losses_and_gradients_through_the_fusion():
    head = small_head(**CPV)
    outputs = head(features())
    assert isinstance(outputs, LSNetCPVOutputs)
    num_priors = 64 + 16 + 4
    assert outputs.corner_scores.shape == (2, num_priors, 2) and outputs.corner_offsets.shape == (2, num_priors, 4)
    assert outputs.foreground.shape == (2, num_priors, 3) and outputs.components_refine.shape == (2, num_priors, 5, 4)
    losses = head.loss(outputs, [one_box([12.0, 12.0, 30.0, 30.0]), Instances.empty()])  # near the untrained boxes
    verification = {"loss_corner_heatmap", "loss_corner_offset", "loss_foreground"}
    assert set(losses) == {"loss_cls", "loss_landmarks_init", "loss_landmarks_refine"} | verification
    assert all(torch.isfinite(value) for value in losses.values()), losses
    # (the untrained signed decode gives near-empty init boxes, so ATSS finds no refine positive: that term is 0)
    assert all(losses[name] > 0 for name in ("loss_cls", "loss_landmarks_init", *verification)), losses
    # The classifier's loss alone reaches both branches: the corner maps join its input, the embedding its tower.
    losses["loss_cls"].backward(retain_graph=True)
    for branch in (head.corners.scores[0], head.corners.offsets[1], head.foreground.embedding[0], head.shared[0]):
        assert branch.weight.grad.abs().sum() > 0
    assert head.foreground.score.weight.grad is None or head.foreground.score.weight.grad.abs().sum() == 0
    head.zero_grad()
    sum(losses[name] for name in verification).backward()
    for branch in (head.corners.scores[0], head.corners.offsets[0], head.foreground.score, head.shared[0]):
        assert branch.weight.grad.abs().sum() > 0


def test_verification_off_is_plain_lsnet_and_cpv_adds_only_its_branches():
    plain, off, cpv = small_head(), small_head(corner_verification=False), small_head(**CPV)
    shapes = {name: p.shape for name, p in plain.named_parameters()}
    assert shapes == {name: p.shape for name, p in off.named_parameters()}
    x = features(batch=1)
    torch.testing.assert_close(tuple(plain(x)), tuple(off(x)))
    assert (
        type(off(x)) is LSNetOutputs
        and off.loss(off(x), [one_box()]).keys() == plain.loss(plain(x), [one_box()]).keys()
    )
    added = {name: p.shape for name, p in cpv.named_parameters() if name not in shapes}
    assert {name.split(".")[0] for name in added} == {"shared", "foreground", "corners"}
    for name, shape in shapes.items():  # the landmark-feature convs read the tower + the 6 corner maps
        reads_towers = name.endswith(("level_conv.weight", "dcn_weight"))
        expected = (shape[0], shape[1] + 6, *shape[2:]) if reads_towers else shape
        assert dict(cpv.named_parameters())[name].shape == expected, name
    foreground_only = small_head(foreground_verification=True)
    assert foreground_only.corners is None and foreground_only.cls_refine.level_conv.weight.shape[1] == 32


def test_targets_and_losses_of_a_hand_made_box():
    """The box (10, 18, 43, 51): per level its corners' nearest locations are positive, with hand-computed offsets;
    the foreground fills its stride-8 cells with weight 1 / area; a perfect offset map costs 0, one off by 0.1 costs
    smooth-L1(0.1, beta 1/9) = 0.045 per coordinate."""
    priors, strides = level_points([(8, 8), (4, 4), (2, 2)], STRIDES, torch.device("cpu"))
    targets = build_corner_targets(priors, strides, [one_box()])

    def index(x, y, stride):
        start = {8: 0, 16: 64, 32: 80}[stride]
        return start + (y // stride) * (64 // stride) + x // stride

    top_left = {
        index(8, 16, 8): (0.25, 0.25),
        index(16, 16, 16): (-6 / 16, 2 / 16),
        index(0, 32, 32): (10 / 32, -14 / 32),
    }
    bottom_right = {
        index(40, 48, 8): (3 / 8, 3 / 8),
        index(48, 48, 16): (-5 / 16, 3 / 16),
        index(32, 32, 32): (11 / 32, 19 / 32),
    }
    for k, expected in enumerate((top_left, bottom_right)):
        assert targets.positive[0, :, k].nonzero().flatten().tolist() == sorted(expected)
        for i, offset in expected.items():
            torch.testing.assert_close(targets.offset[0, i, 2 * k : 2 * k + 2], torch.tensor(offset))
    target, weight = build_foreground_targets([one_box()], 3, (8, 8))
    assert target[0, 1].nonzero().tolist() == [[y, x] for y in range(2, 7) for x in range(1, 6)]
    assert target[0, [0, 2]].sum() == 0 and torch.allclose(weight[0, 1, 2, 1], torch.tensor(1 / 33**2))

    head = small_head(**CPV)
    base = head(features(batch=1))
    logits = torch.where(targets.heatmap == 1, 30.0, -30.0)
    perfect = LSNetCPVOutputs(*base[:5], logits, targets.offset, base.foreground)
    losses = head.verification_loss(perfect, [one_box()])
    assert losses["loss_corner_offset"] == 0 and losses["loss_corner_heatmap"] < 1e-6
    shifted = perfect._replace(corner_offsets=targets.offset + 0.1)
    # per corner: 3 positives x 2 coordinates x 0.045 / 3 positives, then the mean of the two corners
    torch.testing.assert_close(head.verification_loss(shifted, [one_box()])["loss_corner_offset"], torch.tensor(0.09))


def test_joint_inference_snaps_a_p4_box_corner_and_keeps_its_landmarks():
    """A P4 box with top-left (17, 9): on the P3 map its window is cells x {2, 3}, y {1, 2}; the peak at (3, 2) with
    offset (0.5, 0.25) moves the corner to ((3 + 0.5) x 8, (2 + 0.25) x 8) = (28, 18)."""
    priors, strides = level_points([(8, 8), (4, 4), (2, 2)], STRIDES, torch.device("cpu"))
    num_priors = len(priors)
    prior = 64 + 1 * 4 + 1  # P4 location (16, 16)
    landmarks = torch.tensor([[25.0, 9.0], [17.0, 30.0], [25.0, 40.0], [40.0, 30.0], [28.0, 24.0]])  # t, l, b, r, c
    vectors = landmarks - priors[prior]
    components = torch.full((1, num_priors, 5, 4), 1e-3)
    components[0, prior] = torch.stack([(-vectors[:, 1]).clamp(min=0), vectors[:, 1].clamp(min=0),
                                        (-vectors[:, 0]).clamp(min=0), vectors[:, 0].clamp(min=0)], dim=-1)  # fmt: skip
    scores = torch.full((1, num_priors, 3), -10.0)
    scores[0, prior, 1] = 5.0
    corner_scores = torch.full((1, num_priors, 2), -10.0)
    corner_scores[0, 2 * 8 + 3, 0] = 3.0  # P3 cell (x 3, y 2)
    corner_offsets = torch.zeros(1, num_priors, 4)
    corner_offsets[0, 2 * 8 + 3, :2] = torch.tensor([0.5, 0.25])
    outputs = LSNetCPVOutputs(
        scores, components, components, priors[None], strides[None], corner_scores, corner_offsets,
        torch.zeros(1, num_priors, 3),
    )  # fmt: skip
    plain = LSNetPostprocess()(outputs, image_size=(64, 64))[0]
    joint = LSNetPostprocess(joint_inference=True)(outputs, image_size=(64, 64))[0]
    torch.testing.assert_close(plain.boxes[0], torch.tensor([17.0, 9.0, 40.0, 40.0]))
    # bottom-right (40, 40) reads its own window on the -10 map: first of ties, cell (5, 5), offset 0 -> (40, 40)
    torch.testing.assert_close(joint.boxes[0], torch.tensor([28.0, 18.0, 40.0, 40.0]))
    torch.testing.assert_close(joint.landmarks[0], plain.landmarks[0])


def test_cpv_configs_and_presets():
    cpv = get_preset("lsnet_cpv_r50_fpn")
    assert (cpv.model.corner_verification, cpv.model.foreground_verification, cpv.model.joint_inference) == (True,) * 3
    assert (cpv.model.heatmap_weight, cpv.model.corner_offset_weight, cpv.model.foreground_weight) == (0.25, 1.0, 0.1)
    two_x = get_preset("lsnet_r50_fpn_2x_ms")
    assert two_x.optim.epochs == cpv.optim.epochs == 24 and two_x.optim.lr_steps == (16, 22)
    assert two_x.data.min_size == cpv.data.min_size == (480, 960) and two_x.data.max_size == 1333
    assert not get_preset("lsnet_r50_fpn").model.corner_verification
    with pytest.raises(ConfigError, match="need model.task=detection"):
        LSNetConfig(task="segmentation", foreground_verification=True)
    with pytest.raises(ConfigError, match="joint_inference=true needs the corner maps"):
        apply_overrides(cpv, ["model.corner_verification=false"])
    with pytest.raises(ValueError, match="detection variant"):
        LSNetHead(16, 3, strides=STRIDES, task=Contours(), tower="conv", channels=32, corner_verification=True)


def test_cli_lsnet_cpv_train_and_eval_without_joint_inference(tiny_shapes, tmp_path, capsys):
    """Two training steps of the CPV head on the tiny shapes, then evaluation with joint inference switched off."""
    from pointdet.cli import main

    from .helpers import tiny_data_overrides

    run = tmp_path / "run"
    cpv = ["model.corner_verification=true", "model.foreground_verification=true", "model.joint_inference=true"]
    tiny = [*tiny_data_overrides(tiny_shapes), "optim.batch_size=4", "optim.epochs=1", "device=cpu", "max_steps=2"]
    main(["train", "lsnet_shapes", *cpv, *tiny, f"run_dir={run}", "num_visualizations=0"])
    assert "AP50" in capsys.readouterr().out
    main(["eval", "--weights", str(run), "model.joint_inference=false"])
    assert "AP50" in capsys.readouterr().out
