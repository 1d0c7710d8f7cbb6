"""CornerNet / CentripetalNet pieces: corner pooling, soft-NMS, corner targets, pair matching and decoding."""

import math

import pytest
import torch

from pointdet.configs import ConfigError, CornerConfig, apply_overrides, get_preset
from pointdet.decoders.corners import Corners, pair_candidates, pair_scores
from pointdet.decoders.tta import mirror
from pointdet.losses import associative_embedding_loss
from pointdet.models.build import build_model
from pointdet.ops.corner_pool import corner_pool
from pointdet.ops.gaussian import gaussian_radius
from pointdet.ops.nms import soft_nms
from pointdet.structures import Detections, Instances
from pointdet.targets.corners import build_corner_targets

# ------------------------------------------------------------------------------------------ corner pooling


def naive_corner_pool(x: torch.Tensor, direction: str) -> torch.Tensor:
    """The definition, one output element at a time (CornerNet's top_pool/left_pool/... semantics)."""
    height, width = x.shape[-2:]
    rows = []
    for i in range(height):
        row = []
        for j in range(width):
            if direction == "top":
                row.append(x[..., i:, j].amax(dim=-1))
            elif direction == "bottom":
                row.append(x[..., : i + 1, j].amax(dim=-1))
            elif direction == "left":
                row.append(x[..., i, j:].amax(dim=-1))
            else:
                row.append(x[..., i, : j + 1].amax(dim=-1))
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)


def test_corner_pool_values_on_a_hand_made_map():
    x = torch.tensor([[1.0, 3, 2], [0, 5, 1], [4, 0, 0]]).view(1, 1, 3, 3)
    expected = {
        "top": [[4, 5, 2], [4, 5, 1], [4, 0, 0]],
        "bottom": [[1, 3, 2], [1, 5, 2], [4, 5, 2]],
        "left": [[3, 3, 2], [5, 5, 1], [4, 0, 0]],
        "right": [[1, 3, 3], [0, 5, 5], [4, 4, 4]],
    }
    for direction, values in expected.items():
        assert corner_pool(x, direction)[0, 0].tolist() == values, direction


@pytest.mark.parametrize("direction", ["top", "bottom", "left", "right"])
def test_corner_pool_matches_the_naive_loop_with_gradients(direction):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    fast = corner_pool(x, direction)
    (fast_grad,) = torch.autograd.grad((fast * upstream).sum(), x)
    slow = naive_corner_pool(x, direction)
    (slow_grad,) = torch.autograd.grad((slow * upstream).sum(), x)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast_grad, slow_grad)
    assert torch.autograd.gradcheck(lambda t: corner_pool(t, direction), (x,))


def test_corner_pool_rejects_unknown_directions():
    with pytest.raises(ValueError, match="direction"):
        corner_pool(torch.zeros(1, 1, 2, 2), "up")


# --------------------------------------------------------------------------------------------------- soft-NMS


def reference_soft_nms(boxes, scores, labels, method, sigma=0.5, threshold=0.3, min_score=1e-3):
    """Bodla et al.'s Algorithm 1, one box at a time, in plain Python floats."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    remaining, current, kept = list(range(len(scores))), list(scores), []
    remaining = [i for i in remaining if current[i] >= min_score]
    while remaining:
        best = max(remaining, key=lambda i: current[i])
        kept.append((best, current[best]))
        remaining.remove(best)
        for i in remaining:
            if labels[i] != labels[best]:
                continue
            overlap = iou(boxes[best], boxes[i])
            if method == "gaussian":
                current[i] *= math.exp(-(overlap**2) / sigma)
            elif overlap > threshold:
                current[i] *= 1 - overlap
        remaining = [i for i in remaining if current[i] >= min_score]
    return kept


@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_nms_equals_the_reference_loop(method):
    torch.manual_seed(0)
    xy = torch.rand(60, 2) * 50
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2) * 30], dim=1).double()
    scores, labels = torch.rand(60).double(), torch.randint(0, 3, (60,))
    keep, new_scores = soft_nms(boxes, scores, labels, sigma=0.5, method=method, iou_threshold=0.3)
    expected = reference_soft_nms(boxes.tolist(), scores.tolist(), labels.tolist(), method)
    assert keep.tolist() == [i for i, _ in expected]
    torch.testing.assert_close(new_scores, torch.tensor([s for _, s in expected], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------- targets


def test_corner_targets_by_hand():
    inst = Instances(torch.tensor([[10.0, 20, 50, 60]]), torch.tensor([1]), torch.zeros(1, 0, 3))
    targets = build_corner_targets([inst], num_classes=2, output_size=(32, 32), stride=4)
    # f = (2.5, 5) - (12.5, 15), centre (7.5, 10), integer corners (2, 5) and (12, 15)
    assert targets.tl.index.tolist() == [[5 * 32 + 2]] and targets.br.index.tolist() == [[15 * 32 + 12]]
    assert targets.tl.offset.tolist() == [[[0.5, 0.0]]] and targets.br.offset.tolist() == [[[0.5, 0.0]]]
    assert targets.tl.guiding.tolist() == [[[5.5, 5.0]]] and targets.br.guiding.tolist() == [[[4.5, 5.0]]]
    torch.testing.assert_close(targets.tl.centripetal, torch.full((1, 1, 2), math.log(5.0)))
    torch.testing.assert_close(targets.br.centripetal, torch.full((1, 1, 2), math.log(5.0)))
    assert targets.tl.heatmap[0, 1, 5, 2] == 1 and targets.br.heatmap[0, 1, 15, 12] == 1
    assert targets.tl.heatmap[0, 0].sum() == 0
    radius = int(gaussian_radius(torch.tensor([10.0]), torch.tensor([10.0]), 0.3, "cornernet"))
    assert (targets.tl.heatmap[0, 1] > 0).sum() == (2 * radius + 1) ** 2  # CornerNet's radius, not CenterNet's


BOXES = torch.tensor([[8.0, 8, 40, 40], [60, 12, 100, 52], [20, 70, 90, 120], [66, 66, 78, 92]])
LABELS = torch.tensor([0, 0, 1, 0])


def perfect_outputs(model, instances, size=128):
    """The head's outputs that reproduce the targets exactly (heatmaps as clamped logits)."""
    head = model.head
    targets = build_corner_targets(instances, head.num_classes, (size // 4, size // 4), 4)
    fields = {}
    for corner in ("tl", "br"):
        target = getattr(targets, corner)
        fields[f"{corner}_heat"] = torch.logit(target.heatmap.clamp(1e-4, 1 - 1e-4))
        for name in ("offset", "guiding", "centripetal"):
            maps = torch.zeros(len(instances), 2, size // 4, size // 4)
            for b in range(len(instances)):
                count = int(targets.mask[b].sum())
                maps[b].view(2, -1)[:, target.index[b, :count]] = getattr(target, name)[b, :count].T
            fields[f"{corner}_{name}"] = maps
        embedding = torch.zeros(len(instances), 1, size // 4, size // 4)
        for b in range(len(instances)):
            count = int(targets.mask[b].sum())
            embedding[b].view(-1)[target.index[b, :count]] = 3.0 * torch.arange(count, dtype=torch.float32)
        fields[f"{corner}_embedding"] = embedding
    return head.Outputs(**{n: fields[n][:, None] for n in head.Outputs._fields})


@pytest.mark.parametrize(
    ("method", "cross_star"), [("centripetalnet", True), ("centripetalnet", False), ("cornernet", True)]
)
def test_encode_then_decode_returns_the_boxes(method, cross_star):
    config = CornerConfig(method=method, backbone="hourglass_small", cross_star=cross_star)
    model = build_model(config, num_classes=2).eval()
    instances = [
        Instances(BOXES, LABELS, torch.zeros(4, 0, 3)),
        Instances(BOXES[1:3], LABELS[1:3], torch.zeros(2, 0, 3)),
    ]
    detections = model.postprocess(perfect_outputs(model, instances))
    for dets, inst in zip(detections, instances, strict=True):
        confident = dets[dets.scores > 0.9]
        order = confident.boxes[:, 0].argsort()
        truth = inst.boxes[inst.boxes[:, 0].argsort()]
        torch.testing.assert_close(confident.boxes[order], truth, atol=1e-3, rtol=0)
        assert confident.labels[order].tolist() == inst.labels[inst.boxes[:, 0].argsort()].tolist()
        assert (dets.scores <= 0.9).sum() == 0 or dets.scores[len(confident) :].max() < 0.5


def test_mirror_maps_boxes_back():
    dets = Detections(torch.tensor([[10.0, 5, 30, 25]]), torch.ones(1), torch.zeros(1, dtype=torch.long))
    assert mirror(dets, 100).boxes.tolist() == [[70.0, 5, 90, 25]]


# ----------------------------------------------------------------------------------------------- matching


def corners(xy, centres, scores, labels):
    return Corners(
        torch.tensor([scores]), torch.tensor([labels]), torch.tensor([xy]).float(), torch.tensor([centres]).float()
    )


def test_centripetal_matching_keeps_the_right_pairs_and_rejects_the_others():
    # Two objects of class 0 (A: 10..50, B: 60..100 in x) and one of class 1 at the same place as A.
    tl = corners([[10, 10], [60, 12], [10, 10]], [[30, 30], [80, 32], [30, 30]], [0.9, 0.8, 0.7], [0, 0, 1])
    br = corners([[50, 50], [100, 52]], [[30, 30], [80, 32]], [0.9, 0.8], [0, 0])
    scores = pair_scores(tl, br, stride=1)
    kept = (scores > 0).nonzero()[:, 1:].tolist()
    assert kept == [[0, 0], [1, 1]]  # A-A and B-B; A-B (centres far apart), B-A (br left of tl), class 1 rejected
    boxes = pair_candidates(tl, br, scores, stride=4)[0].boxes
    assert boxes.tolist() == [[40.0, 40, 200, 200], [240.0, 48, 400, 208]]


def test_central_region_paper_rule_and_official_reversal():
    # Box 0..100 (area 10000 > 3500): mu = 1/2.1 (paper) gives a half-width of 23.8, 1/2.4 (official) 20.8.
    tl = corners([[0, 0]], [[28, 49]], [0.81], [0])
    br = corners([[100, 100]], [[72, 51]], [0.64], [0])
    paper = pair_scores(tl, br, stride=1)
    region = (100 / 2.1) ** 2
    assert paper.item() == pytest.approx(math.sqrt(0.81 * 0.64) * math.exp(-(44 * 2) / region), rel=1e-5)
    assert pair_scores(tl, br, stride=1, central_region="official").item() == -1
    code = pair_scores(tl, br, stride=1, pair_score="code")
    assert code.item() == pytest.approx((0.81 + 0.64) / 2)
    # The code's centre-box threshold: centres 44 x 30 apart cover more than half of the central region.
    far = corners([[100, 100]], [[72, 64]], [0.64], [0])
    tl_far = corners([[0, 0]], [[28, 34]], [0.81], [0])
    assert pair_scores(tl_far, far, stride=1, pair_score="code").item() == -1
    assert pair_scores(tl_far, far, stride=1).item() > 0  # the paper's rule only down-weights it


def test_embedding_matching_uses_the_distance_threshold():
    tl = corners([[10, 10], [60, 10]], [[0.1], [3.0]], [0.9, 0.8], [0, 0])
    br = corners([[50, 50], [100, 50]], [[0.5], [3.2]], [0.7, 0.6], [0, 0])
    scores = pair_scores(tl, br, stride=1, matching="embedding")
    assert scores.flatten().tolist() == pytest.approx([0.8, -1, -1, 0.7])


def test_associative_embedding_loss_by_hand():
    mask = torch.ones(1, 2)
    pull, push = associative_embedding_loss(torch.tensor([[0.0, 3.0]]), torch.tensor([[1.0, 3.0]]), mask)
    assert pull.item() == pytest.approx(0.25) and push.item() == 0.0
    pull, push = associative_embedding_loss(torch.tensor([[0.5, 1.0]]), torch.tensor([[0.5, 1.0]]), mask)
    assert pull.item() == 0.0 and push.item() == pytest.approx(0.5)


def _batch_summed_ae_loss(tl: list, br: list, mask: list) -> tuple[float, float]:
    """mmdetection's ``ae_loss_per_image`` summed over the images (``AssociativeEmbeddingLoss``), as plain loops."""
    pull_all = push_all = 0.0
    for tl_row, br_row, mask_row in zip(tl, br, mask, strict=True):
        objects = [k for k, real in enumerate(mask_row) if real]
        n = len(objects)
        if n == 0:
            continue
        means = {k: (tl_row[k] + br_row[k]) / 2 for k in objects}
        pull_all += sum((tl_row[k] - means[k]) ** 2 + (br_row[k] - means[k]) ** 2 for k in objects) / n
        if n > 1:
            gaps = [max(0.0, 1.0 - abs(means[j] - means[k])) for j in objects for k in objects if j != k]
            push_all += sum(gaps) / (n * (n - 1))
    return pull_all, push_all


def test_associative_embedding_loss_is_summed_over_the_batch():
    generator = torch.Generator().manual_seed(0)
    tl, br = torch.randn(6, 7, generator=generator) * 0.6, torch.randn(6, 7, generator=generator) * 0.6
    mask = torch.rand(6, 7, generator=generator) < 0.6
    mask[0] = False  # an image without objects
    mask[1] = False
    mask[1, 3] = True  # and one with a single object: no push
    pull, push = associative_embedding_loss(tl, br, mask)
    expected_pull, expected_push = _batch_summed_ae_loss(tl.tolist(), br.tolist(), mask.tolist())
    assert pull.item() == pytest.approx(expected_pull, rel=1e-5) and expected_pull > 0
    assert push.item() == pytest.approx(expected_push, rel=1e-5) and expected_push > 0
    twice = associative_embedding_loss(torch.cat([tl, tl]), torch.cat([br, br]), torch.cat([mask, mask]))
    assert twice[0].item() == pytest.approx(2 * pull.item(), rel=1e-5)  # a mean over images would stay the same
    assert twice[1].item() == pytest.approx(2 * push.item(), rel=1e-5)


# -------------------------------------------------------------------------------------------------- the model


def test_cross_star_offsets_come_from_the_detached_guiding_shift():
    torch.manual_seed(0)
    model = build_model(CornerConfig(method="centripetalnet", backbone="hourglass_small"), num_classes=2).train()
    inst = Instances(BOXES, LABELS, torch.zeros(4, 0, 3))
    losses = model.loss(torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8), [inst])
    assert set(losses) == {"loss_heatmap", "loss_offset", "loss_guiding", "loss_centripetal"}
    losses["loss_centripetal"].backward()
    branches = model.head.stacks[0]["tl"]
    assert all(p.grad is None for p in branches.guiding.parameters())  # no gradient through the offsets
    assert branches.adaption.offset.weight.grad.abs().sum() > 0
    assert branches.centripetal[0].weight.grad.abs().sum() > 0


def test_without_cross_star_the_centripetal_shift_reads_the_pooled_feature():
    config = CornerConfig(method="centripetalnet", backbone="hourglass_small", cross_star=False)
    model = build_model(config, num_classes=2).train()
    branches = model.head.stacks[0]["tl"]
    assert not hasattr(branches, "guiding") and not hasattr(branches, "adaption")
    images = torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8)
    losses = model.loss(images, [Instances(BOXES, LABELS, torch.zeros(4, 0, 3))])
    assert set(losses) == {"loss_heatmap", "loss_offset", "loss_centripetal"}


def test_hourglass_104_has_two_supervised_stacks_and_pads_odd_sizes():
    model = build_model(CornerConfig(method="cornernet", backbone="hourglass_small"), num_classes=2)
    assert model.backbone.size_divisor == 32
    images = torch.randint(0, 255, (1, 3, 70, 90), dtype=torch.uint8)
    assert len(model.eval().predict(images, flip=True)) == 1  # padded to 96 x 96 before the flip
    from pointdet.models.backbones import hourglass104

    backbone = hourglass104()
    assert backbone.num_stacks == 2 and backbone.size_divisor == 128
    assert 185e6 < sum(p.numel() for p in backbone.parameters()) < 190e6  # CornerNet's HG-104 (~187 M)
    head = build_model(CornerConfig(method="centripetalnet", backbone="hourglass104"), 80).head
    assert len(head.stacks) == 2


def test_corner_methods_refuse_other_backbones_and_tasks_when_parsed():
    with pytest.raises(ConfigError, match="model.backbone: 'resnet18' is not one of"):
        apply_overrides(get_preset("centripetalnet_hg52"), ["model.backbone=resnet18"])
    with pytest.raises(ConfigError, match="model.task: 'pose' is not one of"):
        apply_overrides(get_preset("cornernet_hg52"), ["model.task=pose"])
    with pytest.raises(ConfigError, match="'model.mask_head' for method=centernet"):
        apply_overrides(get_preset("centernet_r18"), ["model.mask_head=true"])


# ------------------------------------------------------------------------------- the official pairing rules


def release_pair_count(maps: dict[str, torch.Tensor], stride: int, k: int = 100, num_dets: int = 1000) -> int:
    """Pairs the authors' release keeps (``_decode_center`` then ``score > -0.1``), written out from its rule:
    sigmoid, 3x3 peak NMS, top ``k`` over C*H*W, corners and centres (``xy + offset`` and ``± exp(shift)``) scaled
    to input pixels, every coordinate that is not positive set to 0 (the test border is 0 in pointdet's frame),
    ``ns = 2.4`` for boxes over 3500 px² and 2.1 otherwise, the central region ``((ns ± 1) x1 + (ns ∓ 1) x2) /
    (2 ns)``, pairs rejected for another class, ``br < tl``, or a centre on or outside the region; the centre-box
    ratio is computed and not applied. The top ``num_dets`` scores are read."""
    counts = []
    for image in range(maps["tl_heat"].shape[0]):
        corners = {}
        for corner, sign in (("tl", 1.0), ("br", -1.0)):
            heat = maps[f"{corner}_heat"][image].double().sigmoid()
            peaks = heat * (torch.nn.functional.max_pool2d(heat, 3, 1, 1) == heat)
            scores, index = peaks.flatten().topk(k)
            width = heat.shape[-1]
            cls, ys, xs = index // heat[0].numel(), index % heat[0].numel() // width, index % width
            offset = maps[f"{corner}_offset"][image].double()[:, ys, xs]
            shift = maps[f"{corner}_centripetal"][image].double()[:, ys, xs].exp()
            x, y = xs + offset[0], ys + offset[1]
            cx, cy = x + sign * shift[0], y + sign * shift[1]
            values = [value * stride for value in (x, y, cx, cy)]
            corners[corner] = (scores, cls, *[value * (value > 0) for value in values])
        t_s, t_c, tx, ty, tcx, tcy = (value[:, None] for value in corners["tl"])
        b_s, b_c, bx, by, bcx, bcy = (value[None, :] for value in corners["br"])
        ns = torch.where((bx - tx).abs() * (ty - by).abs() + 1e-16 > 3500, 2.4, 2.1)
        region = [((ns + 1) * tx + (ns - 1) * bx) / (2 * ns), ((ns + 1) * ty + (ns - 1) * by) / (2 * ns)]
        region += [((ns - 1) * tx + (ns + 1) * bx) / (2 * ns), ((ns - 1) * ty + (ns + 1) * by) / (2 * ns)]
        score = (t_s + b_s) / 2
        rejected = (t_c != b_c) | (bx < tx) | (by < ty)
        for cx, cy in ((tcx, tcy), (bcx, bcy)):
            rejected |= (cx <= region[0]) | (cx >= region[2]) | (cy <= region[1]) | (cy >= region[3])
        score = torch.where(rejected, -1.0, score)
        counts.append(int((score.flatten().topk(num_dets).values > -0.1).sum()))
    return sum(counts)


def corner_maps_with_corners_outside_the_image() -> dict[str, torch.Tensor]:
    """Raw maps of one stack, two images, one class on a 24 x 40 map, with corners decoded left of or above the
    image (negative offsets on the first three rows and columns) and centripetal shifts of up to e² map pixels."""
    generator = torch.Generator().manual_seed(12)
    shape = (2, 1, 1, 24, 40)
    maps = {f"{corner}_heat": torch.randn(shape, generator=generator) * 2 for corner in ("tl", "br")}
    for corner in ("tl", "br"):
        offset = torch.rand(2, 1, 2, 24, 40, generator=generator)
        offset[:, :, 0, :, :3] -= 1.8  # the first columns decode left of the image
        offset[:, :, 1, :3, :] -= 1.8  # the first rows above it
        maps[f"{corner}_offset"] = offset
        maps[f"{corner}_centripetal"] = torch.rand(2, 1, 2, 24, 40, generator=generator) * 2
    return maps


def test_the_release_pairing_rule_keeps_what_the_release_keeps_and_the_other_rules_do_not():
    """On maps where the rules disagree, ``pair_score=official`` keeps as many pairs as the release's own rule;
    ``code`` (mmdetection) drops more (its centre-box threshold), ``paper`` keeps pairs whose corners or centres
    lie left of or above the image, which the release zeroes."""
    from pointdet.decoders.corners import CornerPostprocess
    from pointdet.models.heads.corner import ShiftOutputs

    maps = corner_maps_with_corners_outside_the_image()
    outputs = ShiftOutputs(**{name: maps[name] for name in ShiftOutputs._fields})
    kept = {}
    for rule in ("official", "code", "paper"):
        decoder = CornerPostprocess(stride=4, pair_score=rule, central_region="official")
        kept[rule] = int((decoder.batched_candidates(outputs).scores > 0).sum())
    expected = release_pair_count({name: value[:, 0] for name, value in maps.items()}, stride=4)
    assert kept["official"] == expected
    assert kept["code"] < expected < kept["paper"], kept  # 104 < 107 < 109
