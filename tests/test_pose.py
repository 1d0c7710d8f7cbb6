"""CenterNet pose: targets round-trip through the decoder, the snapping rule, the flip test, keypoint AP
against pycocotools, overfitting shapes and a few steps on real COCO persons."""

import json

import pytest
import torch

from pointdet.configs import CenterNetConfig, DataConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset, collate
from pointdet.data.transforms import eval_transforms
from pointdet.decoders.centernet import per_image
from pointdet.decoders.pose import decode_pose, snap_joints
from pointdet.engine.data import eval_loader
from pointdet.engine.evaluate import evaluate_detector
from pointdet.evaluation import evaluate_coco, keypoint_sigmas, keypoints_to_coco
from pointdet.models.build import build_model
from pointdet.structures import Detections
from pointdet.targets.centernet import build_centernet_targets
from pointdet.targets.pose import build_pose_targets

from .conftest import shared_data
from .helpers import fit


def _shapes_batch(shapes, count, size=64):
    coco = CocoDataset(shapes.train_json, shapes.train_images)
    return coco, collate([TransformedDataset(coco, eval_transforms(size))[i] for i in range(count)])


def _paint(values, index, mask, shape):
    """Maps (B, D, H, W) holding ``values`` (B, M, D) at flat positions ``index`` (B, M) where ``mask``."""
    batch, _, dims = values.shape
    maps = torch.zeros(batch, dims, shape[0] * shape[1])
    for b in range(batch):
        keep = mask[b] > 0
        maps[b][:, index[b][keep]] = values[b][keep].T
    return maps.view(batch, dims, *shape)


def test_encode_then_decode_returns_the_joints(tiny_shapes):
    _, batch = _shapes_batch(tiny_shapes, 4)
    stride, shape = 4, (16, 16)
    centers = build_centernet_targets(batch.instances, 3, shape, stride)
    pose = build_pose_targets(batch.instances, centers, stride)
    assert pose.mask.sum() == 4 * centers.mask.sum()  # every shape joint is labelled and inside
    maps = {
        "heatmap": centers.heatmap,
        "size": _paint(centers.size, centers.index, centers.mask, shape),
        "offset": _paint(centers.offset, centers.index, centers.mask, shape),
        "joints": _paint(pose.joints, centers.index, centers.mask, shape),
        "joint_heatmap": pose.heatmap,
        "joint_offset": _paint(pose.offset, pose.index, pose.mask, shape),
    }
    for snap in (True, False):
        for b, detections in enumerate(per_image(decode_pose(**maps, stride=stride, k=20, snap=snap))):
            truth = batch.instances[b]
            found = detections[detections.scores == 1.0]
            assert len(found) == len(truth)
            order = torch.cdist(truth.boxes, found.boxes).argmin(dim=1)
            torch.testing.assert_close(found.boxes[order], truth.boxes, atol=1e-4, rtol=0)
            torch.testing.assert_close(found.keypoints[order][..., :2], truth.keypoints[..., :2], atol=1e-4, rtol=0)


def test_snapping_rule():
    # One object with box (0, 0)-(20, 20) in output pixels and 4 joint types, each with one heatmap peak.
    heatmap = torch.zeros(1, 4, 32, 32)
    heatmap[0, 0, 5, 5] = 0.9  # 1 px from the regression, inside the box: snapped
    heatmap[0, 1, 5, 25] = 0.9  # outside the box: keep the regression
    heatmap[0, 2, 18, 18] = 0.9  # inside but 0.3 * 20 = 6 px away is exceeded: keep
    heatmap[0, 3, 10, 11] = 0.05  # below the 0.1 threshold: keep
    regressed = torch.tensor([[[[5.0, 6.0], [19.0, 5.0], [8.0, 8.0], [10.0, 10.0]]]])
    boxes = torch.tensor([[[0.0, 0.0, 20.0, 20.0]]])
    joints, scores = snap_joints(regressed, boxes, heatmap, torch.zeros(1, 2, 32, 32), k=5)
    expected = regressed.clone()
    expected[0, 0, 0] = torch.tensor([5.0, 5.0])
    torch.testing.assert_close(joints, expected)
    assert scores[0, 0].tolist() == pytest.approx([0.9, 0.0, 0.0, 0.0])


def test_flip_test_with_perfect_plain_and_mirrored_passes_returns_the_joints(tiny_shapes):
    # Perfect outputs for the images and for their mirror images, encoded by the real target builder: the
    # flip-test merge must give back the ground truth (this caught a one-pixel bias in the reference's merge).
    from pointdet.data.transforms import horizontal_flip

    coco, batch = _shapes_batch(tiny_shapes, 4)
    samples = [TransformedDataset(coco, eval_transforms(64))[i] for i in range(4)]
    mirrored_batch = collate([horizontal_flip(s, coco.flip_pairs) for s in samples])
    model = build_model(CenterNetConfig(task="pose", backbone="resnet18"), 3, 4, coco.flip_pairs)
    head = model.head

    def perfect(instances):
        centers = build_centernet_targets(instances, 3, (16, 16), 4)
        pose = build_pose_targets(instances, centers, 4)
        logit = torch.logit(torch.cat([centers.heatmap, pose.heatmap], 1).clamp(1e-4, 1 - 1e-4))
        return head.Outputs(
            logit[:, :3],
            _paint(centers.size, centers.index, centers.mask, (16, 16)),
            _paint(centers.offset, centers.index, centers.mask, (16, 16)),
            _paint(pose.joints, centers.index, centers.mask, (16, 16)),
            logit[:, 3:],
            _paint(pose.offset, pose.index, pose.mask, (16, 16)),
        )

    for b, detections in enumerate(
        model.postprocess(perfect(batch.instances), perfect(mirrored_batch.instances), k=20)
    ):
        truth = batch.instances[b]
        found = detections[: len(truth)]
        order = torch.cdist(truth.boxes, found.boxes).argmin(dim=1)
        torch.testing.assert_close(found.keypoints[order][..., :2], truth.keypoints[..., :2], atol=1e-3, rtol=0)


def test_keypoint_ap_of_ground_truth_is_one_and_matches_pycocotools(tiny_shapes):
    coco = CocoDataset(tiny_shapes.val_json, tiny_shapes.train_images.parent / "val")
    detections = [
        Detections(
            torch.from_numpy(r.boxes),
            torch.ones(len(r.boxes)),
            torch.from_numpy(r.labels),
            torch.from_numpy(r.keypoints),
        )
        for r in coco.records
    ]
    ids = [r.image_id for r in coco.records]
    perfect = evaluate_coco(
        tiny_shapes.val_json,
        keypoints_to_coco(detections, ids, coco.category_ids),
        ids,
        iou_type="keypoints",
        keypoint_sigmas=keypoint_sigmas(4),
    )
    assert perfect["AP"] == pytest.approx(1.0)
    # A 1-pixel shift of every joint costs OKS: the wrapper reports what pycocotools computes directly.
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    shifted = [Detections(d.boxes, d.scores, d.labels, d.keypoints + torch.tensor([1.0, 0.0, 0.0])) for d in detections]
    results = keypoints_to_coco(shifted, ids, coco.category_ids)
    ours = evaluate_coco(tiny_shapes.val_json, results, iou_type="keypoints", keypoint_sigmas=keypoint_sigmas(4))
    ground_truth = COCO(str(tiny_shapes.val_json))
    reference = COCOeval(ground_truth, ground_truth.loadRes([dict(r) for r in results]), "keypoints")
    reference.params.kpt_oks_sigmas = np.full(4, 0.05)
    reference.evaluate(), reference.accumulate(), reference.summarize()
    assert 0.0 < ours["AP"] < 1.0
    assert list(ours.values()) == pytest.approx(list(reference.stats[:10]), abs=1e-12)


def test_pose_overfits_four_shapes_images(tmp_path):
    from pointdet.data.shapes import generate_shapes
    from pointdet.engine.inference import predict_images, to_original_pixels

    torch.manual_seed(0)
    shapes = generate_shapes(tmp_path, num_train=4, num_val=1, image_size=128, seed=0)
    coco, batch = _shapes_batch(shapes, 4, size=128)
    model = build_model(CenterNetConfig(task="pose", backbone="resnet18"), 3, 4, coco.flip_pairs)
    history = fit(model, batch, steps=150)
    assert history[-1] < 0.05 * history[0], history[::10]
    model.eval()
    detections = to_original_pixels(predict_images(model, batch.images), batch.scales, batch.orig_sizes)
    results = keypoints_to_coco(detections, batch.image_ids, coco.category_ids)
    metrics = evaluate_coco(shapes.train_json, results, iou_type="keypoints", keypoint_sigmas=keypoint_sigmas(4))
    assert metrics["AP50"] == 1.0 and metrics["AP"] > 0.9, metrics


@pytest.mark.slow  # 23 s of the 10-minute default run; the CLI pose test trains and scores keypoint AP on the shapes
def test_a_few_steps_on_coco_persons_and_keypoint_ap():
    root = shared_data("coco_train_mini")
    torch.manual_seed(0)
    coco = CocoDataset(root / "annotations" / "person_keypoints_train.json", root / "images")
    assert len(coco.keypoint_names) == 17 and len(coco.flip_pairs) == 8 and len(coco.skeleton) == 19
    persons = [i for i, r in enumerate(coco.records) if (r.keypoints[..., 2] > 0).any()][:4]
    batch = collate([TransformedDataset(coco, eval_transforms(128))[i] for i in persons])
    model = build_model(CenterNetConfig(task="pose", backbone="resnet18"), 1, 17, coco.flip_pairs)
    history = fit(model, batch, steps=20)
    assert sum(history[-3:]) < 0.7 * sum(history[:3]), history
    loader = eval_loader(coco, DataConfig(input_size=128), batch_size=16, num_workers=0)
    metrics = evaluate_detector(model, loader, coco, flip=True)
    assert {"AP", "kp_AP", "kp_AP50", "kp_ARl"} <= set(metrics)
    assert 0.0 <= metrics["kp_AP"] <= 1.0 and 0.0 <= metrics["AP"] <= 1.0


def test_person_ground_truth_scores_keypoint_ap_one():
    root = shared_data("coco_train_mini")
    annotation_file = root / "annotations" / "person_keypoints_train.json"
    document = json.loads(annotation_file.read_text())
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in document["annotations"]
        if a["num_keypoints"] > 0 and not a.get("iscrowd", 0)
    ]
    assert evaluate_coco(annotation_file, results, iou_type="keypoints")["AP"] == pytest.approx(1.0)


def test_cli_pose_train_eval_predict_and_api(tiny_shapes, tmp_path, capsys):
    import pointdet
    from pointdet.cli import main

    from .helpers import cli_train_tiny

    run = tmp_path / "run"
    cli_train_tiny("centernet_pose_r18", tiny_shapes, run)
    out = capsys.readouterr().out
    assert "keypoints (OKS):" in out and "boxes:" in out

    main(["eval", "--weights", str(run), "--flip", "--results", str(tmp_path / "r.json"), "model.snap_joints=false"])
    assert "keypoints (OKS):" in capsys.readouterr().out
    assert json.loads((tmp_path / "r_keypoints.json").read_text())[0]["keypoints"].__len__() == 12

    main(["predict", str(tiny_shapes.val_images / "000001.png"), "--weights", str(run), "--out", str(tmp_path / "p")])
    record = json.loads((tmp_path / "p" / "detections.json").read_text())[0]
    assert len(record["keypoints"]) == 12 and (tmp_path / "p" / "000001.jpg").is_file()

    predictor = pointdet.load(run, device="cpu")
    assert predictor.keypoint_names == ["top", "right", "bottom", "left"] and len(predictor.skeleton) == 4
    detections = predictor.predict(tiny_shapes.val_images / "000002.png", flip=True, scales=(1.0, 1.25))
    assert detections[0].keypoints.shape[1:] == (4, 3)


def test_a_batch_without_objects_trains():
    from pointdet.structures import Instances

    torch.manual_seed(0)
    for task, joints in (("pose", 4), ("mono3d", 0), ("detection", 0)):
        model = build_model(CenterNetConfig(task=task, backbone="resnet18"), 2, joints, [(3, 1)] if joints else [])
        empty = Instances.empty(joints)
        if task == "mono3d":
            empty = Instances(empty.boxes, empty.labels, empty.keypoints, boxes3d=torch.zeros(0, 8))
        losses = model.loss(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), [empty, empty])
        total = sum(losses.values())
        total.backward()
        assert torch.isfinite(total), (task, losses)
