"""LSNet targets: ExtremeNet extreme points from polygons, landmark encode/decode round trips, assignment."""

import torch

from pointdet.data.coco import CocoDataset
from pointdet.data.shapes import generate_shapes
from pointdet.losses.cross_iou import decode_components, softened_targets
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.lsnet import boxes_from_extremes, build_lsnet_targets, extreme_landmarks, extreme_points


def test_rectangle_extremes_are_its_side_midpoints_wherever_the_vertex_list_starts():
    rectangle = torch.tensor([[0.0, 20.0], [0.0, 0.0], [10.0, 0.0], [10.0, 20.0]])
    expected = [[5.0, 0.0], [0.0, 10.0], [5.0, 20.0], [10.0, 10.0]]  # top, left, bottom, right
    for shift in range(4):
        assert extreme_points(rectangle.roll(shift, dims=0)).tolist() == expected


def test_near_flat_extremes_within_two_percent_are_averaged():
    # height 30 -> tolerance 0.02 * 31 = 0.62: the top run holds (2, 0) and (8, 0.5) but not (9, 1).
    polygon = torch.tensor([[2.0, 0.0], [8.0, 0.5], [9.0, 1.0], [12.0, 30.0], [0.0, 29.0]])
    top, left, bottom, right = extreme_points(polygon).tolist()
    assert top == [5.0, 0.0]
    assert bottom == [12.0, 30.0] and left == [0.0, 29.0] and right == [12.0, 30.0]


def test_mirrored_polygon_swaps_left_and_right():
    polygon = torch.tensor([[3.0, 1.0], [9.0, 4.0], [7.0, 12.0], [1.0, 8.0]])
    mirrored = polygon * torch.tensor([-1.0, 1.0]) + torch.tensor([20.0, 0.0])
    top, left, bottom, right = extreme_points(polygon)
    m_top, m_left, m_bottom, m_right = extreme_points(mirrored)
    flip = torch.tensor([-1.0, 1.0])
    assert torch.allclose(m_left, right * flip + torch.tensor([20.0, 0.0]))
    assert torch.allclose(m_right, left * flip + torch.tensor([20.0, 0.0]))
    assert torch.allclose(m_top, top * flip + torch.tensor([20.0, 0.0]))


def test_shapes_extremes_encode_and_decode_back_to_the_gt(tmp_path):
    shapes = generate_shapes(tmp_path, num_train=6, num_val=1, image_size=128, seed=0)
    dataset = CocoDataset(shapes.train_json, shapes.train_images, with_polygons=True)
    for index in range(len(dataset)):
        instances = dataset.instances(index, 128, 128)
        landmarks = extreme_landmarks(instances)  # (M, 5, 2)
        # the box of the extremes is the polygon's extent, the GT box of the shapes
        assert torch.allclose(boxes_from_extremes(landmarks), instances.boxes, atol=0.02)
        # vectors from any anchor, softened, decoded by the per-axis maximum, give the landmarks back
        anchor = torch.tensor([40.0, 72.0])
        decoded = decode_components(softened_targets(landmarks - anchor)) + anchor
        assert torch.allclose(decoded, landmarks, atol=1e-4)
        assert torch.allclose(landmarks[:, 4], (instances.boxes[:, :2] + instances.boxes[:, 2:]) / 2)


def test_objects_without_polygons_use_the_border_centres():
    instances = Instances(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), torch.tensor([0]), torch.zeros(1, 0, 3))
    expected = [[20.0, 20.0], [10.0, 40.0], [20.0, 60.0], [30.0, 40.0], [20.0, 40.0]]
    assert extreme_landmarks(instances)[0].tolist() == expected
    with_empty_part = Instances(instances.boxes, instances.labels, instances.keypoints, polygons=[[]])
    assert extreme_landmarks(with_empty_part)[0].tolist() == expected


def test_assignment_gathers_each_stage_landmarks_and_labels():
    priors, strides = level_points([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], [8, 16, 32, 64, 128])
    box = torch.tensor([[30.0, 20.0, 70.0, 60.0]])  # 40 px: point level log2(40/4) = 3.3 -> stride 8
    instances = Instances(box, torch.tensor([2]), torch.zeros(1, 0, 3))
    landmarks = extreme_landmarks(instances)
    candidates = torch.cat([priors - 16, priors + 16], dim=1)  # 32 px boxes around every prior
    targets = build_lsnet_targets(priors, strides, candidates[None], [instances], [landmarks], num_classes=3)
    assert targets.init_positive.sum() == 1
    (init,) = targets.init_positive[0].nonzero().flatten().tolist()
    assert strides[init] == 8 and priors[init].tolist() == [48.0, 40.0]  # nearest the centre (50, 40)
    assert torch.equal(targets.init_landmarks[0, init], landmarks[0])
    refine = targets.refine_positive[0]
    assert refine.any() and (targets.labels[0][refine] == 2).all() and (targets.labels[0][~refine] == 3).all()
    centres = priors[refine]
    assert ((centres > box[0, :2]) & (centres < box[0, 2:])).all()
    assert torch.equal(targets.refine_landmarks[0][refine], landmarks.expand(int(refine.sum()), -1, -1))
    assert (targets.refine_landmarks[0][~refine] == 0).all()
    empty = build_lsnet_targets(
        priors, strides, candidates[None], [Instances.empty()], [torch.zeros(0, 5, 2)], num_classes=3
    )
    assert not empty.init_positive.any() and not empty.refine_positive.any() and (empty.labels == 3).all()
