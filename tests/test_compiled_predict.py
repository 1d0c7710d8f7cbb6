"""``pointdet.load(..., compile=...)``: the compiled network + decode gives the eager detections."""

import pytest
import torch

import pointdet
from pointdet.configs import get_preset
from pointdet.engine.compiled import CompiledPredict, compiles, network_and_decode
from pointdet.models.build import build_model
from tests.helpers import untrained_checkpoint


def assert_same_detections(compiled, eager, gap: float = 1e-4):
    """Equal scores (sorted), and equal boxes and labels wherever the order is not decided by a near tie."""
    assert len(compiled) == len(eager)
    for a, b in zip(compiled, eager, strict=True):
        assert len(a) == len(b)
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)
        gaps = (b.scores[:-1] - b.scores[1:]).abs()
        clear = torch.ones(len(b), dtype=torch.bool)
        clear[:-1] &= gaps > gap
        clear[1:] &= gaps > gap
        assert clear.sum() > len(b) // 2
        torch.testing.assert_close(a.boxes[clear], b.boxes[clear], rtol=1e-4, atol=1e-3)
        assert a.labels[clear].tolist() == b.labels[clear].tolist()


def test_compile_flag_selects_the_path(tiny_shapes, tmp_path):
    path = untrained_checkpoint(tiny_shapes, tmp_path / "untrained.pt")
    assert pointdet.load(path, device="cpu").compiled_predict() is None  # default: CUDA only
    assert pointdet.load(path, device="cpu", compile=False).compiled_predict() is None
    forced = pointdet.load(path, device="cpu", compile=True).compiled_predict()
    assert isinstance(forced, CompiledPredict) and forced.mode is None  # reduce-overhead is for CUDA


@pytest.mark.slow  # the C++ kernels of one compile take 1-20 minutes on the shared 2-core CPU
def test_compiled_predict_on_cpu_equals_eager(tiny_shapes, tmp_path):
    path = untrained_checkpoint(tiny_shapes, tmp_path / "untrained.pt")
    eager = pointdet.load(path, device="cpu", compile=False)
    forced = pointdet.load(path, device="cpu", compile=True)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=generator) for _ in range(2)]
    # One compiled configuration: the flip test, whose batch doubling, split and map averaging are in the graph.
    assert_same_detections(forced.predict(images, flip=True, k=20), eager.predict(images, flip=True, k=20))
    # Multi-scale test runs eagerly (its soft-NMS merge has data-dependent shapes), also when compile is forced.
    multi = forced.predict(images, scales=(1.0, 0.5), k=20)
    assert_same_detections(multi, eager.predict(images, scales=(1.0, 0.5), k=20))


def test_only_the_centernet_and_reppoints_families_compile():
    corner = build_model(get_preset("cornernet_hg52").model, 2, with_backbone_weights=False)
    assert not compiles(corner)
    with pytest.raises(ValueError, match="CenterNet and RepPoints families only"):
        CompiledPredict(corner)


@pytest.mark.parametrize("preset", ["centernet_r18", "reppoints_shapes", "reppoints_v2_shapes", "lsnet_shapes"])
def test_network_and_decode_compile_into_one_graph(preset):
    """``torch.compile(..., fullgraph=True)`` of predict's network + fixed-size decode: no graph break, no host
    sync between the uint8 images and the fixed-size output, and the eager result. Dynamo's capture is what
    fullgraph checks; the ``eager`` backend runs the captured graph without generating kernels (the
    ``test_compiled_predict_on_cpu_equals_eager`` test compiles kernels too)."""
    torch.manual_seed(0)
    model = build_model(get_preset(preset).model, 3, with_backbone_weights=False).eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    torch._dynamo.reset()
    graph = torch.compile(network_and_decode, fullgraph=True, backend="eager", dynamic=False)
    with torch.no_grad():
        for a, b in zip(graph(model, images, True, 20), network_and_decode(model, images, True, 20), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.gpu
def test_cuda_graphs_predict_equals_eager(tiny_shapes, tmp_path):
    path = untrained_checkpoint(tiny_shapes, tmp_path / "untrained.pt")
    eager = pointdet.load(path, device="cuda", compile=False)
    graphed = pointdet.load(path, device="cuda")  # default on CUDA: reduce-overhead
    assert graphed.compiled_predict().mode == "reduce-overhead"
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(4)]
    first = graphed.predict(images, k=20)
    second = graphed.predict(images[::-1], k=20)  # a replay must not overwrite the first call's results
    assert_same_detections(first, eager.predict(images, k=20))
    assert_same_detections(second, eager.predict(images[::-1], k=20))
