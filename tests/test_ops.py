import pytest
import torch
from torchvision.ops import deform_conv2d

from pointdet.ops import ModulatedDeformConv2d, peak_topk, soft_nms
from pointdet.ops.dcn import deform_conv2d_sampled
from pointdet.ops.gaussian import gaussian_kernel


def test_peaks_two_gaussians_give_two_peaks():
    heatmap = torch.zeros(1, 2, 20, 20)
    heatmap[0, 0, 2:7, 3:8] = gaussian_kernel(2) * 0.9
    heatmap[0, 1, 10:15, 12:17] = gaussian_kernel(2) * 0.7
    peaks = peak_topk(heatmap, k=5)
    assert peaks.scores[0, :2].tolist() == [0.8999999761581421, 0.699999988079071]
    assert (peaks.scores[0, 2:] == 0).all()
    assert peaks.labels[0, :2].tolist() == [0, 1]
    assert (peaks.xs[0, :2].tolist(), peaks.ys[0, :2].tolist()) == ([5, 14], [4, 12])


def _soft_nms_reference(boxes, scores, labels, sigma, threshold):
    from torchvision.ops import box_iou

    scores = scores.clone().tolist()
    remaining = list(range(len(scores)))
    keep, kept = [], []
    while remaining:
        best = max(remaining, key=lambda i: scores[i])
        if scores[best] < threshold:
            break
        keep.append(best)
        kept.append(scores[best])
        remaining.remove(best)
        for i in list(remaining):
            if labels[i] == labels[best]:
                iou = box_iou(boxes[best : best + 1], boxes[i : i + 1]).item()
                scores[i] *= float(torch.exp(torch.tensor(-(iou**2) / sigma)))
            if scores[i] < threshold:
                remaining.remove(i)
    return keep, kept


def test_soft_nms_matches_reference_loop():
    generator = torch.Generator().manual_seed(3)
    xy = torch.rand(40, 2, generator=generator) * 50
    boxes = torch.cat([xy, xy + 10 + torch.rand(40, 2, generator=generator) * 20], 1)
    scores = torch.rand(40, generator=generator)
    labels = torch.randint(0, 3, (40,), generator=generator)
    keep, kept = soft_nms(boxes, scores, labels, sigma=0.5, score_threshold=0.01)
    ref_keep, ref_kept = _soft_nms_reference(boxes, scores, labels.tolist(), 0.5, 0.01)
    assert keep.tolist() == ref_keep
    torch.testing.assert_close(kept, torch.tensor(ref_kept))


@pytest.mark.parametrize("groups", [1, 2], ids=["plain", "grouped"])  # grouped: ResNeXt's 3x3 convs
def test_sampled_deform_conv_equals_torchvision(groups):
    generator = torch.Generator().manual_seed(0)
    for stride in (1, 2):
        x = torch.randn(2, 4, 9, 11, dtype=torch.float64, generator=generator)
        out_h, out_w = (9 - 1) // stride + 1, (11 - 1) // stride + 1
        offset = torch.randn(2, 18, out_h, out_w, dtype=torch.float64, generator=generator) * 3
        mask = torch.rand(2, 9, out_h, out_w, dtype=torch.float64, generator=generator)
        weight = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64, generator=generator)
        bias = torch.randn(6, dtype=torch.float64, generator=generator)
        expected = deform_conv2d(x, offset, weight, bias, stride=stride, padding=1, mask=mask)
        torch.testing.assert_close(deform_conv2d_sampled(x, offset, weight, bias, stride, 1, 1, mask), expected)


def test_dcn_layer_gradcheck_both_implementations():
    for implementation in ("sampled", "torchvision"):
        layer = ModulatedDeformConv2d(3, 2, implementation=implementation).double()
        torch.nn.init.normal_(layer.offset_mask.weight, std=0.3)  # non-trivial offsets and mask
        x = torch.randn(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(layer, (x,), atol=1e-6)


def test_dcn_starts_as_plain_convolution():
    layer = ModulatedDeformConv2d(4, 5)
    conv = torch.nn.Conv2d(4, 5, 3, padding=1)
    conv.weight.data.copy_(layer.weight.data)
    conv.bias.data.copy_(layer.bias.data)
    x = torch.randn(2, 4, 7, 9)
    torch.testing.assert_close(layer(x) * 2, conv(x), atol=1e-5, rtol=1e-5)  # zero offsets, mask sigmoid(0)=0.5
