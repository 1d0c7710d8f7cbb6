"""Instance masks: box-relative crop and paste, COCO segm AP through pycocotools, the RoIAlign mask head."""

import json

import pytest
import torch

from pointdet.data.coco import CocoDataset
from pointdet.evaluation import evaluate_coco, masks_to_coco
from pointdet.models.heads import MaskHead
from pointdet.ops.masks import crop_masks, paste_masks
from pointdet.structures import Detections, Instances

from .conftest import shared_data


def test_crop_then_paste_returns_a_rectangle():
    masks = torch.zeros(1, 100, 120, dtype=torch.uint8)
    masks[0, 20:60, 30:90] = 1
    boxes = torch.tensor([[30.0, 20, 90, 60]])
    cropped = crop_masks(masks, boxes, torch.tensor([0]), 28)
    assert cropped.shape == (1, 28, 28) and cropped.min() > 0.5
    pasted = paste_masks(cropped, boxes, 100, 120)
    intersection = (pasted & masks.bool()).sum()
    assert intersection / (pasted | masks.bool()).sum() > 0.95


def test_ground_truth_masks_through_28x28_score_high_segm_ap_on_coco_train_mini():
    """GT boxes with their masks cropped to 28 x 28 and pasted back, evaluated by pycocotools as segm results."""
    root = shared_data("coco_train_mini")
    annotation_file = root / "annotations" / "instances_train.json"
    coco = CocoDataset(annotation_file, root / "images", with_masks=True)
    detections, image_ids, sizes = [], [], []
    for index, record in enumerate(coco.records[:12]):
        inst = coco.instances(index, record.height, record.width)
        masks = crop_masks(inst.masks, inst.boxes, torch.arange(len(inst)), 28)
        detections.append(Detections(inst.boxes, torch.ones(len(inst)), inst.labels, masks=masks))
        image_ids.append(record.image_id)
        sizes.append((record.height, record.width))
    results = masks_to_coco(detections, image_ids, coco.category_ids, sizes)
    assert results and {"segmentation", "score", "category_id", "image_id"} <= set(results[0])
    json.dumps(results)  # RLE counts are text, so the results file can be written
    metrics = evaluate_coco(annotation_file, results, image_ids, iou_type="segm")
    # 28 x 28 is Mask R-CNN's resolution: thin and large objects lose detail, so AP50 stays near 1, AP below it.
    assert metrics["AP50"] > 0.95 and metrics["AP"] > 0.6, metrics


def test_mask_head_trains_on_matched_proposals_only():
    torch.manual_seed(0)
    head = MaskHead(8, num_classes=3, stride=4, hidden=16)
    features = [torch.randn(1, 8, 16, 16)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 8:40] = 1
    inst = Instances(torch.tensor([[8.0, 8, 40, 40]]), torch.tensor([2]), torch.zeros(1, 0, 3), masks=masks)
    far = torch.tensor([[44.0, 44, 60, 60]])  # IoU 0 with the object: not a mask RoI
    assert head(features, [torch.cat([inst.boxes, far])]).shape == (2, 3, 28, 28)
    alone = head.loss(features, [torch.zeros(0, 4)], [inst])["loss_mask"]
    with_far = head.loss(features, [far], [inst])["loss_mask"]
    assert alone.item() == pytest.approx(with_far.item())  # the unmatched proposal changes nothing
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        loss = head.loss(features, [far], [inst])["loss_mask"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * alone.item()
    dets = head.predict(features, [Detections(inst.boxes, torch.ones(1), inst.labels)])
    assert dets[0].masks.shape == (1, 28, 28) and dets[0].masks[0, 2:-2, 2:-2].min() > 0.9  # soft at the border


def test_mask_head_needs_ground_truth_masks():
    head = MaskHead(8, num_classes=2)
    inst = Instances(torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([0]), torch.zeros(1, 0, 3))
    with pytest.raises(ValueError, match="ground-truth masks"):
        head.loss([torch.randn(1, 8, 4, 4)], [torch.zeros(0, 4)], [inst])
