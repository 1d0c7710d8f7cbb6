"""LSNet head pieces: the pyramid DCN against references, head shapes / gradients, oracle decoding."""

import pytest
import torch
from torchvision.ops import deform_conv2d

from pointdet.decoders.lsnet import LSNetPostprocess
from pointdet.losses.cross_iou import softened_targets
from pointdet.models.heads.lsnet import LSNetHead, LSNetOutputs
from pointdet.models.heads.lsnet_layers import pyramid_levels
from pointdet.ops.dcn import deform_conv
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.lsnet import extreme_landmarks


def bilinear(image, y, x):
    """Reference bilinear sample of a (C, H, W) map at pixel (y, x), zero outside (torchvision's rule)."""
    channels, height, width = image.shape
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    value = torch.zeros(channels, dtype=image.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * image[:, yy, xx]
    return value


def test_pyramid_dcn_at_scale_one_is_the_plain_dcn():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    offset = torch.randn(2, 18, 7, 9, dtype=torch.float64) * 2
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    expected = deform_conv2d(x, offset, weight, None, padding=(1, 1))
    torch.testing.assert_close(deform_conv(x, offset, weight, None, padding=1, scale=(1.0, 1.0)), expected)


@pytest.mark.parametrize("scale", [(2.0, 2.0), (0.5, 0.5)])
def test_pyramid_dcn_reads_another_level_at_rescaled_positions(scale):
    """Output (i, j) sums weight[k] x the other map at scale * (i - 1 + ky + dy_k, j - 1 + kx + dx_k)."""
    torch.manual_seed(0)
    base_h, base_w = 4, 6
    other = torch.randn(1, 3, int(base_h * scale[0]), int(base_w * scale[1]), dtype=torch.float64)
    offset = torch.randn(1, 18, base_h, base_w, dtype=torch.float64)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    got = deform_conv(other, offset, weight, None, padding=1, scale=scale)
    assert got.shape == (1, 2, base_h, base_w)
    expected = torch.zeros_like(got)
    for i in range(base_h):
        for j in range(base_w):
            for k in range(9):
                ky, kx = divmod(k, 3)
                y = (i - 1 + ky + offset[0, 2 * k, i, j].item()) * scale[0]
                x = (j - 1 + kx + offset[0, 2 * k + 1, i, j].item()) * scale[1]
                expected[0, :, i, j] += weight[:, :, ky, kx] @ bilinear(other[0], y, x)
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="another resolution"):
        deform_conv(other, offset, weight, None, padding=1, scale=scale, implementation="torchvision")


def test_pyramid_levels_at_the_ends_and_inside():
    assert pyramid_levels(0, 5) == [0, 1, 2]
    assert pyramid_levels(2, 5) == [2, 1, 3]
    assert pyramid_levels(4, 5) == [4, 3, 2]


def features_of(height, width, channels=32, batch=2):
    sizes = [(-(-height // s), -(-width // s)) for s in (8, 16, 32, 64, 128)]
    return [torch.randn(batch, channels, h, w) for h, w in sizes]


@pytest.mark.parametrize("tower", ["dcn", "conv"])
def test_head_shapes_loss_and_gradients(tower):
    torch.manual_seed(0)
    head = LSNetHead(32, num_classes=3, channels=32, stacked_convs=2, tower=tower)
    features = features_of(61 * 2, 83 * 2)
    outputs = head(features)
    num_priors = sum(f.shape[-2] * f.shape[-1] for f in features)
    assert outputs.scores.shape == (2, num_priors, 3)
    assert outputs.components_init.shape == outputs.components_refine.shape == (2, num_priors, 5, 4)
    assert (outputs.components_init > 0).all() and (outputs.components_refine > 0).all()  # softplus
    gt = Instances(
        torch.tensor([[10.0, 12.0, 70.0, 50.0], [80.0, 20.0, 120.0, 110.0]]), torch.tensor([0, 2]), torch.zeros(2, 0, 3)
    )
    losses = head.loss(outputs, [gt, Instances.empty()])
    assert set(losses) == {"loss_cls", "loss_landmarks_init", "loss_landmarks_refine"}
    assert all(torch.isfinite(value) and value > 0 for value in losses.values())
    sum(losses.values()).backward()
    missing = [name for name, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # a DCN's offset conv starts at zero weights, so its input gets no gradient yet; everything else learns
    assert all("offset_mask" in name for name in missing), missing


def test_single_level_landmark_features_option():
    head = LSNetHead(32, num_classes=2, channels=64, stacked_convs=1, tower="conv", landmark_features="single")
    assert head(features_of(64, 64, batch=1)).scores.shape[-1] == 2  # 64 channels: GN(32) on a 1x1 P7
    with pytest.raises(ValueError, match="3 or more levels"):
        LSNetHead(32, num_classes=2, channels=32, strides=(8, 16))


def test_perfect_components_decode_to_the_gt_box():
    """Oracle: targets fed as predictions at one prior decode back to the GT box through the post-processor."""
    sizes, strides = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], [8, 16, 32, 64, 128]
    priors, prior_strides = level_points(sizes, strides)
    polygon = torch.tensor([[20.0, 6.0], [50.0, 30.0], [35.0, 55.0], [8.0, 28.0]])
    gt = Instances(
        torch.tensor([[8.0, 6.0, 50.0, 55.0]]), torch.tensor([1]), torch.zeros(1, 0, 3), polygons=[[polygon]]
    )
    landmarks = extreme_landmarks(gt)[0]  # (5, 2)
    components = torch.full((1, len(priors), 5, 4), 0.1)
    components[0, 27] = softened_targets(landmarks - priors[27])
    scores = torch.full((1, len(priors), 2), -10.0)
    scores[0, 27, 1] = 5.0
    outputs = LSNetOutputs(scores, components, components, priors[None], prior_strides[None])
    (detections,) = LSNetPostprocess()(outputs)
    assert len(detections) == 1 and detections.labels.tolist() == [1]
    torch.testing.assert_close(detections.boxes, gt.boxes)
    batched = LSNetPostprocess().batched(outputs, k=5)
    torch.testing.assert_close(batched.boxes[0, :1], gt.boxes)
