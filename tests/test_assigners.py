import math

import pytest
import torch

from pointdet.ops.priors import grid_points, level_points
from pointdet.targets.assigners import atss_assign, gather_assigned, max_iou_assign, point_assign

# A 64x64 image with three levels: strides 8, 16, 32 -> 8x8, 4x4, 2x2 = 64 + 16 + 4 = 84 points.
SIZES, STRIDES = [(8, 8), (4, 4), (2, 2)], [8, 16, 32]


def _points():
    return level_points(SIZES, STRIDES)


def _boxes(values):
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 4)


def _square_priors(points, strides, side=4):
    """Boxes of side ``side * stride`` centred on the points (RepPoints-style init boxes)."""
    half = strides[:, None] * side / 2
    return torch.cat([points - half, points + half], 1).double()


def test_grid_points_exact_values():
    points = grid_points(2, 3, 8)
    assert points.dtype == torch.float32
    assert points.tolist() == [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]]


def test_level_points_concatenates_levels():
    points, strides = level_points([(2, 3), (1, 2)], [8, 16])
    assert points.tolist() == [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8], [0, 0], [16, 0]]
    assert strides.tolist() == [8, 8, 8, 8, 8, 8, 16, 16] and strides.dtype == torch.float32


def test_point_assign_hand_cases():
    points, strides = _points()
    # 32x32 GT: level trunc((log2(8) + log2(8)) / 2) = 3 (stride 8); centre (32, 32) is cell (4, 4) -> 4*8 + 4 = 36.
    # 64x64 GT: level 4 (stride 16); centre (32, 32) is cell (2, 2) -> 64 + 2*4 + 2 = 74.
    # 8x8 GT: level 1 clamped to 3; centre (4, 4) ties four points at distance sqrt(0.5^2 + 0.5^2): lowest index 0.
    # 256x256 GT: level 6 clamped to 5 (stride 32); centre (32, 32) is cell (1, 1) -> 80 + 1*2 + 1 = 83.
    gt_boxes = _boxes([[16, 16, 48, 48], [0, 0, 64, 64], [0, 0, 8, 8], [-96, -96, 160, 160]])
    assigned = point_assign(points, strides, gt_boxes.float())
    positives = (assigned >= 0).nonzero().flatten().tolist()
    assert {i: int(assigned[i]) for i in positives} == {36: 0, 74: 1, 0: 2, 83: 3}

    # pos_num=2 on the 32x32 GT: after 36 (distance 0), cells 28, 35, 37, 44 tie at 8/32 -> lowest index 28.
    assigned = point_assign(points, strides, gt_boxes[:1].float(), pos_num=2)
    assert (assigned == 0).nonzero().flatten().tolist() == [28, 36]

    # Two 32x32 GTs both pick point 36: the first at distance 0, the second (centre (36, 36)) at sqrt(2)*4/32.
    # The nearer keeps it; as in mmdetection the second gets no other point.
    assigned = point_assign(points, strides, _boxes([[16, 16, 48, 48], [20, 20, 52, 52]]).float())
    assert (assigned >= 0).nonzero().flatten().tolist() == [36] and assigned[36] == 0


def test_point_assign_empty():
    points, strides = _points()
    assert (point_assign(points, strides, torch.zeros(0, 4)) == -1).all()
    assert point_assign(torch.zeros(0, 2), torch.zeros(0), _boxes([[0, 0, 8, 8]]).float()).shape == (0,)


def _point_assign_reference(points, strides, gt_boxes, scale, pos_num):
    """mmdetection's loop: GT by GT, the pos_num nearest points of its level, strict < against the recorded one."""
    assigned = [-1] * len(points)
    recorded = [math.inf] * len(points)
    levels = [int(math.log2(s)) for s in strides.tolist()]
    for gt, (x1, y1, x2, y2) in enumerate(gt_boxes.tolist()):
        w, h = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
        level = int((math.log2(w / scale) + math.log2(h / scale)) / 2)
        level = min(max(level, min(levels)), max(levels))
        center = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2], dtype=points.dtype)
        size = torch.tensor([w, h], dtype=points.dtype)
        on_level = [i for i in range(len(points)) if levels[i] == level]
        distance = {i: float(((points[i] - center) / size).norm()) for i in on_level}
        for i in sorted(on_level, key=lambda i: (distance[i], i))[:pos_num]:
            if distance[i] < recorded[i]:
                assigned[i], recorded[i] = gt, distance[i]
    return assigned


def _random_gt_boxes(generator, max_gts=6):
    """Integer boxes, partly outside the 64x64 image, with duplicates; sometimes none."""
    count = int(torch.randint(0, max_gts + 1, (), generator=generator))
    corners = torch.randint(-16, 64, (count, 2), generator=generator)
    sizes = torch.randint(1, 90, (count, 2), generator=generator)
    boxes = torch.cat([corners, corners + sizes], 1).double()
    if count >= 2:
        boxes[-1] = boxes[0]
    return boxes


def test_point_assign_matches_reference_loop():
    points, strides = _points()
    points = points.double()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        gt_boxes = _random_gt_boxes(generator)
        pos_num = int(torch.randint(1, 4, (), generator=generator))
        assigned = point_assign(points, strides, gt_boxes, pos_num=pos_num)
        assert assigned.tolist() == _point_assign_reference(points, strides, gt_boxes, 4, pos_num)


def test_max_iou_assign_hand_cases():
    # IoU with the GT [0, 0, 10, 10]: 1, 100/200 = 0.5, 0, 50/150 = 0.33.
    priors = _boxes([[0, 0, 10, 10], [0, 0, 10, 20], [100, 100, 110, 110], [5, 0, 15, 10]])
    gt = _boxes([[0, 0, 10, 10]])
    assert max_iou_assign(priors, gt).tolist() == [0, 0, -1, -1]
    assert max_iou_assign(priors, gt, neg_iou=0.3).tolist() == [0, 0, -1, -2]

    # A GT overlapping nothing has best IoU 0 >= min_pos_iou = 0: mmdetection gives it every prior (all tie at 0),
    # or only prior 0 without gt_max_assign_all; min_pos_iou > 0 turns this off.
    far = _boxes([[0, 0, 10, 10], [200, 200, 210, 210]])
    assert max_iou_assign(priors, far).tolist() == [1, 1, 1, 1]
    assert max_iou_assign(priors, far, gt_max_assign_all=False).tolist() == [1, 0, -1, -1]
    assert max_iou_assign(priors, far, min_pos_iou=0.1).tolist() == [0, 0, -1, -1]

    # Low-quality match: IoUs 100/900 and 200/900 with [0, 0, 30, 30], both negative, the better one is taken.
    assert max_iou_assign(priors[:2], _boxes([[0, 0, 30, 30]])).tolist() == [-1, 0]
    # Duplicate GTs: the first wins the max over GTs, then the second overwrites it in the low-quality pass.
    assert max_iou_assign(priors[:1], _boxes([[0, 0, 10, 10], [0, 0, 10, 10]])).tolist() == [1]


def test_max_iou_assign_empty():
    priors = _boxes([[0, 0, 10, 10]])
    assert max_iou_assign(priors, torch.zeros(0, 4, dtype=torch.float64)).tolist() == [-1]
    assert max_iou_assign(torch.zeros(0, 4), _boxes([[0, 0, 8, 8]]).float()).shape == (0,)


def _iou(a, b):
    """IoU of two xyxy lists, in torchvision's order of operations."""
    width = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    height = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _max_iou_reference(priors, gt_boxes, pos_iou, neg_iou, min_pos_iou, gt_max_assign_all):
    priors, gt_boxes = priors.tolist(), gt_boxes.tolist()
    if not gt_boxes:
        return [-1] * len(priors)
    iou = [[_iou(p, g) for g in gt_boxes] for p in priors]
    assigned = []
    for row in iou:
        best = max(row)
        assigned.append(row.index(best) if best >= pos_iou else -1 if best < neg_iou else -2)
    for gt in range(len(gt_boxes)):
        column = [row[gt] for row in iou]
        best = max(column)
        if best >= min_pos_iou:
            takers = [i for i, v in enumerate(column) if v == best] if gt_max_assign_all else [column.index(best)]
            for i in takers:
                assigned[i] = gt
    return assigned


def test_max_iou_assign_matches_reference_loop():
    priors = _square_priors(*_points())
    generator = torch.Generator().manual_seed(1)
    for case in range(20):
        gt_boxes = _random_gt_boxes(generator)
        if case % 4 == 1:  # a GT overlapping no prior
            gt_boxes = torch.cat([gt_boxes, _boxes([[500, 500, 510, 510]])])
        options = dict(pos_iou=0.5, neg_iou=0.4, min_pos_iou=(0.0, 0.3)[case % 2], gt_max_assign_all=case % 3 != 0)
        assigned = max_iou_assign(priors, gt_boxes, **options)
        assert assigned.tolist() == _max_iou_reference(priors, gt_boxes, **options)


def test_atss_hand_cases():
    # Level 0: 4x4 points at stride 8 with 16x16 boxes; level 1: 2x2 points at stride 16 with 32x32 boxes.
    points, strides = level_points([(4, 4), (2, 2)], [8, 16])
    priors = _square_priors(points, strides, side=2)
    # GT [0, 0, 32, 32], centre (16, 16), k=2. Level 0: prior 10 (centre (16, 16), IoU 256/1024 = 0.25), then
    # prior 6 (centre (16, 8), first of four at distance 8, IoU 0.25). Level 1: prior 19 (box = GT, IoU 1), then
    # prior 17 (first of two at distance 16, IoU 512/1536 = 1/3). Mean 0.458 + std 0.363 = 0.822: only 19.
    assigned = atss_assign(priors, [16, 4], _boxes([[0, 0, 32, 32]]), k=2)
    assert (assigned >= 0).nonzero().flatten().tolist() == [19]

    # Prior 0 has IoU 0.5 with the GT [0, 0, 10, 10]; eight far priors have IoU 0. k=9 takes all nine:
    # threshold = 1/18 + 1/6 = 0.222. Prior 0's centre (10, 5) lies on the GT's right side (r = 0 <= 0.01): negative.
    far = [[50, 50, 60, 60]] * 8
    assert (atss_assign(_boxes([[0, 0, 20, 10], *far]), [9], _boxes([[0, 0, 10, 10]])) == -1).all()
    # Shifted by 1 px (same IoU 0.5, centre (9, 5) inside with r = 1): positive.
    assert atss_assign(_boxes([[-1, 0, 19, 10], *far]), [9], _boxes([[0, 0, 10, 10]])).tolist() == [0] + [-1] * 8


def test_atss_empty():
    priors = _square_priors(*_points())
    assert (atss_assign(priors, [64, 16, 4], torch.zeros(0, 4, dtype=torch.float64)) == -1).all()
    with pytest.raises(ValueError, match="num_per_level"):
        atss_assign(priors, [64, 16], _boxes([[0, 0, 8, 8]]))


def _atss_reference(priors, num_per_level, gt_boxes, k):
    """Straight from the rule: per GT, per level, the k nearest centres; mean + std; centre inside; max IoU wins."""
    priors, gt_list = priors.tolist(), gt_boxes.tolist()
    centers = [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in priors]
    best = [(-math.inf, -1)] * len(priors)
    for gt, box in enumerate(gt_list):
        gx, gy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        distance = [math.sqrt((cx - gx) ** 2 + (cy - gy) ** 2) for cx, cy in centers]
        candidates, start = [], 0
        for count in num_per_level:
            level = range(start, start + count)
            candidates += sorted(level, key=lambda i: (distance[i], i))[:k]
            start += count
        ious = torch.tensor([_iou(priors[i], box) for i in candidates], dtype=torch.float64)
        threshold = float(ious.mean() + ious.std())
        for i, iou in zip(candidates, ious.tolist(), strict=True):
            cx, cy = centers[i]
            inside = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy) > 0.01
            if iou >= threshold and inside and iou > best[i][0]:
                best[i] = (iou, gt)
    return [gt for _, gt in best]


def test_atss_matches_reference_loop_and_properties():
    points, strides = _points()
    levels = torch.repeat_interleave(torch.arange(3), torch.tensor([64, 16, 4]))
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        # Jittered priors, like boxes decoded from init predictions (some reach outside the image).
        priors = _square_priors(points, strides, side=2) + torch.randint(-6, 7, (84, 4), generator=generator)
        priors[:, 2:] = torch.maximum(priors[:, 2:], priors[:, :2] + 1)
        gt_boxes = _random_gt_boxes(generator)
        k = (3, 9)[int(torch.randint(0, 2, (), generator=generator))]
        assigned = atss_assign(priors, [64, 16, 4], gt_boxes, k=k)
        assert assigned.tolist() == _atss_reference(priors, [64, 16, 4], gt_boxes, k)
        centers = (priors[:, :2] + priors[:, 2:]) / 2
        for gt, box in enumerate(gt_boxes):
            positives = assigned == gt
            per_level = torch.bincount(levels[positives], minlength=3)
            assert (per_level <= torch.tensor([min(k, 64), min(k, 16), min(k, 4)])).all()
            inside = torch.cat([centers[positives] - box[:2], box[2:] - centers[positives]], 1)
            assert (inside > 0.01).all()


def test_gather_assigned():
    gt_boxes, gt_labels = _boxes([[0, 0, 10, 10], [5, 5, 20, 20]]), torch.tensor([3, 1])
    targets = gather_assigned(torch.tensor([1, -1, 0, -2]), gt_boxes, gt_labels, num_classes=4)
    assert targets.labels.tolist() == [1, 4, 3, 4]
    assert targets.positive.tolist() == [True, False, True, False]
    assert targets.boxes.tolist() == [[5, 5, 20, 20], [0, 0, 0, 0], [0, 0, 10, 10], [0, 0, 0, 0]]
    empty = gather_assigned(torch.tensor([-1, -1]), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 2)
    assert empty.labels.tolist() == [2, 2] and not empty.positive.any()
