"""The batched RepPoints-family decode against the exact per-image one: ``ops.nms.fixed_size_nms`` equals
torchvision's class-wise ``batched_nms``, and ``RepPointsPostprocess`` (fixed-size decode, certified per image,
exact fallback otherwise) equals thresholding + ``batched_nms`` + top k on every image."""

import pytest
import torch
from torchvision.ops import batched_nms

from pointdet.decoders.point_sets import RepPointsOutputs
from pointdet.decoders.reppoints import RepPointsPostprocess, image_frames
from pointdet.ops.nms import fixed_size_nms
from pointdet.ops.priors import level_points


def crowded_boxes(generator: torch.Generator, batch: int, count: int) -> torch.Tensor:
    """(B, N, 4) boxes around a few centres, so that chains of suppression occur."""
    centres = torch.rand(batch, 4, 2, generator=generator)[:, torch.randint(0, 4, (count,), generator=generator)] * 60
    sizes = 5 + torch.rand(batch, count, 2, generator=generator) * 20
    jitter = torch.randn(batch, count, 2, generator=generator) * 3
    return torch.cat([centres + jitter - sizes / 2, centres + jitter + sizes / 2], dim=-1)


@pytest.mark.parametrize("iou", [0.5, 0.6])
def test_fixed_size_nms_equals_torchvision_batched_nms(iou):
    generator = torch.Generator().manual_seed(0)
    boxes = crowded_boxes(generator, 3, 300)
    labels = torch.randint(0, 3, (3, 300), generator=generator)
    scores = torch.rand(3, 300, generator=generator).sort(dim=1, descending=True).values
    valid = torch.rand(3, 300, generator=generator) > 0.1
    result = fixed_size_nms(boxes, labels, valid, iou, iterations=300)  # enough iterations for any chain
    assert result.exact.all()
    for b in range(3):
        index = valid[b].nonzero().squeeze(1)
        expected = index[batched_nms(boxes[b, index], scores[b, index], labels[b, index], iou)].sort().values
        assert result.keep[b].nonzero().squeeze(1).tolist() == expected.tolist()
    short = fixed_size_nms(boxes, labels, valid, iou, iterations=1)
    assert ((short.keep == result.keep).all(dim=1) | ~short.exact).all()  # exact only where it is the result


def random_outputs(generator: torch.Generator, batch: int, classes: int) -> RepPointsOutputs:
    """Outputs of a 128 px input over strides 8..128 with 9-point sets scattered around every prior."""
    strides = (8, 16, 32, 64, 128)
    priors, prior_strides = level_points([(128 // s, 128 // s) for s in strides], strides)
    count = len(priors)
    points = priors[None, :, None] + torch.randn(batch, count, 9, 2, generator=generator) * prior_strides[:, None, None]
    return RepPointsOutputs(
        scores=torch.randn(batch, count, classes, generator=generator) * 2 - 2,
        points_init=points.flatten(2),
        points_refine=points.flatten(2),
        priors=priors.expand(batch, -1, -1),
        strides=prior_strides.expand(batch, -1),
        moment_transfer=torch.zeros(batch, 2),
    )


# (1000, 20): every image certified; (30, 100): none (more pairs pass than 30 and fewer than 100 are kept), so every
# image takes the exact fallback.
@pytest.mark.parametrize(("max_candidates", "k"), [(1000, 20), (30, 100)])
def test_postprocess_equals_the_exact_per_image_decode(max_candidates, k):
    generator = torch.Generator().manual_seed(1)
    post = RepPointsPostprocess("minmax", score_threshold=0.05, nms_iou=0.5, pre_nms=50, max_candidates=max_candidates)
    outputs, flipped = random_outputs(generator, 3, 4), random_outputs(generator, 3, 4)
    frame = image_frames(outputs.priors, outputs.strides)
    rows, scores = post.merged_candidates(outputs, flipped, frame)
    top = post.top_detections(outputs, flipped, k, frame)
    assert top.exact.all() == (max_candidates == 1000) and top.exact.any() == (max_candidates == 1000)
    for detections, image_rows, image_scores in zip(post(outputs, flipped, k=k), rows, scores, strict=True):
        boxes, kept_scores, labels = post.select(image_rows, image_scores, k)
        assert len(detections) == len(boxes) > 0
        torch.testing.assert_close(detections.boxes, boxes)
        torch.testing.assert_close(detections.scores, kept_scores)
        assert detections.labels.tolist() == labels.tolist()
