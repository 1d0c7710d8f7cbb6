"""ResNet detection options: frozen stages, frozen batch norm, DCNv2 stages (METHODS.md §1.13, §1.9)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from pointdet.models.backbones.resnet import ResNet
from pointdet.ops.dcn import ModulatedDeformConv2d

DCN_C3_C5 = (False, True, True, True)


def _expected_shapes(model: ResNet, batch: int, height: int, width: int) -> list[tuple[int, ...]]:
    # 7x7 s2 stem conv then 3x3 s2 max-pool, then stride-2 stages: each halving rounds up.
    sizes = [(height, width)]
    for _ in range(5):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    return [(batch, shape.channels, *sizes[shape.stride.bit_length() - 1]) for shape in model.feature_shapes]


@pytest.mark.parametrize("depth", [18, 50])
def test_options_keep_output_shapes_at_odd_size(depth):
    model = ResNet(depth, frozen_stages=1, norm="frozen_bn", dcn_stages=DCN_C3_C5)
    features = model(torch.randn(2, 3, 61, 83))
    assert [tuple(f.shape) for f in features] == _expected_shapes(model, 2, 61, 83)
    assert [f.shape[-2:] for f in features] == [(16, 21), (8, 11), (4, 6), (2, 3)]


def test_default_keys_unchanged_and_option_keys():
    plain = set(ResNet(18).state_dict())
    assert "stem.1.num_batches_tracked" in plain and "layer2.0.conv2.weight" in plain
    frozen = set(ResNet(18, frozen_stages=2, norm="frozen_bn").state_dict())
    assert frozen == {k for k in plain if not k.endswith("num_batches_tracked")}
    dcn = set(ResNet(18, dcn_stages=DCN_C3_C5).state_dict())
    assert plain <= dcn
    assert dcn - plain == {
        f"layer{stage}.{block}.conv2.offset_mask.{name}"
        for stage in (2, 3, 4)
        for block in (0, 1)
        for name in ("weight", "bias")
    }


def test_frozen_stages_get_no_gradient():
    model = ResNet(18, frozen_stages=1)
    frozen_prefixes = ("stem.", "layer1.")
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (not name.startswith(frozen_prefixes)), name
    sum(f.sum() for f in model(torch.randn(2, 3, 64, 64))).backward()
    for name, parameter in model.named_parameters():
        if name.startswith(frozen_prefixes):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None, name


def test_frozen_stage_batch_norm_stays_in_eval_mode():
    model = ResNet(18, frozen_stages=1)
    model.eval()
    model.train()
    assert not model.stem.training and not model.layer1.training
    assert model.layer2.training and model.training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    model(torch.randn(2, 3, 64, 64))
    after = model.state_dict()
    for key, value in before.items():
        unchanged = torch.equal(value, after[key])
        assert unchanged == key.startswith(("stem.", "layer1.")), key


def test_frozen_stages_four_freezes_everything_and_range_is_checked():
    assert not any(p.requires_grad for p in ResNet(18, frozen_stages=4).parameters())
    with pytest.raises(ValueError, match="frozen_stages"):
        ResNet(18, frozen_stages=5)
    with pytest.raises(ValueError, match="norm"):
        ResNet(18, norm="gn")  # type: ignore[arg-type]


def test_frozen_bn_loads_torchvision_resnet50_file(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    reference = resnet50(weights=None).eval()
    for module in reference.modules():  # non-trivial statistics, so a wrong load would show
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)

    model = ResNet(50, weights=path, norm="frozen_bn", frozen_stages=1).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == 53
    assert torch.equal(model.layer3[2].bn2.running_var, reference.layer3[2].bn2.running_var)

    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    # FrozenBatchNorm2d folds the statistics into a scale and shift: compare in float64, free of rounding noise.
    model.double()
    reference.double()
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(reference.maxpool(
            reference.relu(reference.bn1(reference.conv1(x)))
        )))))  # fmt: skip
        torch.testing.assert_close(model(x)[-1], expected)

    dcn = ResNet(50, weights=path, norm="frozen_bn", dcn_stages=DCN_C3_C5)
    assert isinstance(dcn.layer3[0].conv2, ModulatedDeformConv2d)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(dcn.layer3[0].conv2.weight, saved["layer3.0.conv2.weight"])


def test_dcn_block_is_half_the_plain_conv_at_initialisation():
    """Offsets start at 0 and the modulation at sigmoid(0) = 0.5, so a DCN conv2 is 0.5 x the plain conv."""
    model = ResNet(50, dcn_stages=DCN_C3_C5)
    assert not isinstance(model.layer1[0].conv2, ModulatedDeformConv2d)
    conv = model.layer2[0].conv2  # the stride-2 3x3 conv of the first c3 block
    assert isinstance(conv, ModulatedDeformConv2d) and conv.stride == 2 and conv.bias is None
    x = torch.randn(2, 128, 15, 21, dtype=torch.float64)
    conv.double()
    expected = F.conv2d(x, conv.weight, stride=2, padding=1)
    torch.testing.assert_close(conv(x), 0.5 * expected)


def test_dcn_resnet_equals_plain_resnet_with_halved_conv2():
    torch.manual_seed(0)
    plain = ResNet(18).double().eval()
    dcn = ResNet(18, dcn_stages=DCN_C3_C5).double().eval()
    missing, unexpected = dcn.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".conv2.offset_mask." in key for key in missing)
    with torch.no_grad():
        for stage in (plain.layer2, plain.layer3, plain.layer4):
            for block in stage:
                block.conv2.weight.mul_(0.5)
    x = torch.randn(2, 3, 61, 83, dtype=torch.float64)
    with torch.no_grad():
        for got, expected in zip(dcn(x), plain(x), strict=True):
            torch.testing.assert_close(got, expected)
