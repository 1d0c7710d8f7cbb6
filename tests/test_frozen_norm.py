"""Frozen BatchNorm with a cached scale and shift: bitwise the original forward and backward, 2 operators a call,
recomputed when a buffer changes."""

import torch
from torchvision.ops import FrozenBatchNorm2d

from pointdet.launches import count_ops
from pointdet.models.backbones.resnet import ResNet
from pointdet.models.backbones.timm_backbone import TimmBackbone
from pointdet.ops.frozen_norm import CachedFrozenBatchNorm2d, cache_frozen_norms


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_var") and module.running_var is not None:
                for name in ("weight", "bias", "running_mean"):
                    getattr(module, name).copy_(torch.randn(getattr(module, name).shape, generator=generator))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def _uncached(model: torch.nn.Module) -> None:
    """Back to the library classes' own forward."""
    for module in model.modules():
        for base in type(module).__mro__[1:]:
            if type(module).__name__.startswith("Cached") and base.__name__ == type(module).__name__[len("Cached") :]:
                module.__class__ = base


def test_resnet_frozen_norms_give_the_original_outputs_and_gradients_bitwise():
    torch.manual_seed(0)
    net = ResNet(50, norm="frozen_bn")
    norms = [m for m in net.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 53 and all(type(m) is CachedFrozenBatchNorm2d for m in norms)
    _randomise_norms(net, 1)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    cached = [f.sum() for f in net(x)]
    (cached_grad,) = torch.autograd.grad(sum(cached), x)
    _uncached(net)
    assert type(norms[0]) is FrozenBatchNorm2d
    plain = [f.sum() for f in net(x)]
    (plain_grad,) = torch.autograd.grad(sum(plain), x)
    assert all(torch.equal(a, b) for a, b in zip(cached, plain, strict=True))
    assert torch.equal(cached_grad, plain_grad)


def test_a_cached_norm_is_two_operators_and_follows_its_buffers():
    norm = cache_frozen_norms(torch.nn.Sequential(FrozenBatchNorm2d(8)))[0]
    x = torch.randn(1, 8, 4, 4)
    norm(x)
    assert count_ops(lambda: norm(x)).operators == 2  # x * scale + shift
    _randomise_norms(norm, 2)  # in-place buffer updates, as load_state_dict
    expected = FrozenBatchNorm2d.forward(norm, x)
    assert torch.equal(norm(x), expected) and not torch.equal(expected, x)
    norm.load_state_dict({k: v * 2 for k, v in norm.state_dict().items()})
    assert torch.equal(norm(x), FrozenBatchNorm2d.forward(norm, x))
    with torch.inference_mode():
        norm(x)
    x.requires_grad_(True)
    norm(x).sum().backward()  # the inference-mode cache is not reused where autograd records
    assert x.grad is not None


def test_timm_frozen_norms_with_activation_are_cached_and_unchanged():
    torch.manual_seed(0)
    backbone = TimmBackbone("efficientnet_lite0", norm="frozen_bn")
    cached = [m for m in backbone.modules() if type(m).__name__.startswith("CachedFrozen")]
    assert cached and any(type(m).__name__ == "CachedFrozenBatchNormAct2d" for m in cached)
    _randomise_norms(backbone, 3)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = backbone(x)
        _uncached(backbone)
        assert not any(type(m).__name__.startswith("Cached") for m in backbone.modules())
        assert all(torch.equal(a, b) for a, b in zip(outputs, backbone(x), strict=True))
