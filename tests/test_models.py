import pytest
import torch

from pointdet.configs import CenterNetConfig, CornerConfig
from pointdet.models.build import build_model
from pointdet.models.necks.blocks import bilinear_upsampling_
from pointdet.structures import Instances


@pytest.mark.parametrize("backbone", ["resnet18", "dla34"])
def test_shapes_odd_sizes_and_full_backward(backbone):
    model = build_model(CenterNetConfig(backbone=backbone), num_classes=3)
    images = torch.randint(0, 255, (2, 3, 64, 96), dtype=torch.uint8)
    outputs = model(model.preprocess(images))
    assert outputs.heatmap.shape == (2, 3, 16, 24)
    assert outputs.size.shape == outputs.offset.shape == (2, 2, 16, 24)
    gt = [Instances(torch.tensor([[5.0, 7.0, 40.0, 50.0]]), torch.tensor([2]), torch.zeros(1, 0, 3)), Instances.empty()]
    losses = model.loss(images, gt)
    assert set(losses) == {"loss_heatmap", "loss_size", "loss_offset"}
    sum(losses.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    detections = model.eval().predict(images, flip=True, k=7)
    assert len(detections) == 2 and detections[0].boxes.shape == (7, 4)


def test_heatmap_bias_prior():
    model = build_model(CenterNetConfig(backbone="resnet18"), num_classes=2)
    assert model.head.heatmap[-1].bias.detach().tolist() == pytest.approx([-2.1972, -2.1972], abs=1e-4)
    assert model.head.heatmap[0].out_channels == 64  # official head_conv for ResNet


def test_bilinear_deconv_upsamples_each_channel():
    deconv = torch.nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, bias=False)
    bilinear_upsampling_(deconv)
    x = torch.zeros(1, 3, 4, 4)
    x[0, 1] = 1.0  # a constant channel stays (nearly) constant and stays in its channel
    y = deconv(x)
    assert y.shape == (1, 3, 8, 8)
    assert y[0, 0].abs().sum() == 0 and y[0, 2].abs().sum() == 0
    torch.testing.assert_close(y[0, 1, 1:-1, 1:-1], torch.ones(6, 6))


def test_local_backbone_weights_load(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(CenterNetConfig(backbone="resnet18", backbone_weights=str(path)), num_classes=1)
    torch.testing.assert_close(model.backbone.stem[0].weight, reference.conv1.weight)
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not weights for this backbone"):
        build_model(CenterNetConfig(backbone="resnet18", backbone_weights=str(tmp_path / "other.pth")), num_classes=1)


@pytest.mark.parametrize(
    "config",
    [CenterNetConfig(backbone="resnet18"), CornerConfig(backbone="hourglass_small")],
    ids=["centernet", "corner"],
)
def test_prediction_at_the_images_own_aspect(config):
    """``data.test_resize=original`` (the papers' test: the image padded to the backbone's multiple) for the
    stride-4 methods: odd sizes are padded by the detector, boxes come back in the image's pixels."""
    from pointdet.api import Predictor
    from pointdet.configs import DataConfig
    from pointdet.engine.data import select_eval_transforms

    torch.manual_seed(0)
    model = build_model(config, num_classes=2)
    transform = select_eval_transforms(DataConfig(test_resize="original"))
    predictor = Predictor(model, ["a", "b"], [1, 2], 512, transform=transform)
    images = [
        torch.randint(0, 256, (3, 61, 83), dtype=torch.uint8),
        torch.randint(0, 256, (3, 70, 50), dtype=torch.uint8),
    ]
    for image, detections in zip(images, predictor.predict(images, k=10), strict=True):
        assert 0 < len(detections) <= 10
        assert (detections.boxes[:, 2] <= image.shape[2]).all() and (detections.boxes[:, 3] <= image.shape[1]).all()
