"""The FCOS peer is torchvision's FCOS: on the same backbone, FPN and weights it gives torchvision's losses and
detections, and it trains and decodes through pointdet's engine like any family."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FCOS

from pointdet.configs.schema import FCOSConfig
from pointdet.models.build import build_model
from pointdet.structures import Instances


class _Features(nn.Module):
    """pointdet's backbone + FPN as torchvision's FCOS backbone (it reads ``out_channels``)."""

    def __init__(self, detector) -> None:
        super().__init__()
        self.detector, self.out_channels = detector, detector.neck.feature_shapes[0].channels

    def forward(self, images):
        return dict(enumerate(self.detector.features(images)))


def _pair(num_classes: int = 3):
    torch.manual_seed(0)
    ours = build_model(FCOSConfig(backbone="resnet18", channels=64), num_classes, with_backbone_weights=False)
    reference = FCOS(
        _Features(ours),
        num_classes,
        min_size=128,
        max_size=160,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        anchor_generator=ours.head.anchor_generator,
        head=ours.head.head,
        score_thresh=0.05,
    )
    return ours, reference


def _batch():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8)
    instances = [
        Instances(torch.tensor([[10.0, 20.0, 80.0, 90.0], [60.0, 5.0, 150.0, 120.0]]), torch.tensor([1, 2]),
                  torch.zeros(2, 0, 3)),
        Instances(torch.tensor([[30.0, 30.0, 50.0, 44.0]]), torch.tensor([0]), torch.zeros(1, 0, 3)),
    ]  # fmt: skip
    return images, instances


def test_fcos_peer_losses_equal_torchvision_fcos():
    ours, reference = _pair()
    images, instances = _batch()
    losses = ours.loss(images, instances)
    reference.train()
    targets = [{"boxes": inst.boxes, "labels": inst.labels} for inst in instances]
    expected = reference(list(ours.preprocess(images)), targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_centerness"}
    for ours_name, name in (("loss_cls", "classification"), ("loss_box", "bbox_regression"),
                            ("loss_centerness", "bbox_ctrness")):  # fmt: skip
        torch.testing.assert_close(losses[ours_name], expected[name], rtol=1e-6, atol=1e-7)
        assert losses[ours_name] > 0


def test_fcos_peer_detections_equal_torchvision_fcos():
    ours, reference = _pair()
    images, _ = _batch()
    ours.eval()
    reference.eval()
    detections = ours.predict(images)
    with torch.no_grad():
        expected = reference(list(ours.preprocess(images)))
    for mine, theirs in zip(detections, expected, strict=True):
        assert len(mine) == len(theirs["boxes"]) > 0
        torch.testing.assert_close(mine.boxes, theirs["boxes"])
        torch.testing.assert_close(mine.scores, theirs["scores"])
        assert torch.equal(mine.labels, theirs["labels"])


def test_fcos_peer_flip_test_merges_the_mirrored_pass():
    ours, _ = _pair()
    images, _ = _batch()
    ours.eval()
    plain, flipped = ours.predict(images), ours.predict(images, flip=True)
    mirrored = ours.predict(images.flip(-1))
    for one, both, other in zip(plain, flipped, mirrored, strict=True):
        assert len(both) <= 100 and torch.all(both.scores[:-1] >= both.scores[1:])
        # the merged set's best score is the best of the two passes
        assert both.scores[0] == max(one.scores[0], other.scores[0])
