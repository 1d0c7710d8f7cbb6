import torch

from pointdet.ops.nms import box_voting


def _scene():
    # Class 0: A = [0, 0, 10, 10] (0.9) and B = [1, 0, 11, 10] (0.6), IoU 90/110 = 9/11 >= 0.66.
    # Class 1: C = [0, 0, 10, 10] (0.7), the same box as A but another class, so it votes alone.
    boxes = torch.tensor([[1, 0, 11, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float64)
    scores = torch.tensor([0.6, 0.9, 0.7], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    extra = torch.tensor([[[4, 8]], [[1, 2]], [[0, 0]]], dtype=torch.float64)  # (N, 1, 2) landmark vectors
    return boxes, scores, labels, extra


def test_box_voting_hand_case():
    boxes, scores, labels, extra = _scene()
    voted = box_voting(boxes, scores, labels, extra=extra)
    # Weighted average of A and B: x1 = (0.9*0 + 0.6*1) / 1.5 = 0.4, x2 = (0.9*10 + 0.6*11) / 1.5 = 10.4, score 0.9.
    # Extra: (0.9*[1, 2] + 0.6*[4, 8]) / 1.5 = [2.2, 4.4]. C stays as it is with 0.7.
    # B re-scored: 0.6 * (1 - 9/11) = 0.109 >= 0.05, kept with its own box and vector. A itself is not re-scored.
    expected_boxes = torch.tensor([[0.4, 0, 10.4, 10], [0, 0, 10, 10], [1, 0, 11, 10]], dtype=torch.float64)
    torch.testing.assert_close(voted.boxes, expected_boxes)
    torch.testing.assert_close(voted.scores, torch.tensor([0.9, 0.7, 0.6 * 2 / 11], dtype=torch.float64))
    assert voted.labels.tolist() == [0, 1, 0]
    torch.testing.assert_close(voted.extra, torch.tensor([[[2.2, 4.4]], [[0, 0]], [[4, 8]]], dtype=torch.float64))


def test_box_voting_thresholds_and_limits():
    boxes, scores, labels, _ = _scene()
    # With B at 0.2 its re-scored 0.2 * 2/11 = 0.036 < 0.05 is dropped; the average weights are 0.9 and 0.2.
    voted = box_voting(boxes, torch.tensor([0.2, 0.9, 0.7], dtype=torch.float64), labels)
    assert voted.extra is None and voted.labels.tolist() == [0, 1]
    torch.testing.assert_close(voted.boxes[0], torch.tensor([0.2 / 1.1, 0, 10 + 0.2 / 1.1, 10], dtype=torch.float64))
    # Above the IoU threshold nothing is grouped: every detection is kept as it is.
    voted = box_voting(boxes, scores, labels, iou_threshold=0.9)
    torch.testing.assert_close(voted.boxes, boxes[[1, 2, 0]])
    assert voted.scores.tolist() == [0.9, 0.7, 0.6]
    assert len(box_voting(boxes, scores, labels, max_detections=2).scores) == 2


def test_box_voting_empty():
    voted = box_voting(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), extra=torch.zeros(0, 5, 2))
    assert voted.boxes.shape == (0, 4) and voted.scores.shape == (0,) and voted.extra.shape == (0, 5, 2)


def _box_voting_reference(boxes, scores, labels, iou_threshold, score_threshold):
    """The reference's loop, one class at a time: take the best, merge its group, re-score the other members."""
    from torchvision.ops import box_iou

    output = []
    for label in sorted(set(labels.tolist())):
        pool = sorted((i for i in range(len(scores)) if labels[i] == label), key=lambda i: (-scores[i], i))
        while pool:
            leader = pool[0]
            iou = {i: float(box_iou(boxes[leader : leader + 1], boxes[i : i + 1])) for i in pool}
            group = [i for i in pool if iou[i] >= iou_threshold]
            weight = sum(float(scores[i]) for i in group)
            average = sum(float(scores[i]) * boxes[i] for i in group) / weight
            output.append((average.tolist(), float(scores[leader]), label))
            for i in group[1:]:
                if scores[i] * (1 - iou[i]) >= score_threshold:
                    output.append((boxes[i].tolist(), float(scores[i] * (1 - iou[i])), label))
            pool = [i for i in pool if i not in group]
    return sorted(output, key=lambda detection: -detection[1])


def test_box_voting_matches_reference_loop():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        corners = torch.rand(30, 2, generator=generator, dtype=torch.float64) * 20
        boxes = torch.cat([corners, corners + 10 + torch.rand(30, 2, generator=generator, dtype=torch.float64)], 1)
        scores = torch.rand(30, generator=generator, dtype=torch.float64)
        labels = torch.randint(0, 2, (30,), generator=generator)
        voted = box_voting(boxes, scores, labels, iou_threshold=0.5)
        reference = _box_voting_reference(boxes, scores, labels, 0.5, 0.05)
        expected_boxes, expected_scores, expected_labels = zip(*reference, strict=True)
        torch.testing.assert_close(voted.boxes, torch.tensor(expected_boxes, dtype=torch.float64))
        torch.testing.assert_close(voted.scores, torch.tensor(expected_scores, dtype=torch.float64))
        assert voted.labels.tolist() == list(expected_labels)
