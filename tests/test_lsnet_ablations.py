"""LSNet's ablation switches (the paper's Tables 2 and 3): the first stage's loss (cross-IoU on the extreme points,
smooth-L1 on the extreme points, GIoU on their box), first-stage decoding, and the landmark features (none / one
level / pyramid)."""

import pytest
import torch

from pointdet.configs import ConfigError, LSNetConfig, apply_eval_overrides, apply_overrides, get_preset
from pointdet.decoders.lsnet import LSNetPostprocess
from pointdet.losses.cross_iou import softened_targets
from pointdet.models.build import build_model
from pointdet.models.heads.lsnet import LSNetHead, LSNetOutputs
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.lsnet import extreme_landmarks

from .test_lsnet import features_of

SIZES, STRIDES = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], [8, 16, 32, 64, 128]
BOX = torch.tensor([[12.0, 10.0, 52.0, 50.0]])  # 40 x 40 px: the point assigner's level 3, stride 8


def regressing(landmarks: torch.Tensor, shift: float) -> LSNetOutputs:
    """Outputs whose every prior regresses ``landmarks`` (V, 2) moved right by ``shift`` px, in both stages."""
    priors, strides = level_points(SIZES, STRIDES)
    moved = landmarks + torch.tensor([shift, 0.0])
    components = softened_targets(moved[None] - priors[:, None])[None]  # (1, P, V, 4)
    scores = torch.zeros(1, len(priors), 2)
    return LSNetOutputs(scores, components, components, priors[None], strides[None])


def init_loss_of(kind: str, shift: float) -> float:
    head = LSNetHead(32, 2, channels=32, stacked_convs=1, tower="conv", init_loss=kind)
    gt = Instances(BOX, torch.tensor([1]), torch.zeros(1, 0, 3))
    return head.loss(regressing(extreme_landmarks(gt)[0], shift), [gt])["loss_landmarks_init"].item()


def test_first_stage_losses_hand_computed():
    """A perfect first stage costs 0 under every loss; shifted 2 px right (one positive at stride 8): smooth-L1
    (beta 0.11) of 2 / 32 on the 4 extremes' x, and 1 - IoU of two 40 px boxes 2 px apart (GIoU = IoU here)."""
    for kind in ("cross_iou", "smooth_l1", "giou"):
        assert init_loss_of(kind, 0.0) == pytest.approx(0.0, abs=1e-6), kind
    offset = 2 / (4 * 8)
    assert init_loss_of("smooth_l1", 2.0) == pytest.approx(4 * 0.5 * offset**2 / 0.11, rel=1e-5)
    assert init_loss_of("giou", 2.0) == pytest.approx(1 - 38 / 42, rel=1e-5)
    assert init_loss_of("cross_iou", 2.0) > 0


@pytest.mark.parametrize("kind", ["smooth_l1", "giou"])
def test_first_stage_alternatives_train_the_init_vectors(kind):
    torch.manual_seed(0)
    head = LSNetHead(32, 2, channels=32, stacked_convs=1, tower="conv", init_loss=kind)
    gt = Instances(torch.tensor([[10.0, 12.0, 70.0, 50.0]]), torch.tensor([0]), torch.zeros(1, 0, 3))
    losses = head.loss(head(features_of(64, 96)), [gt, Instances.empty()])
    assert all(torch.isfinite(value) for value in losses.values()) and losses["loss_landmarks_init"] > 0
    losses["loss_landmarks_init"].backward()
    assert head.init_out.weight.grad.abs().sum() > 0


def test_first_stage_decoding_reads_the_init_vectors():
    """``decode_stage=init``: perfect init vectors give the GT box whatever the refine stage says."""
    gt = Instances(BOX, torch.tensor([1]), torch.zeros(1, 0, 3))
    perfect = regressing(extreme_landmarks(gt)[0], 0.0)
    scores = torch.full_like(perfect.scores, -10.0)
    scores[0, 27, 1] = 5.0
    outputs = perfect._replace(scores=scores, components_refine=torch.full_like(perfect.components_refine, 0.1))
    (first,) = LSNetPostprocess(stage="init")(outputs)
    torch.testing.assert_close(first.boxes, BOX)
    (refined,) = LSNetPostprocess()(outputs)
    assert not torch.allclose(refined.boxes, BOX)


@pytest.mark.parametrize("mode", ["none", "single", "pyramid"])
def test_landmark_features_options(mode):
    """``none`` reads no landmark: the scores do not depend on the init vectors; one level or the pyramid do."""
    torch.manual_seed(0)
    head = LSNetHead(32, 2, channels=64, stacked_convs=1, tower="conv", landmark_features=mode).eval()
    features = features_of(64, 64, batch=1)
    with torch.no_grad():
        before = head(features).scores
        head.init_out.bias[:20] += 3.0  # longer init vectors: the landmark DCN samples elsewhere
        after = head(features).scores
    assert hasattr(head.cls_refine, "dcn_weight") == (mode != "none")
    assert torch.equal(before, after) == (mode == "none")


def test_ablation_config_keys():
    config = apply_overrides(
        get_preset("lsnet_shapes"), ["model.init_loss=giou", "model.landmark_features=none", "model.decode_stage=init"]
    )
    model = build_model(config.model, 3, with_backbone_weights=False)
    assert model.head.init_loss == "giou" and model.head.cls_refine.mode == "none" and model.postprocess.stage == "init"
    assert apply_eval_overrides(config, ["model.decode_stage=refine"]).model.decode_stage == "refine"
    with pytest.raises(ConfigError, match="task=detection"):
        LSNetConfig(task="segmentation", init_loss="smooth_l1")
    with pytest.raises(ConfigError, match="init_loss"):
        apply_overrides(get_preset("lsnet_shapes"), ["model.init_loss=l1"])
    with pytest.raises(ConfigError, match="landmark_features"):
        apply_overrides(get_preset("lsnet_shapes"), ["model.landmark_features=double"])
