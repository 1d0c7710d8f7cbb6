"""The fixed-step batched soft-NMS equals the former one-box-at-a-time loop (``sequential_soft_nms``), image by
image, on random and hand-made inputs, and the corner decoder built on it gives the former detections."""

import math
from collections import namedtuple
from dataclasses import replace

import pytest
import torch

from pointdet.decoders.corners import CornerPostprocess, centripetal_corners, pair_candidates, pair_scores
from pointdet.decoders.tta import mirror
from pointdet.ops.nms import batched_soft_nms, sequential_soft_nms, soft_nms
from pointdet.structures import Detections

METHODS = ["gaussian", "linear"]


def random_boxes(count: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 60
    return torch.cat([xy, xy + 5 + torch.rand(count, 2, generator=generator, dtype=torch.float64) * 30], dim=1)


def padded_batch(counts: list[int], generator: torch.Generator):
    """Random images of ``counts`` boxes padded to the largest count; the padding has random boxes and scores too
    (it must be ignored because of ``valid``)."""
    width = max(counts)
    boxes = torch.stack([random_boxes(width, generator) for _ in counts])
    scores = torch.rand(len(counts), width, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (len(counts), width), generator=generator)
    valid = torch.arange(width)[None] < torch.tensor(counts)[:, None]
    return boxes, scores, labels, valid


def kept_of_image(result, b: int) -> tuple[list[int], torch.Tensor]:
    valid = result.valid[b]
    return result.index[b][valid].tolist(), result.scores[b][valid]


@pytest.mark.parametrize("method", METHODS)
def test_batched_soft_nms_equals_the_sequential_loop_image_by_image(method):
    generator = torch.Generator().manual_seed(5)
    counts = [40, 0, 17, 40, 1]
    boxes, scores, labels, valid = padded_batch(counts, generator)
    result = batched_soft_nms(boxes, scores, labels, valid, sigma=0.5, method=method, iou_threshold=0.3)
    assert result.index.shape == (len(counts), max(counts))
    for b, count in enumerate(counts):
        keep, kept = sequential_soft_nms(boxes[b, :count], scores[b, :count], labels[b, :count], 0.5, method=method)
        got_keep, got_scores = kept_of_image(result, b)
        assert got_keep == keep.tolist()
        torch.testing.assert_close(got_scores, kept)
        assert (result.scores[b][~result.valid[b]] == 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_fewer_steps_give_exactly_the_first_boxes_of_a_full_run(method):
    generator = torch.Generator().manual_seed(6)
    boxes, scores, labels, valid = padded_batch([50, 30], generator)
    full = batched_soft_nms(boxes, scores, labels, valid, method=method)
    short = batched_soft_nms(boxes, scores, labels, valid, method=method, max_kept=12)
    assert short.index.shape == (2, 12)
    assert torch.equal(short.index, full.index[:, :12]) and torch.equal(short.valid, full.valid[:, :12])
    torch.testing.assert_close(short.scores, full.scores[:, :12], rtol=0, atol=0)
    kept = full.scores[0][full.valid[0]]
    assert (kept[1:] <= kept[:-1]).all()  # why the prefix is exact: kept scores never increase


@pytest.mark.parametrize("method", METHODS)
def test_float32_corner_like_inputs_match_the_loop(method):
    generator = torch.Generator().manual_seed(7)
    boxes = (random_boxes(300, generator) * 4).float()
    scores = torch.rand(300, generator=generator)
    labels = torch.randint(0, 80, (300,), generator=generator)
    keep, kept = soft_nms(boxes, scores, labels, method=method, iou_threshold=0.5)
    ref_keep, ref_kept = sequential_soft_nms(boxes, scores, labels, method=method, iou_threshold=0.5)
    assert keep.tolist() == ref_keep.tolist()
    torch.testing.assert_close(kept, ref_kept)


def test_no_boxes():
    for count in (0,):
        result = batched_soft_nms(torch.zeros(2, count, 4), torch.zeros(2, count), torch.zeros(2, count).long())
        assert result.index.shape == result.scores.shape == result.valid.shape == (2, 0)
    keep, kept = soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert keep.tolist() == [] and kept.tolist() == []


@pytest.mark.parametrize("method", METHODS)
def test_all_scores_below_the_threshold_keep_nothing(method):
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    scores, labels = torch.tensor([1e-4, 5e-4]), torch.tensor([0, 1])
    result = batched_soft_nms(boxes[None], scores[None], labels[None], method=method)
    assert not result.valid.any()
    keep, kept = soft_nms(boxes, scores, labels, method=method)
    ref_keep, _ = sequential_soft_nms(boxes, scores, labels, method=method)  # stacked an empty list before
    assert keep.tolist() == ref_keep.tolist() == [] and kept.numel() == 0


@pytest.mark.parametrize("method", METHODS)
def test_ties_go_to_the_first_box_and_decay_by_hand(method):
    # Boxes 0 and 2 coincide (IoU 1), box 1 overlaps box 0 with IoU 50/150 = 1/3, box 3 is of another class.
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.9, 0.9, 0.9], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    result = batched_soft_nms(boxes[None], scores[None], labels[None], sigma=0.5, method=method, iou_threshold=0.3)
    keep, kept = kept_of_image(result, 0)
    if method == "gaussian":
        # After box 0: 1 -> 0.9 e^{-2/9}, 2 -> 0.9 e^{-2}; box 3 (other class) is untouched and ties with box 0.
        expected = [(0, 0.9), (3, 0.9), (1, 0.9 * math.exp(-2 / 9)), (2, 0.9 * math.exp(-2) * math.exp(-2 / 9))]
    else:
        # After box 0: 1 -> 0.9 * 2/3 (IoU 1/3 > 0.3), 2 -> 0 (1 - IoU = 0, dropped).
        expected = [(0, 0.9), (3, 0.9), (1, 0.6)]
    assert keep == [i for i, _ in expected]
    torch.testing.assert_close(kept, torch.tensor([s for _, s in expected], dtype=torch.float64))
    ref_keep, ref_kept = sequential_soft_nms(boxes, scores, labels, method=method)
    assert ref_keep.tolist() == keep
    torch.testing.assert_close(ref_kept, kept)


def test_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="gaussian"):
        batched_soft_nms(torch.zeros(1, 1, 4), torch.ones(1, 1), torch.zeros(1, 1).long(), method="hard")


# ------------------------------------------------------------------------------------------ corner decoder

CornerMaps = namedtuple(
    "CornerMaps", "tl_heat br_heat tl_offset br_offset tl_centripetal br_centripetal tl_guiding br_guiding"
)


def random_corner_maps(batch: int, generator: torch.Generator) -> CornerMaps:
    """Raw outputs of one hourglass stack, (B, 1, C, H, W): many peaks, many matched pairs."""

    def maps(channels: int, scale: float, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(batch, 1, channels, 32, 32, generator=generator) * scale + shift

    return CornerMaps(maps(3, 2, -2), maps(3, 2, -2), maps(2, 0.3), maps(2, 0.3), maps(2, 0.5, 2), maps(2, 0.5, 2),
                      maps(2, 1), maps(2, 1))  # fmt: skip


def former_corner_decode(post: CornerPostprocess, outputs, flipped, k: int) -> list[Detections]:
    """The decoder before the batched soft-NMS: per-image candidate lists, the sequential loop, top ``k``."""

    def candidates(raw):
        maps = {name: value[:, -1] for name, value in raw._asdict().items()}
        tl = centripetal_corners(maps["tl_heat"].sigmoid(), maps["tl_offset"], maps["tl_centripetal"], 100, 1.0)
        br = centripetal_corners(maps["br_heat"].sigmoid(), maps["br_offset"], maps["br_centripetal"], 100, -1.0)
        return pair_candidates(tl, br, pair_scores(tl, br, post.stride), post.stride, post.num_pairs)

    width = outputs.tl_heat.shape[-1] * post.stride
    pairs = zip(candidates(outputs), candidates(flipped), strict=True)
    merged = [Detections.cat([a, mirror(b, width)]) for a, b in pairs]
    out = []
    for dets in merged:
        keep, scores = sequential_soft_nms(dets.boxes, dets.scores, dets.labels, post.soft_nms_sigma, iou_threshold=0.5)
        positive = scores > 0
        out.append(replace(dets[keep[positive][:k]], scores=scores[positive][:k]))
    return out


def test_corner_decoder_gives_the_former_detections():
    generator = torch.Generator().manual_seed(8)
    outputs, flipped = random_corner_maps(3, generator), random_corner_maps(3, generator)
    post = CornerPostprocess(stride=4, num_pairs=300)
    new = post(outputs, flipped, k=50)
    old = former_corner_decode(post, outputs, flipped, k=50)
    assert [len(d) for d in new] == [len(d) for d in old] == [50, 50, 49]  # image 2 keeps fewer than k
    for a, b in zip(new, old, strict=True):
        torch.testing.assert_close(a.boxes, b.boxes)
        torch.testing.assert_close(a.scores, b.scores)
        assert a.labels.tolist() == b.labels.tolist()
