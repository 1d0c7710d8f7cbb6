"""CentripetalNet and CornerNet end to end: overfitting a few images, and the CLI / API with masks."""

import json

import pytest
import torch

from pointdet.configs import CornerConfig
from pointdet.data.coco import CocoDataset
from pointdet.data.dataset import TransformedDataset, collate
from pointdet.data.shapes import generate_shapes
from pointdet.data.transforms import eval_transforms
from pointdet.engine.inference import predict_images, to_original_pixels
from pointdet.evaluation import detections_to_coco, evaluate_coco, masks_to_coco
from pointdet.models.build import build_model

from .helpers import fit

STEPS = 100


@pytest.mark.parametrize("method", ["centripetalnet", "cornernet"])
def test_corner_detectors_overfit_four_shapes_images(tmp_path, method):
    torch.manual_seed(0)
    shapes = generate_shapes(tmp_path, num_train=4, num_val=1, image_size=128, seed=0)
    with_mask = method == "centripetalnet"
    coco = CocoDataset(shapes.train_json, shapes.train_images, with_masks=with_mask)
    batch = collate([TransformedDataset(coco, eval_transforms(128))[i] for i in range(4)])
    model = build_model(CornerConfig(method=method, backbone="hourglass_small", mask_head=with_mask), num_classes=3)
    history = fit(model, batch, steps=STEPS)
    assert history[-1] < 0.1 * history[0], history[::10]
    model.eval()
    detections = to_original_pixels(predict_images(model, batch.images), batch.scales, batch.orig_sizes)
    boxes = evaluate_coco(shapes.train_json, detections_to_coco(detections, batch.image_ids, coco.category_ids))
    assert boxes["AP"] > 0.99, boxes  # 1.0 measured (both methods, 100 steps)
    if with_mask:
        sizes = [(r.height, r.width) for r in coco.records]
        results = masks_to_coco(detections, batch.image_ids, coco.category_ids, sizes)
        masks = evaluate_coco(shapes.train_json, results, iou_type="segm")
        assert masks["AP50"] == 1.0 and masks["AP"] > 0.75, masks  # 0.85 measured: 28 x 28 masks, soft borders


def test_cli_centripetalnet_train_eval_predict_and_api(tiny_shapes, tmp_path, capsys):
    import pointdet
    from pointdet.cli import main

    from .helpers import cli_train_tiny

    run = tmp_path / "run"
    cli_train_tiny("centripetalnet_shapes", tiny_shapes, run)
    out = capsys.readouterr().out
    assert "masks:" in out and "boxes:" in out

    main(["eval", "--weights", str(run), "--results", str(tmp_path / "r.json"), "model.pair_score=code"])
    assert "masks:" in capsys.readouterr().out
    assert (tmp_path / "r_segm.json").is_file()

    image = tiny_shapes.val_images / "000001.png"
    main(["predict", str(image), "--weights", str(run), "--out", str(tmp_path / "p"), "--score-threshold", "0"])
    records = json.loads((tmp_path / "p" / "detections.json").read_text())
    assert (tmp_path / "p" / "000001.jpg").is_file()
    assert all("counts" in r["segmentation"] for r in records)

    predictor = pointdet.load(run, device="cpu")
    detections = predictor.predict(image, flip=True, scales=(1.0, 1.5))
    assert detections[0].masks is not None and detections[0].masks.shape[1:] == (28, 28)
    assert predictor.model.head.matching == "centripetal"


def test_a_batch_without_objects_trains_the_corner_heads():
    from pointdet.structures import Instances

    torch.manual_seed(0)
    for method in ("centripetalnet", "cornernet"):
        model = build_model(CornerConfig(method=method, backbone="hourglass_small", mask_head=True), 2)
        empty = Instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 0, 3))
        empty = Instances(empty.boxes, empty.labels, empty.keypoints, masks=torch.zeros(0, 64, 64, dtype=torch.uint8))
        losses = model.loss(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), [empty, empty])
        total = sum(losses.values())
        total.backward()
        assert torch.isfinite(total), (method, losses)
