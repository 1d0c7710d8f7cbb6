"""The shared RoI matching and sampling (CPM R-CNN's RoI heads, CentripetalNet's mask head) against plain
``box_iou`` rules."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import box_iou

from pointdet.targets.roi_sampling import sample_rois, select_matched_rois, threshold_matcher


def random_boxes(count: int, generator: torch.Generator) -> torch.Tensor:
    corners = torch.rand(count, 2, generator=generator) * 80
    sizes = 4 + torch.rand(count, 2, generator=generator) * 40
    return torch.cat([corners, corners + sizes], dim=1)


def test_matched_rois_are_those_whose_best_iou_reaches_the_threshold_with_their_best_gt():
    generator = torch.Generator().manual_seed(0)
    gt = random_boxes(5, generator)
    jittered = gt.repeat(40, 1) + torch.randn(200, 4, generator=generator) * 6  # IoUs with the GT from 0 to near 1
    rois = torch.cat([jittered[:, :2], torch.maximum(jittered[:, 2:], jittered[:, :2] + 1)], dim=1)
    for threshold in (0.3, 0.5, 0.7):
        kept, matched = select_matched_rois(rois, gt, threshold, append_gt=True)
        candidates = torch.cat([rois, gt])
        best, index = box_iou(candidates, gt).max(dim=1)
        expected = best >= threshold
        assert expected[-len(gt) :].all() and expected[: len(rois)].any()  # the GT is kept, and some proposals
        assert torch.equal(kept, candidates[expected]) and torch.equal(matched, index[expected])
    capped, _ = select_matched_rois(rois, gt, 0.3, append_gt=False, max_rois=3)
    assert len(capped) == 3


def test_sampling_labels_matched_rois_with_their_class_and_the_rest_background():
    gt = torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 70, 70]])
    labels = torch.tensor([4, 1])
    rois = torch.tensor([[0.0, 0, 10, 6], [0.0, 0, 10, 4], [50.0, 50, 70, 66], [80.0, 80, 90, 90]])  # IoU .6 .4 .8 0
    sampler = BalancedPositiveNegativeSampler(batch_size_per_image=16, positive_fraction=0.5)
    index, roi_labels, matched = sample_rois(rois, gt, labels, threshold_matcher(0.5), sampler)
    by_roi = dict(zip(index.tolist(), zip(roi_labels.tolist(), matched.tolist(), strict=True), strict=True))
    assert set(by_roi) == {0, 1, 2, 3}
    assert by_roi[0] == (5, 0) and by_roi[2] == (2, 1)  # 1 + class, and the matched GT
    assert by_roi[1][0] == 0 and by_roi[3][0] == 0
    index, roi_labels, _ = sample_rois(rois, gt[:0], labels[:0], threshold_matcher(0.5), sampler)
    assert sorted(index.tolist()) == [0, 1, 2, 3] and (roi_labels == 0).all()
