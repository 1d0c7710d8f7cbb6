import torch

from pointdet.decoders.centernet import decode_centernet
from pointdet.ops import draw_gaussian, gaussian_radius
from pointdet.structures import Instances
from pointdet.targets.centernet import build_centernet_targets


def _instances(boxes, labels):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Instances(boxes, torch.tensor(labels, dtype=torch.long), torch.zeros(len(boxes), 0, 3))


def test_known_scene():
    # One 40x24 box at stride 4 in a 128x128 input: output 32x32, centre (10.5, 6.5) -> int (10, 6).
    targets = build_centernet_targets(
        [_instances([[22, 14, 62, 38]], [1])], num_classes=2, output_size=(32, 32), stride=4
    )
    assert targets.heatmap.shape == (1, 2, 32, 32)
    assert targets.heatmap[0, 1, 6, 10] == 1.0 and targets.heatmap[0, 0].sum() == 0
    assert torch.equal(targets.index, torch.tensor([[6 * 32 + 10]]))
    torch.testing.assert_close(targets.size, torch.tensor([[[10.0, 6.0]]]))
    torch.testing.assert_close(targets.offset, torch.tensor([[[0.5, 0.5]]]))
    radius = int(gaussian_radius(torch.tensor([6.0]), torch.tensor([10.0])).item())
    expected = draw_gaussian(torch.zeros(32, 32), (10, 6), radius)
    torch.testing.assert_close(targets.heatmap[0, 1], expected)


def test_batched_splat_equals_per_object_reference():
    generator = torch.Generator().manual_seed(0)
    instances = []
    for _ in range(3):
        xy = torch.rand(6, 2, generator=generator) * 100
        wh = torch.rand(6, 2, generator=generator) * 60 + 2
        instances.append(
            Instances(torch.cat([xy, xy + wh], 1), torch.randint(0, 3, (6,), generator=generator), torch.zeros(6, 0, 3))
        )
    for mode in ("centernet", "cornernet"):
        targets = build_centernet_targets(instances, 3, (32, 40), 4, radius_mode=mode)
        reference = torch.zeros(3, 3, 32, 40)
        for b, inst in enumerate(instances):
            boxes = inst.boxes / 4
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 39)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 31)
            for box, label in zip(boxes, inst.labels, strict=True):
                w, h = box[2] - box[0], box[3] - box[1]
                if w <= 0 or h <= 0:
                    continue
                radius = max(0, int(gaussian_radius(h.ceil()[None], w.ceil()[None], 0.7, mode).item()))
                center = ((box[:2] + box[2:]) / 2).floor().long().tolist()
                draw_gaussian(reference[b, label], tuple(center), radius)
        torch.testing.assert_close(targets.heatmap, reference)


def test_empty_image_and_padding_slots():
    targets = build_centernet_targets([_instances([], []), _instances([[0, 0, 16, 16]], [0])], 1, (16, 16), 4)
    assert targets.mask.tolist() == [[0.0], [1.0]]
    assert targets.heatmap[0].sum() == 0


def test_encode_then_decode_returns_ground_truth():
    boxes = [[8.0, 12.0, 56.0, 40.0], [70.0, 64.0, 120.0, 122.0], [30.5, 80.25, 50.0, 100.0]]
    labels = [0, 2, 1]
    stride, size = 4, (32, 32)
    targets = build_centernet_targets([_instances(boxes, labels)], 3, size, stride)
    # Perfect predictions: the target heatmap, and size/offset maps holding the targets at the centres.
    size_map, offset_map = torch.zeros(1, 2, *size), torch.zeros(1, 2, *size)
    for slot in range(3):
        y, x = divmod(int(targets.index[0, slot]), size[1])
        size_map[0, :, y, x] = targets.size[0, slot]
        offset_map[0, :, y, x] = targets.offset[0, slot]
    detections = decode_centernet(targets.heatmap, size_map, offset_map, stride, k=3)[0]
    assert torch.all(detections.scores == 1.0)
    order = detections.labels.argsort()
    torch.testing.assert_close(detections.boxes[order], torch.tensor(boxes)[[0, 2, 1]], atol=1e-4, rtol=0)
    assert detections.labels[order].tolist() == [0, 1, 2]
