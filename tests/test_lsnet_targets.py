"""LSNet targets: ExtremeNet extreme points from polygons, landmark encode/decode round trips, assignment."""

import pytest
import torch

from pointdet.data.coco import CocoDataset
from pointdet.data.shapes import generate_shapes
from pointdet.losses.cross_iou import decode_components, softened_targets
from pointdet.ops.priors import level_points
from pointdet.structures import Instances
from pointdet.targets.lsnet import (
    boxes_from_extremes,
    build_lsnet_targets,
    contour_points,
    extreme_landmarks,
    extreme_points,
    resample_by_edge_length,
    shoelace_area,
)

from .conftest import shared_data


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


def test_contour_of_a_square_is_evenly_spaced_clockwise_from_the_top_centre():
    square = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]], dtype=torch.float64)
    box = torch.tensor([0.0, 0.0, 10.0, 10.0], dtype=torch.float64)
    for polygon in (square, square.flip(0)):  # either orientation gives the same contour
        points = contour_points([polygon], box)
        assert points.shape == (36, 2)
        gaps = (points.roll(-1, dims=0) - points).norm(dim=1)
        torch.testing.assert_close(gaps, torch.full((36,), 40.0 / 36, dtype=torch.float64))  # perimeter / 36
        assert shoelace_area(points) < 0  # the code's "clockwise" (shapely's not-ccw)
        assert points[0, 1] == 0 and abs(points[0, 0] - 5) <= 10 / 18  # nearest (5, 0)
        torch.testing.assert_close(points, contour_points([square], box))


def test_contour_keeps_the_largest_part_and_falls_back_to_the_box():
    big = torch.tensor([[0.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]])
    small = torch.tensor([[30.0, 30.0], [34.0, 30.0], [34.0, 34.0]])
    box = torch.tensor([0.0, 0.0, 34.0, 34.0])
    points = contour_points([small, big], box)
    assert points.amin().item() == 0 and points.amax().item() == 20
    tiny = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]])  # area 2 <= 5: dropped
    fallback = contour_points([tiny], box)
    assert fallback.amin(dim=0).tolist() == [0.0, 0.0] and fallback.amax(dim=0).tolist() == [34.0, 34.0]


def test_resampling_drops_the_vertices_of_the_shortest_edges():
    angles = torch.arange(48) * 2 * torch.pi / 48
    circle = torch.stack([angles.cos(), angles.sin()], dim=1) * 10
    circle[5] = circle[4] * 0.999 + circle[5] * 0.001  # edges 4 -> 5 and 19 -> 20 become the shortest
    circle[20] = circle[19] * 0.9999 + circle[20] * 0.0001
    kept = resample_by_edge_length(circle, 46)
    assert len(kept) == 46 and 4 not in _rows(circle, kept) and 19 not in _rows(circle, kept)
    assert _rows(circle, kept) == sorted(_rows(circle, kept))  # polygon order


def _rows(polygon, points):
    return [int((polygon - point).norm(dim=1).argmin()) for point in points]


def contour_mask_ap(annotation_file, count: int) -> dict:
    """Mask AP of the GT polygons turned into ``count`` contour points and rasterised (LSNet §4.4 upper bound)."""
    import json

    from pycocotools import mask as mask_utils

    from pointdet.evaluation import evaluate_coco

    data = json.loads(annotation_file.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    results = []
    for annotation in (a for a in data["annotations"] if not a["iscrowd"]):
        x, y, w, h = annotation["bbox"]
        segmentation = annotation["segmentation"]
        parts = [torch.tensor(p, dtype=torch.float64).view(-1, 2) for p in segmentation if isinstance(p, list)]
        points = contour_points(parts, torch.tensor([x, y, x + w, y + h], dtype=torch.float64), count)
        height, width = sizes[annotation["image_id"]]
        rle = mask_utils.merge(mask_utils.frPyObjects([points.flatten().tolist()], height, width))
        rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        results.append({"image_id": annotation["image_id"], "category_id": annotation["category_id"], "score": 1.0,
                        "segmentation": rle})  # fmt: skip
    return evaluate_coco(annotation_file, results, iou_type="segm")


@pytest.mark.slow  # about 8 min per point count on the shared 2-core CPU (2026-11-30)
def test_contour_resolution_upper_bound_on_coco_train_mini():
    """Measured 85.5 / 92.5 / 94.1 mask AP at 18 / 36 / 72 points (the paper's COCO figures: 89.0 / 97.4 / 99.2)."""
    annotations = shared_data("coco_train_mini") / "annotations" / "instances_train.json"
    coarse, fine = contour_mask_ap(annotations, 18)["AP"], contour_mask_ap(annotations, 36)["AP"]
    assert 0.8 < coarse < fine and fine > 0.9, (coarse, fine)
