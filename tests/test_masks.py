"""Instance masks: box-relative crop and paste, COCO segm AP through pycocotools, the RoIAlign mask head."""

import json

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, roi_align

from pointdet.data.coco import CocoDataset
from pointdet.evaluation import evaluate_coco, masks_to_coco
from pointdet.models.roi_heads.mask import MaskHead
from pointdet.ops.masks import crop_masks, paste_masks
from pointdet.structures import Detections, Instances
from pointdet.targets.roi_sampling import select_matched_rois

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


def test_mask_loss_trains_on_the_proposal_at_iou_0_6_and_the_gt_and_equals_a_hand_computed_bce():
    """The shared matching keeps the proposal at IoU 0.6 and the appended GT, drops the one at 0.4; the loss is
    recomputed here from torchvision's ``roi_align`` (features at stride 4, half-pixel aligned; the GT mask in image
    pixels) and the binary cross-entropy written out."""
    torch.manual_seed(0)
    head = MaskHead(8, num_classes=3, stride=4, hidden=16)
    feature = torch.randn(1, 8, 16, 16)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 8:44] = 1
    gt = torch.tensor([[8.0, 8, 48, 48]])
    inst = Instances(gt, torch.tensor([2]), torch.zeros(1, 0, 3), masks=masks)
    proposals = torch.tensor([[8.0, 8, 48, 32], [8.0, 8, 48, 24]])
    assert torch.allclose(box_iou(proposals, gt)[:, 0], torch.tensor([0.6, 0.4]))
    rois, matched = select_matched_rois(proposals, gt, 0.5, append_gt=True)
    expected_rois = torch.cat([proposals[:1], gt])
    assert torch.equal(rois, expected_rois) and matched.tolist() == [0, 0]

    loss = head.loss([feature], [proposals], [inst])["loss_mask"]
    pooled = roi_align(feature, [expected_rois], 14, spatial_scale=0.25, sampling_ratio=2, aligned=True)
    logits = head.predictor(F.relu(head.upsample(head.convs(pooled))))[:, 2]  # the GT's class, 2
    targets = roi_align(masks[None].float(), [expected_rois], 28)[:, 0]  # the GT mask resampled inside each RoI
    bce = -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).mean()
    assert loss.item() == pytest.approx(bce.item(), rel=1e-5)
    with_all = torch.cat([proposals, gt])
    pooled_all = roi_align(feature, [with_all], 14, spatial_scale=0.25, sampling_ratio=2, aligned=True)
    logits_all = head.predictor(F.relu(head.upsample(head.convs(pooled_all))))[:, 2]
    targets_all = roi_align(masks[None].float(), [with_all], 28)[:, 0]
    assert loss.item() != pytest.approx(F.binary_cross_entropy_with_logits(logits_all, targets_all).item())


def test_mask_head_state_dict_keeps_its_checkpoint_names():
    """Pooling moved into a parameter-free ``MapRoIPooler``: the saved names (checkpoints, the converter) stay."""
    names = set(MaskHead(8, num_classes=2, hidden=16).state_dict())
    convs = {f"convs.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")}
    assert names == convs | {f"{m}.{p}" for m in ("upsample", "predictor") for p in ("weight", "bias")}


def test_mask_head_needs_ground_truth_masks():
    head = MaskHead(8, num_classes=2)
    inst = Instances(torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([0]), torch.zeros(1, 0, 3))
    with pytest.raises(ValueError, match="ground-truth masks"):
        head.loss([torch.randn(1, 8, 4, 4)], [torch.zeros(0, 4)], [inst])
