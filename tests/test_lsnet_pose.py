"""LSNet pose (METHODS.md CARD 4): the ``Keypoints`` landmark task's targets on hand-made keypoints (obj-box and
kps-box), GT encoded then decoded (plain and flip test), the keypoint loss and the box branch's weight, the
kps-box fine-tune from an obj-box model, the 32 x 32 px evaluation filter, the CLI end to end and a 4-image overfit."""

from dataclasses import replace

import pytest
import torch

from pointdet.configs import ConfigError, LSNetConfig, apply_overrides, get_preset
from pointdet.decoders.lsnet import LSNetPostprocess
from pointdet.losses.cross_iou import cross_iou_loss, signed_offset_l1, softened_targets
from pointdet.models.build import build_model
from pointdet.models.heads.lsnet import LSNetHead
from pointdet.structures import Instances
from pointdet.targets.lsnet_tasks import Keypoints

from .test_lsnet import features_of
from .test_lsnet_outputs import mirrored, perfect_outputs

# 4 keypoints of the shapes' layout (top, right, bottom, left); the left one is not visible.
KEYPOINTS = torch.tensor([[[30.0, 8.0, 2.0], [50.0, 30.0, 2.0], [28.0, 52.0, 1.0], [6.0, 30.0, 0.0]]])
BOX = torch.tensor([[4.0, 6.0, 54.0, 56.0]])
PAIRS = ((3, 1),)  # "left" <-> "right"


def person() -> Instances:
    return Instances(BOX, torch.tensor([1]), KEYPOINTS)


def test_obj_box_landmarks_are_the_keypoints_box_centre_and_border_centres():
    task = Keypoints(4, PAIRS, "object")
    assert task.num_vectors == 4 + 1 + 5 and task.box_branch_vectors == 5
    gt, landmarks = task.ground_truth_landmarks(person())
    torch.testing.assert_close(gt.boxes, BOX)  # obj-box: the annotated box
    expected = [
        [30.0, 8.0, 2.0], [50.0, 30.0, 2.0], [28.0, 52.0, 1.0], [6.0, 30.0, 0.0],  # keypoints, visibility
        [29.0, 31.0, 1.0],  # the box centre
        [29.0, 6.0, 1.0], [4.0, 31.0, 1.0], [29.0, 56.0, 1.0], [54.0, 31.0, 1.0], [29.0, 31.0, 1.0],  # box branch
    ]  # fmt: skip
    assert landmarks[0].tolist() == expected
    torch.testing.assert_close(task.boxes(landmarks[..., :2]), BOX)  # the box branch's extremes give the box
    # a flip swaps the left / right keypoints and the box branch's left / right border centres
    assert task.mirror_order == (0, 3, 2, 1, 4, 5, 8, 7, 6, 9)


def test_kps_box_is_the_visible_keypoints_extent_and_drops_objects_without_one():
    task = Keypoints(4, PAIRS, "keypoints")
    unlabelled = Instances(torch.tensor([[0.0, 0.0, 9.0, 9.0]]), torch.tensor([0]), torch.zeros(1, 4, 3))
    both = Instances(
        torch.cat([BOX, unlabelled.boxes]), torch.tensor([1, 0]), torch.cat([KEYPOINTS, unlabelled.keypoints])
    )
    gt, landmarks = task.ground_truth_landmarks(both)
    assert len(gt) == 1 and gt.labels.tolist() == [1]  # a box-only object is never positive
    assert gt.boxes.tolist() == [[28.0, 8.0, 50.0, 52.0]]  # the invisible left keypoint (6, 30) is left out
    assert landmarks.shape == (1, 5, 3) and landmarks[0, 4].tolist() == [39.0, 30.0, 1.0]
    torch.testing.assert_close(task.boxes(landmarks[..., :2]), torch.tensor([[6.0, 8.0, 50.0, 52.0]]))
    assert task.mirror_order == (0, 3, 2, 1, 4)


def test_dcn_samples_the_odd_keypoints_and_the_centre():
    assert Keypoints(17).dcn_vectors == (1, 3, 5, 7, 9, 11, 13, 15, 17)  # the code's 1::2 of COCO's 17
    assert Keypoints(4).dcn_vectors == (0, 1, 2, 3, 0, 1, 2, 3, 4)  # fewer keypoints: repeated to fill 8
    with pytest.raises(ValueError, match="flip_pairs"):
        Keypoints(4, ((3, 4),))


@pytest.mark.parametrize("box", ["object", "keypoints"])
def test_gt_keypoints_encoded_then_decoded_come_back_with_their_box(box):
    """Oracle: the task's GT landmarks as predictions decode to the GT keypoints and the task's box, in the plain
    pass and in the flip test (the mirrored pass scoring higher, mapped back with the left / right pairs)."""
    task = Keypoints(4, PAIRS, box)
    gt, landmarks = task.ground_truth_landmarks(person())
    xy = landmarks[0, :, :2]
    postprocess = LSNetPostprocess(task)
    (plain,) = postprocess(perfect_outputs(xy, 27, 5.0))
    (flip,) = postprocess(perfect_outputs(xy, 27, 5.0), perfect_outputs(mirrored(xy, task.mirror_order), 36, 6.0))
    expected_box = BOX if box == "object" else torch.tensor([[6.0, 8.0, 50.0, 52.0]])  # kps-box: all 4 decoded
    for detections in (plain, flip):
        assert len(detections) == 1 and detections.keypoints.shape == (1, 4, 3)
        torch.testing.assert_close(detections.keypoints[0, :, :2], KEYPOINTS[0, :, :2], atol=1e-4, rtol=0)
        assert detections.keypoints[0, :, 2].tolist() == [0.0] * 4  # regressed, not snapped
        torch.testing.assert_close(detections.boxes, expected_box, atol=1e-4, rtol=0)


def test_keypoint_loss_ignores_invisible_keypoints_and_weighs_the_box_branch_a_tenth():
    """Hand-built: the ``keypoint`` aggregation over the 4 keypoints + centre, the invisible one weighted 0, plus
    0.1 x the box branch's ``bbox`` cross-IoU with the code's penalty."""
    torch.manual_seed(0)
    task = Keypoints(4, PAIRS, "object")
    gt, landmarks = task.ground_truth_landmarks(person())
    anchor = torch.tensor([[[26.0, 33.0]]])
    pred = torch.rand(1, 10, 4) * 20 + 0.1
    loss = task.landmark_loss(pred, landmarks, anchor, gt.boxes, box_penalty=True)
    target = softened_targets(landmarks[..., :2] - anchor)
    keypoint = cross_iou_loss(pred[:, :5], target[:, :5], "keypoint", visible=torch.tensor([[2.0, 2.0, 1.0, 0.0]]))
    box_pred = task.boxes(torch.cat([torch.zeros(1, 5, 2), _decoded(pred[:, 5:], anchor)], dim=1))
    box_branch = cross_iou_loss(pred[:, 5:], target[:, 5:], "bbox", box_pred, gt.boxes)
    torch.testing.assert_close(loss, keypoint + 0.1 * box_branch)
    # the invisible keypoint gets no gradient; a perfect prediction costs nothing beyond the zeroed ratios
    pred.requires_grad_(True)
    task.landmark_loss(pred, landmarks, anchor, gt.boxes, box_penalty=True).sum().backward()
    assert pred.grad[0, 3].abs().sum() == 0 and pred.grad[0, :3].abs().sum() > 0
    perfect = task.landmark_loss(target, landmarks, anchor, gt.boxes, box_penalty=True)
    torch.testing.assert_close(perfect, torch.tensor([2 / 10]))  # 2 of the 10 per-axis ratios are invisible


def test_vector_aggregation_option_scores_each_keypoint_vector_as_a_whole():
    """``Keypoints(aggregation="vector")`` (``model.pose_aggregation=vector``): one ratio per keypoint vector, the
    invisible one 0, plus the same box branch; the config builds it and rejects it outside pose."""
    torch.manual_seed(0)
    task = Keypoints(4, PAIRS, "object", aggregation="vector")
    gt, landmarks = task.ground_truth_landmarks(person())
    anchor = torch.tensor([[[26.0, 33.0]]])
    pred = torch.rand(1, 10, 4) * 20 + 0.1
    target = softened_targets(landmarks[..., :2] - anchor)
    vector = cross_iou_loss(pred[:, :5], target[:, :5], "vector", visible=torch.tensor([[2.0, 2.0, 1.0, 0.0]]))
    official = Keypoints(4, PAIRS, "object").landmark_loss(pred, landmarks, anchor, gt.boxes, box_penalty=True)
    keypoint = cross_iou_loss(pred[:, :5], target[:, :5], "keypoint", visible=torch.tensor([[2.0, 2.0, 1.0, 0.0]]))
    loss = task.landmark_loss(pred, landmarks, anchor, gt.boxes, box_penalty=True)
    torch.testing.assert_close(loss - vector, official - keypoint)  # the same box-branch term
    assert not torch.allclose(vector, keypoint)
    config = LSNetConfig(backbone="resnet18", channels=32, stacked_convs=1, tower="conv", task="pose")
    model = build_model(replace(config, pose_aggregation="vector"), 1, 4, PAIRS, with_backbone_weights=False)
    assert model.head.task.aggregation == model.postprocess.task.aggregation == "vector"
    with pytest.raises(ConfigError, match="pose_aggregation"):
        LSNetConfig(pose_aggregation="vector")
    with pytest.raises(ValueError, match="aggregation"):
        Keypoints(4, PAIRS, aggregation="bbox")


def test_offset_l1_option_adds_the_weighted_signed_offset_term():
    """``Keypoints(offset_l1=w)`` (``model.pose_offset_l1``): the official loss + w x ``signed_offset_l1`` of the 4
    keypoints and the centre against their softened targets over the square root of the GT box area, the invisible
    keypoint 0; rejected outside pose and below 0."""
    torch.manual_seed(0)
    gt, landmarks = Keypoints(4, PAIRS, "object").ground_truth_landmarks(person())
    anchor = torch.tensor([[[26.0, 33.0]]])
    pred = torch.rand(1, 10, 4) * 20 + 0.1
    official = Keypoints(4, PAIRS, "object").landmark_loss(pred, landmarks, anchor, gt.boxes, box_penalty=True)
    loss = Keypoints(4, PAIRS, "object", offset_l1=3.0).landmark_loss(pred, landmarks, anchor, gt.boxes, True)
    width, height = (gt.boxes[0, 2:] - gt.boxes[0, :2]).tolist()
    visible = torch.tensor([[2.0, 2.0, 1.0, 0.0]])
    target = softened_targets(landmarks[:, :5, :2] - anchor)
    term = signed_offset_l1(pred[:, :5], target, torch.tensor([(width * height) ** 0.5]), visible)
    torch.testing.assert_close(loss, official + 3.0 * term)
    config = LSNetConfig(backbone="resnet18", channels=32, stacked_convs=1, tower="conv", task="pose")
    model = build_model(replace(config, pose_offset_l1=2.0), 1, 4, PAIRS, with_backbone_weights=False)
    assert model.head.task.offset_l1 == 2.0
    with pytest.raises(ConfigError, match="pose_offset_l1"):
        LSNetConfig(pose_offset_l1=1.0)
    with pytest.raises(ValueError, match="offset_l1"):
        Keypoints(4, PAIRS, offset_l1=-1.0)


def _decoded(pred, anchor):
    from pointdet.losses.cross_iou import decode_components

    return decode_components(pred) + anchor


@pytest.mark.parametrize("box", ["object", "keypoints"])
def test_pose_head_outputs_loss_and_gradients(box):
    torch.manual_seed(0)
    head = LSNetHead(32, 2, task=Keypoints(4, PAIRS, box), channels=32, stacked_convs=1, tower="conv")
    outputs = head(features_of(64, 64))
    vectors = 10 if box == "object" else 5
    assert outputs.components_init.shape[2:] == outputs.components_refine.shape[2:] == (vectors, 4)
    losses = head.loss(outputs, [person(), Instances.empty(4)])
    assert all(torch.isfinite(value) and value > 0 for value in losses.values())
    sum(losses.values()).backward()
    missing = [name for name, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [], missing
    assert (head.box_branch is not None) == (box == "object")


def test_kps_box_fine_tunes_from_the_obj_box_model(tmp_path):
    """``model.init_from``: every tensor of the obj-box model but its box branch loads into the kps-box model."""
    from pointdet.models.init_from import initialise_from

    config = LSNetConfig(backbone="resnet18", channels=32, stacked_convs=1, tower="conv", task="pose")
    obj_box = build_model(config, 1, 4, PAIRS, with_backbone_weights=False)
    path = tmp_path / "obj_box.pt"
    torch.save({"model": obj_box.state_dict()}, path)
    kps_box = build_model(replace(config, pose_box="keypoints"), 1, 4, PAIRS, with_backbone_weights=False)
    report = initialise_from(kps_box, str(path))
    assert report.missing == [] and report.reshaped == []
    assert report.unused and all(name.startswith("head.box_branch.") for name in report.unused)
    torch.testing.assert_close(kps_box.head.init_out.weight, obj_box.head.init_out.weight)


def test_pose_configs_and_presets():
    with pytest.raises(ConfigError, match="pose_box"):
        LSNetConfig(pose_box="keypoints")
    with pytest.raises(ConfigError, match="keypoints"):
        build_model(LSNetConfig(task="pose", backbone="resnet18", channels=32), 1, with_backbone_weights=False)
    obj_box, kps_box = get_preset("lsnet_pose_r50_fpn"), get_preset("lsnet_pose_kbox_r50_fpn")
    assert (obj_box.model.task, obj_box.model.pose_box, obj_box.optim.epochs, obj_box.optim.lr_steps) == (
        "pose", "object", 60, (54, 56)
    )  # fmt: skip
    assert kps_box.model.pose_box == "keypoints" and kps_box.eval.min_box_area == 1024
    assert get_preset("lsnet_pose_shapes").eval.min_box_area == 0
    # pointdet's signed-offset term on the shapes only; the COCO recipes keep LSNet's loss
    assert get_preset("lsnet_pose_shapes").model.pose_offset_l1 == 3
    assert obj_box.model.pose_offset_l1 == kps_box.model.pose_offset_l1 == 0
    with pytest.raises(ConfigError, match="min_box_area"):
        apply_overrides(get_preset("lsnet_pose_shapes"), ["eval.min_box_area=-1"])


def test_evaluation_drops_boxes_of_at_most_the_min_area(tiny_shapes, tmp_path):
    """``eval.min_box_area``: the scored results are exactly those with a box area above it; keypoint AP is reported."""
    import json

    from pointdet.data.coco import CocoDataset
    from pointdet.engine.data import eval_loader
    from pointdet.engine.evaluate import evaluate_detector

    torch.manual_seed(0)
    config = replace(get_preset("lsnet_pose_shapes").data, input_size=64, num_workers=0)
    dataset = CocoDataset(tiny_shapes.val_json, tiny_shapes.val_images)
    model = build_model(get_preset("lsnet_pose_shapes").model, 3, 4, PAIRS, with_backbone_weights=False)
    model.postprocess.score_threshold = 0.0
    loader = eval_loader(dataset, config, 4, 0)
    everything, filtered = tmp_path / "all.json", tmp_path / "filtered.json"
    assert "kp_AP" in evaluate_detector(model, loader, dataset, results_file=everything).metrics
    areas = sorted(record["bbox"][2] * record["bbox"][3] for record in json.loads(everything.read_text()))
    threshold = areas[len(areas) // 2] + 1e-3
    evaluate_detector(model, loader, dataset, results_file=filtered, min_box_area=threshold)
    kept = json.loads(filtered.read_text())
    assert 0 < len(kept) == sum(area > threshold for area in areas) < len(areas)
    assert len(json.loads((tmp_path / "filtered_keypoints.json").read_text())) == len(kept)


def test_cli_lsnet_pose_train_eval_predict(tiny_shapes, tmp_path, capsys):
    """Pose end to end: eval reports keypoint AP, predict draws skeletons and writes keypoints to its JSON."""
    import json

    import pointdet

    from .helpers import cli_train_eval_predict

    run, image = cli_train_eval_predict("lsnet_pose_shapes", tiny_shapes, tmp_path, capsys, "model.score_threshold=0")
    records = json.loads((tmp_path / "p" / "detections.json").read_text())
    predictor = pointdet.load(run, device="cpu")
    assert predictor.skeleton == [(0, 1), (1, 2), (2, 3), (3, 0)]
    predictor.model.postprocess.score_threshold = 0.0  # two steps leave every score near the 0.01 prior
    detections = predictor.predict(image, flip=True)[0]
    assert len(detections) > 0 and detections.keypoints.shape == (len(detections), 4, 3)
    assert detections.landmarks is None and detections.contours is None
    assert isinstance(records, list)
    if records:  # predict keeps scores above its default threshold; the untrained ones may all be below it
        assert len(records[0]["keypoints"]) == 12


@pytest.mark.slow  # not yet run to completion: 25 min timeout on the shared CPU (2026-11-30); unmeasured bound
def test_lsnet_pose_overfits_four_shapes_images(tmp_path):
    """Keypoints of 4 shapes images learnt: keypoint AP (OKS, sigma 0.05) on the training images."""
    from .helpers import overfit_four_shapes

    config = LSNetConfig(backbone="resnet18", channels=64, frozen_stages=0, frozen_bn=False, tower="conv", task="pose")
    history, metrics = overfit_four_shapes(config, tmp_path, num_joints=4, flip_pairs=PAIRS)
    print(f"loss {history[0]:.3f} -> {history[-1]:.3f}; box AP {metrics['AP']:.3f}, keypoint AP {metrics['kp_AP']:.3f}")
    assert history[-1] < 0.2 * history[0], history[::10]
    assert metrics["kp_AP"] >= 0.6, metrics
