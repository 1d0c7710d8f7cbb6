"""ONNX export: the graph with its decoder runs in onnxruntime and matches PyTorch, at any batch and size."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import batched_nms

from pointdet.configs import CenterNetConfig, CornerConfig, RepPointsConfig
from pointdet.decoders.point_sets import points_to_boxes
from pointdet.decoders.reppoints import RepPointsPostprocess
from pointdet.export import export_onnx
from pointdet.models.build import build_model
from pointdet.structures import Detections

ort = pytest.importorskip("onnxruntime")


def distinct_scores(model):
    """Random heatmap weights wide enough that no two peaks tie (runtimes may order ties differently)."""
    torch.manual_seed(0)
    nn.init.normal_(model.head.heatmap[-1].weight, std=0.5)
    return model.eval()


def assert_same_detections(onnx: dict, dets, names) -> None:
    """The peaks (score > 0) equal and in the same order; the rest of the top-100 are zero-score fillers
    (positions that are not local maxima), whose order between equal zeros is arbitrary."""
    peaks = int((dets.scores > 0).sum())
    assert peaks >= 10 and (onnx["scores"][peaks:] == 0).all()
    assert onnx["labels"][:peaks].tolist() == dets.labels[:peaks].tolist()
    np.testing.assert_allclose(onnx["scores"], dets.scores.numpy(), rtol=1e-4, atol=1e-6)
    for name in names:
        np.testing.assert_allclose(onnx[name][:peaks], getattr(dets, name)[:peaks].numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("task", "extra"), [("detection", []), ("pose", ["keypoints"]), ("mono3d", ["mono3d"])])
def test_onnx_matches_pytorch_with_dynamic_batch_and_size(tmp_path, task, extra):
    joints, pairs = (4, [(1, 3)]) if task == "pose" else (0, [])
    torch.manual_seed(0)  # the weights must not depend on the tests that ran before (a tie flips with them)
    model = distinct_scores(build_model(CenterNetConfig(backbone="resnet18", task=task), 3, joints, pairs))
    path = tmp_path / "model.onnx"
    names = export_onnx(model, path, 128, 128)
    assert names == ["boxes", "scores", "labels", *extra]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, height, width in ((1, 128, 128), (3, 160, 96)):
        images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8)
        outputs = dict(zip(names, session.run(None, {"images": images.numpy()}), strict=True))
        expected = model.predict(images)  # the PyTorch path users call, per image
        assert outputs["boxes"].shape == (batch, 100, 4)
        for b, dets in enumerate(expected):
            assert_same_detections({name: value[b] for name, value in outputs.items()}, dets, ["boxes", *extra])


def test_onnx_matches_pytorch_with_upsampler_skips(tmp_path):
    torch.manual_seed(0)
    model = build_model(CenterNetConfig(backbone="resnet18", upsampler_conv="plain", upsampler_skips=True), 3)
    for lateral in model.neck.skips:  # as after training: the skips' BN scales start at zero
        torch.nn.init.uniform_(lateral[1].weight, 0.5, 1.5)
    model = distinct_scores(model)
    path = tmp_path / "model.onnx"
    names = export_onnx(model, path, 128, 128)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randint(0, 256, (2, 3, 160, 96), dtype=torch.uint8)
    outputs = dict(zip(names, session.run(None, {"images": images.numpy()}), strict=True))
    for b, dets in enumerate(model.predict(images)):
        assert_same_detections({name: value[b] for name, value in outputs.items()}, dets, ["boxes"])


def reppoints_model(pre_nms: int = 1000):
    """RepPoints (ResNet-18, 64 channels, 3 classes) with random output convs wide enough that scores spread over
    (0, 1) without ties and boxes span several strides, so that the threshold and NMS both have work to do."""
    torch.manual_seed(0)
    config = RepPointsConfig(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False, pre_nms=pre_nms)
    model = build_model(config, 3)
    head = model.head
    nn.init.normal_(head.cls_out.weight, std=2.0)
    nn.init.constant_(head.cls_out.bias, -1.0)
    nn.init.normal_(head.init_out.weight, std=0.5)
    nn.init.normal_(head.refine_out.weight, std=0.5)
    return model.eval()


def reference_nms(boxes, scores, labels, threshold: float = 0.05, iou: float = 0.5, k: int = 100) -> Detections:
    """The caller's post-processing of a RepPoints graph (the docstring snippet of ``pointdet.export``)."""
    keep = scores > threshold
    box, score, label = (torch.as_tensor(a[keep]) for a in (boxes, scores, labels))
    top = batched_nms(box, score, label, iou)[:k]
    return Detections(box[top], score[top], label[top])


def assert_same_rows(actual: Detections, expected: Detections, cut: bool = False) -> None:
    """``actual`` (one image, from onnxruntime) holds ``expected``'s rows up to float noise: scores in order within
    1e-4 (sorted lists stay that close even where near-equal scores swap places), and every row of non-zero score
    is a row of ``expected`` with the same label, a score within 1e-4 and a box within 1e-3 — except, with ``cut``
    (the top k of more pairs), rows within noise of the last score, where the runtimes may cut near-ties apart."""
    assert len(actual) == len(expected) > 0
    torch.testing.assert_close(actual.scores, expected.scores, rtol=0, atol=1e-4)
    rows = actual[actual.scores > 0]
    same = (rows.labels[:, None] == expected.labels[None]) & ((rows.scores[:, None] - expected.scores).abs() <= 1e-4)
    same &= (rows.boxes[:, None] - expected.boxes[None]).abs().amax(dim=-1) <= 1e-3
    assert (same.sum(dim=1) == 1).all() or cut  # each row found once
    found = same.any(dim=1) | (cut & (rows.scores <= actual.scores[-1] + 1e-4))
    assert found.all(), f"{int((~found).sum())} rows of {len(rows)} differ"


@pytest.mark.parametrize("pre_nms", [1000, 20])  # 20: every level but P7 is cut to its top 20 priors
def test_reppoints_onnx_gives_pre_nms_candidates_that_nms_turns_into_predict(tmp_path, pre_nms):
    """Inputs of 160 px and more: at 128 px and below P6 / P7 are 1x1 maps whose GroupNorm (2 channels per group
    at 64 channels) amplifies the float noise between onnxruntime and PyTorch to ~1e-2 px, a property of the
    model at that size, not of the export."""
    onnx = pytest.importorskip("onnx")
    model = reppoints_model(pre_nms)
    path = tmp_path / "reppoints.onnx"
    names = export_onnx(model, path, 64, 64)  # k: RepPoints' default of 1000 candidates
    assert names == ["boxes", "scores", "labels"]
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "GridSample" in ops and "DeformConv" not in ops  # the point-guided DCNs export as grid_sample
    assert "NonMaxSuppression" not in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, height, width in ((1, 160, 160), (2, 192, 224)):
        images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8)
        outputs = [torch.from_numpy(a) for a in session.run(None, {"images": images.numpy()})]
        assert outputs[0].shape == (batch, 1000, 4) and outputs[1].shape == outputs[2].shape == (batch, 1000)
        with torch.no_grad():
            expected = model.postprocess.batched(model(model.preprocess(images)), k=1000)
        # (prior, class) pairs: P3-P7 priors of the input, each level cut to pre_nms, times 3 classes
        levels = [-(-height // s) * -(-width // s) for s in (8, 16, 32, 64, 128)]
        pairs = 3 * sum(min(count, pre_nms) for count in levels)
        real = min(pairs, 1000)  # the rest are zero-score fillers
        assert ((expected.scores > 0).sum(dim=1) == real).all() and (outputs[1][:, real:] == 0).all()
        for b, dets in enumerate(model.predict(images)):  # the PyTorch path: threshold, NMS, top 100
            graph = Detections(*(t[b] for t in outputs))
            assert_same_rows(graph, expected[b], cut=pairs > 1000)
            assert_same_rows(reference_nms(graph.boxes, graph.scores, graph.labels), dets)


def old_reppoints_call(post: RepPointsPostprocess, outputs, flipped=None, k=100, image_size=None) -> list[Detections]:
    """``RepPointsPostprocess.__call__`` before it shared ``candidates`` with ``batched``: per image, per level."""

    def candidates(out, b, frame):
        scores = out.scores[b].float().sigmoid()
        points = out.points_refine[b].float()
        boxes = points_to_boxes(points.view(points.shape[0], -1, 2), post.transform, out.moment_transfer[b].float())
        keep, start = [], 0
        for count in torch.unique_consecutive(out.strides[b], return_counts=True)[1].tolist():
            top = min(post.pre_nms, count) if post.pre_nms > 0 else count
            keep.append(scores[start : start + count].max(dim=1).values.topk(top).indices + start)
            start += count
        keep = torch.cat(keep)
        limits = boxes.new_tensor([frame[1], frame[0], frame[1], frame[0]])
        return boxes[keep].clamp(min=0).minimum(limits), scores[keep]

    detections = []
    for b in range(outputs.scores.shape[0]):
        finest = outputs.strides[b].min()
        on_finest = outputs.priors[b][outputs.strides[b] == finest]
        frame = image_size or ((on_finest[:, 1].max() + finest).item(), (on_finest[:, 0].max() + finest).item())
        boxes, scores = candidates(outputs, b, frame)
        if flipped is not None:
            mirrored, mirrored_scores = candidates(flipped, b, frame)
            mirrored = mirrored[:, [2, 1, 0, 3]] * mirrored.new_tensor([-1.0, 1.0, -1.0, 1.0])
            mirrored = mirrored + mirrored.new_tensor([frame[1], 0.0, frame[1], 0.0])
            boxes, scores = torch.cat([boxes, mirrored]), torch.cat([scores, mirrored_scores])
        detections.append(Detections(*post.select(boxes, scores, k)))
    return detections


@pytest.mark.parametrize(
    ("pre_nms", "flip", "image_size"), [(1000, False, None), (15, True, None), (0, False, (90, 120))]
)
def test_reppoints_call_is_unchanged_and_batched_plus_nms_equals_it(pre_nms, flip, image_size):
    model = reppoints_model()
    images = torch.randint(0, 256, (2, 3, 96, 128), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    x = model.preprocess(images)
    with torch.no_grad():
        outputs = model(x)
        flipped = model(x.flip(-1)) if flip else None
    post = RepPointsPostprocess("moment", pre_nms=pre_nms)
    for new, old in zip(
        post(outputs, flipped, image_size=image_size),
        old_reppoints_call(post, outputs, flipped, image_size=image_size),
        strict=True,
    ):
        assert len(new) == 100
        torch.testing.assert_close(new.boxes, old.boxes, rtol=0, atol=1e-5)
        assert new.labels.tolist() == old.labels.tolist() and torch.equal(new.scores, old.scores)
    if image_size is None:  # batched reads the frame off the priors; k = 300 keeps fewer than the 771 pairs
        candidates = post.batched(outputs, flipped, k=300 if pre_nms == 1000 else 1000)
        for b, dets in enumerate(post(outputs, flipped)):
            nms = reference_nms(*(t[b] for t in (candidates.boxes, candidates.scores, candidates.labels)))
            assert nms.labels.tolist() == dets.labels.tolist()
            assert torch.equal(nms.boxes, dets.boxes) and torch.equal(nms.scores, dets.scores)


def test_export_refuses_corner_detectors(tmp_path):
    model = build_model(CornerConfig(method="centripetalnet", backbone="hourglass_small"), 2)
    with pytest.raises(ValueError, match="soft-NMS"):
        export_onnx(model, tmp_path / "m.onnx", 64, 64)


def test_cli_export(tiny_shapes, tmp_path, capsys):
    from pointdet.cli import main

    from .helpers import cli_train_tiny

    run = tmp_path / "run"
    cli_train_tiny("centernet_r18", tiny_shapes, run)
    out = tmp_path / "missing" / "folder" / "m.onnx"  # parent folders are created, as train does for out_dir
    main(["export", "--weights", str(run), "--out", str(out)])
    assert "outputs boxes, scores, labels" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"images": np.zeros((2, 3, 64, 96), dtype=np.uint8)})
    assert boxes.shape == (2, 100, 4) and scores.shape == labels.shape == (2, 100)
