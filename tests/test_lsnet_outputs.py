"""LSNet's landmarks in the outputs: decoded with their box (plain and flip test), contour targets encoded then decoded,
drawn by ``predict`` and written to its JSON, polygon masks through pycocotools."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from pointdet.decoders.lsnet import LSNetPostprocess
from pointdet.engine.visualize import class_color, draw_detections
from pointdet.evaluation.coco import prediction_records
from pointdet.losses.cross_iou import softened_targets
from pointdet.models.heads.lsnet import LSNetOutputs
from pointdet.ops.masks import instance_masks, rasterise_polygons
from pointdet.ops.priors import level_points
from pointdet.structures import Detections, Instances
from pointdet.targets.lsnet_tasks import Contours, ExtremePoints

SIZES, STRIDES = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], [8, 16, 32, 64, 128]
WIDTH = 64  # of the frame the priors above cover
POLYGON = torch.tensor([[20.0, 6.0], [50.0, 30.0], [35.0, 55.0], [8.0, 28.0], [12.0, 14.0]])  # clockwise on screen


def gt_instances(polygon: torch.Tensor) -> Instances:
    box = torch.cat([polygon.amin(dim=0), polygon.amax(dim=0)])[None]
    return Instances(box, torch.tensor([1]), torch.zeros(1, 0, 3), polygons=[[polygon]])


def perfect_outputs(landmarks: torch.Tensor, prior: int, score: float) -> LSNetOutputs:
    """Outputs whose only confident prior regresses ``landmarks`` (V, 2) exactly (the softened targets)."""
    priors, prior_strides = level_points(SIZES, STRIDES)
    components = torch.full((1, len(priors), len(landmarks), 4), 0.1)
    components[0, prior] = softened_targets(landmarks - priors[prior])
    scores = torch.full((1, len(priors), 2), -10.0)
    scores[0, prior, 1] = score
    return LSNetOutputs(scores, components, components, priors[None], prior_strides[None])


def mirrored(landmarks: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """What a perfect network regresses on the mirrored image: the landmarks mirrored, in the task's order."""
    flipped = landmarks[list(order)]
    return torch.stack([WIDTH - flipped[:, 0], flipped[:, 1]], dim=-1)


@pytest.mark.parametrize("task", [ExtremePoints(), Contours()], ids=["extreme_points", "contours"])
def test_gt_landmarks_encoded_then_decoded_come_back_with_their_box(task):
    """Oracle: each task's GT landmarks as predictions decode to the task's box and the landmarks themselves, in the
    plain pass and, with the mirrored pass scoring higher so that its copy survives NMS, in the flip test."""
    gt, landmarks = task.ground_truth_landmarks(gt_instances(POLYGON))
    landmarks = landmarks[0]
    field = "landmarks" if isinstance(task, ExtremePoints) else "contours"
    expected = landmarks[:4] if isinstance(task, ExtremePoints) else landmarks[:36]
    postprocess = LSNetPostprocess(task)
    (plain,) = postprocess(perfect_outputs(landmarks, 27, 5.0))
    (flip,) = postprocess(
        perfect_outputs(landmarks, 27, 5.0), perfect_outputs(mirrored(landmarks, task.mirror_order), 36, 6.0)
    )
    for detections, score in ((plain, 5.0), (flip, 6.0)):
        assert len(detections) == 1 and detections.scores.tolist() == pytest.approx(
            [torch.sigmoid(torch.tensor(score)).item()]
        )
        torch.testing.assert_close(detections.boxes, gt.boxes)
        torch.testing.assert_close(getattr(detections, field)[0], expected, atol=1e-4, rtol=0)
    assert batched_boxes_only(postprocess, landmarks).shape == (1, 5, 4)


def batched_boxes_only(postprocess, landmarks):
    """The export path (``batched``) gives boxes alone."""
    batched = postprocess.batched(perfect_outputs(landmarks, 27, 5.0), k=5)
    assert batched.landmarks is None and batched.contours is None
    return batched.boxes


def test_contour_targets_encoded_then_decoded_return_the_gt_polygon():
    """36 contour points of a convex polygon, through the softened targets and the decoder, rasterise to the GT
    polygon's mask (pycocotools on both): IoU >= 0.97; the points lie on the polygon's edges, clockwise from the
    top centre (the box centre is the last vector)."""
    task = Contours()
    gt, landmarks = task.ground_truth_landmarks(gt_instances(POLYGON))
    (detections,) = LSNetPostprocess(task)(perfect_outputs(landmarks[0], 27, 5.0))
    decoded = rasterise_polygons(detections.contours, 64, 64)
    reference = rasterise_polygons(POLYGON[None], 64, 64)
    iou = (decoded & reference).sum() / (decoded | reference).sum()
    assert iou >= 0.97, iou
    torch.testing.assert_close(landmarks[0, 36], (gt.boxes[0, :2] + gt.boxes[0, 2:]) / 2)
    edges = torch.stack([POLYGON, POLYGON.roll(-1, dims=0)], dim=1)  # (5, 2, 2)
    for point in detections.contours[0]:
        a, b = edges[:, 0], edges[:, 1]
        t = ((point - a) * (b - a)).sum(-1) / (b - a).pow(2).sum(-1)
        gap = (a + t.clamp(0, 1)[:, None] * (b - a) - point).norm(dim=-1).min()
        assert gap < 1e-3, (point, gap)
    x, y = detections.contours[0].unbind(-1)
    assert 0.5 * (x * y.roll(-1) - y * x.roll(-1)).sum() < 0  # clockwise on screen = negative shoelace area
    top_centre = torch.tensor([(x.min() + x.max()) / 2, y.min()])
    assert int((detections.contours[0] - top_centre).norm(dim=-1).argmin()) == 0


def test_rasterised_contours_are_pycocotools_polygon_masks():
    square = torch.tensor([[[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]]])
    masks = rasterise_polygons(square, 40, 50)
    reference = mask_utils.decode(mask_utils.frPyObjects(square.flatten(1).double().tolist(), 40, 50))
    assert masks.shape == (1, 40, 50) and np.array_equal(masks[0].numpy(), reference[..., 0].astype(bool))
    detections = Detections(torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([0.9]), torch.tensor([0]))
    with pytest.raises(ValueError, match="no masks"):
        instance_masks(detections, 40, 50)


def test_predict_draws_and_writes_extreme_points_and_contours():
    """The drawing puts class-coloured dots on the landmarks and tints the contour's inside; the JSON record has
    the landmarks, the contour and its RLE mask (pycocotools' area of the polygon); ``rescale`` moves the points."""
    contour = torch.tensor([[[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]]])
    extremes = torch.tensor([[[20.0, 10.0], [10.0, 20.0], [20.0, 30.0], [30.0, 20.0]]])
    detections = Detections(
        torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([0.9]), torch.tensor([1]),
        landmarks=extremes, contours=contour,
    )  # fmt: skip
    image = torch.zeros(3, 48, 64, dtype=torch.uint8)
    drawn = np.asarray(draw_detections(image, detections, ["a", "b"], 0.5))
    color = np.asarray(class_color(1))
    assert np.abs(drawn[20, 10].astype(int) - color).max() <= 1  # the left extreme point's dot
    assert (drawn[20, 20] > 0).any() and (drawn[40, 50] == 0).all()  # the tinted inside, the untouched outside
    (record,) = prediction_records(detections, 7, [5, 6], ["a", "b"], (48, 64))
    assert record["landmarks"] == extremes[0].tolist() and record["contour"] == contour.flatten().tolist()
    polygon_area = mask_utils.area(mask_utils.frPyObjects(contour.flatten(1).double().tolist(), 48, 64))[0]
    assert mask_utils.area(record["segmentation"]) == polygon_area
    assert record["category_id"] == 6 and record["category_name"] == "b"
    halved = detections.rescale(2.0, 2.0)
    torch.testing.assert_close(halved.contours, contour / 2)
    torch.testing.assert_close(halved.landmarks, extremes / 2)


def test_multi_scale_merge_votes_boxes_and_landmarks():
    """Hand-computed box voting (IoU 0.66): the best detection's group averages boxes and landmarks by score, keeps
    the best score; the member re-scored by s (1 - IoU) stays; another class votes alone."""
    landmarks = torch.tensor(
        [[[5.0, 0.0], [0.0, 5.0], [5.0, 10.0], [10.0, 5.0]], [[6.0, 0.0], [1.0, 5.0], [6.0, 10.0], [11.0, 5.0]]]
    )
    first = Detections(
        torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([0.9]), torch.tensor([0]), landmarks=landmarks[:1]
    )
    second = Detections(
        torch.tensor([[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0]]),
        torch.tensor([0.6, 0.3]),
        torch.tensor([0, 1]),
        landmarks=torch.cat([landmarks[1:], landmarks[:1]]),
    )
    merged = LSNetPostprocess(ExtremePoints()).merge_scales([first, second])
    iou = 90 / 110
    torch.testing.assert_close(merged.scores, torch.tensor([0.9, 0.3, 0.6 * (1 - iou)]))
    assert merged.labels.tolist() == [0, 1, 0] and merged.contours is None
    torch.testing.assert_close(merged.boxes[0], torch.tensor([0.4, 0.0, 10.4, 10.0]))
    torch.testing.assert_close(merged.landmarks[0], (0.9 * landmarks[0] + 0.6 * landmarks[1]) / 1.5)
    torch.testing.assert_close(merged.landmarks[1:], torch.stack([landmarks[0], landmarks[1]]))


def test_predict_at_two_scales_merges_with_the_models_own_voting():
    from pointdet.configs import LSNetConfig
    from pointdet.engine.inference import predict_images
    from pointdet.models.build import build_model

    torch.manual_seed(0)
    config = LSNetConfig(task="segmentation", backbone="resnet18", channels=64, stacked_convs=1, tower="conv")
    model = build_model(config, 2, with_backbone_weights=False).eval()
    model.postprocess.score_threshold = 0.0
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    (detections,) = predict_images(model, images, scales=(1.0, 0.5), k=20)
    assert 0 < len(detections) <= 20 and detections.contours.shape == (len(detections), 36, 2)
    assert bool((detections.scores[:-1] >= detections.scores[1:]).all())
