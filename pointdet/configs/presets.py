"""Named presets. Each is a plain function returning an ``ExperimentConfig``; variants use ``replace``.

The COCO presets follow the paper's recipe (METHODS.md §2a(f)): Adam, lr 5e-4 at batch 128 (scaled linearly
for other batches), 140 epochs with drops at 90 and 120, 512x512 input, random scale 0.6-1.3, crop, flip and
colour jitter.

Backbone weights follow the papers: CenterNet's ResNet and DLA-34 models, RepPoints (v1, v2) and LSNet's ResNet-50
start from ImageNet (``model.backbone_weights=imagenet``: the standard file, fetched once into torch's cache), the
hourglass models (CenterNet-HG, CornerNet, CentripetalNet) train from scratch as theirs do; the presets on generated
or synthetic data train from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from pointdet.configs.schema import (
    CenterNetConfig,
    CornerConfig,
    CPMRCNNConfig,
    DataConfig,
    DenseRepPointsV2Config,
    EvalConfig,
    ExperimentConfig,
    FCOSConfig,
    FPNBackboneConfig,
    LSNetConfig,
    OptimConfig,
    RepPointsConfig,
    RepPointsV2Config,
)
from pointdet.errors import ConfigError


def centernet_r18() -> ExperimentConfig:
    """CenterNet ResNet-18 + DCN up-sampler, COCO recipe (paper: 28.1 AP on COCO val)."""
    return ExperimentConfig(
        name="centernet_r18", model=CenterNetConfig(backbone="resnet18", backbone_weights="imagenet")
    )


def centernet_r50() -> ExperimentConfig:
    """CenterNet ResNet-50 + DCN up-sampler, COCO recipe."""
    return ExperimentConfig(
        name="centernet_r50", model=CenterNetConfig(backbone="resnet50", backbone_weights="imagenet")
    )


def centernet_r101() -> ExperimentConfig:
    """CenterNet ResNet-101 + DCN up-sampler, COCO recipe (paper: 34.6 AP)."""
    return ExperimentConfig(
        name="centernet_r101", model=CenterNetConfig(backbone="resnet101", backbone_weights="imagenet")
    )


def centernet_dla34() -> ExperimentConfig:
    """CenterNet DLA-34 + deformable DLA-up, COCO recipe, 140 epochs (paper: 36.3 AP, Table 3d; 230 epochs: _2x)."""
    return ExperimentConfig(
        name="centernet_dla34", model=CenterNetConfig(backbone="dla34", backbone_weights="imagenet")
    )


def centernet_dla34_2x() -> ExperimentConfig:
    """CenterNet DLA-34, the paper's comparison schedule: 230 epochs, drops at 180 and 210 (37.4 AP, Table 1)."""
    base = centernet_dla34()
    return replace(base, name="centernet_dla34_2x", optim=replace(base.optim, epochs=230, lr_steps=(180, 210)))


def centernet_hg104() -> ExperimentConfig:
    """CenterNet Hourglass-104, the paper's recipe (40.3 / 42.2 flip / 45.1 multi-scale AP on COCO val, Table 1).

    Adam lr 2.5e-4 at batch 29 (5 GPUs in the paper), 50 epochs, lr / 10 at 40 (METHODS.md §2a(f), App. C #5);
    a head on each of the two stacks, every stack supervised, the last one predicting; 256-channel head convs as
    the code. The paper fine-tunes from ExtremeNet, whose weights pointdet cannot fetch: this trains from scratch
    unless ``model.init_from`` names a run or file to start from. Test images are padded to a multiple of 128.
    """
    return ExperimentConfig(
        name="centernet_hg104",
        model=CenterNetConfig(backbone="hourglass104"),
        optim=OptimConfig(lr=2.5e-4, base_batch=29, batch_size=29, epochs=50, lr_steps=(40,)),
    )


def centernet_dla34_shapes() -> ExperimentConfig:
    """DLA-34 CenterNet on generated shapes at 128 px from scratch, about 10 minutes on 2 CPU cores (box AP 34-66 across
    machines and seeds; docs/centernet.md)."""
    # DLA-34 rather than ResNet-18: trained from scratch at 128 px, ResNet-18 + deconv (no skip connections,
    # a 4x4 C5 map) stays on the heatmap-prior plateau for hundreds of steps, while DLA-up's skip
    # aggregation starts localising within one epoch (measured; see the issue notes).
    base = centernet_dla34()
    return replace(
        base,
        name="centernet_dla34_shapes",
        model=replace(base.model, backbone_weights=None),
        data=DataConfig(input_size=128, scales=(0.8, 0.9, 1.0, 1.1, 1.2), lighting=0.0, num_workers=2),
        optim=OptimConfig(lr=5e-4, base_batch=8, batch_size=8, epochs=4, lr_steps=(3,)),
        eval=EvalConfig(every=2, batch_size=32),
    )


def centernet_pose_dla34() -> ExperimentConfig:
    """CenterNet pose, DLA-34, COCO keypoints recipe (paper: 320 epochs, drops at 270/300; 58.9 val AP)."""
    base = centernet_dla34()
    return replace(
        base,
        name="centernet_pose_dla34",
        model=replace(base.model, task="pose"),
        optim=replace(base.optim, epochs=320, lr_steps=(270, 300)),
    )


def centernet_pose_hg104() -> ExperimentConfig:
    """CenterNet pose, Hourglass-104: 150 epochs, drop at 130, batch 24, lr 2.5e-4 (63.0 test-dev / 64.0 val AP).

    The paper fine-tunes it from the detection model: ``model.init_from=runs/centernet_hg104-<time>`` loads every
    tensor that fits (the backbone and the box branches; the one-class heatmap and the joint branches start fresh).
    """
    base = centernet_hg104()
    return replace(
        base,
        name="centernet_pose_hg104",
        model=replace(base.model, task="pose"),
        optim=replace(base.optim, base_batch=24, batch_size=24, epochs=150, lr_steps=(130,)),
    )


def centernet_pose_r18() -> ExperimentConfig:
    """CenterNet pose, ResNet-18 + DCN up-sampler, the COCO keypoints recipe."""
    base = centernet_pose_dla34()
    return replace(base, name="centernet_pose_r18", model=replace(base.model, backbone="resnet18"))


def centernet_pose_shapes() -> ExperimentConfig:
    """CenterNet pose on the shapes' extreme points, DLA-34 at 128 px, about 20 minutes on 2 CPU cores."""
    base = centernet_dla34_shapes()
    return replace(base, name="centernet_pose_shapes", model=replace(base.model, task="pose"))


def centernet_3d_dla34() -> ExperimentConfig:
    """CenterNet monocular 3D, DLA-34, KITTI recipe (1280x384, 70 epochs, drops 45/60; data.kitti_root=...)."""
    base = centernet_dla34()
    return replace(
        base,
        name="centernet_3d_dla34",
        model=replace(base.model, task="mono3d"),
        # The code's run: batch 16 on 2 GPUs at its default lr 1.25e-4 (experiments/ddd_3dop.sh).
        data=DataConfig(
            format="kitti", classes=("Pedestrian", "Car", "Cyclist"), input_size=1280, input_height=384, flip=0.0
        ),
        optim=OptimConfig(lr=1.25e-4, base_batch=16, batch_size=16, epochs=70, lr_steps=(45, 60)),
        eval=EvalConfig(every=5, score_threshold=0.2),
    )


def centernet_3d_synthetic() -> ExperimentConfig:
    """CenterNet monocular 3D on the synthetic KITTI scenes, ResNet-18 at 384x128 (runs on a CPU; learns on a GPU)."""
    # ResNet-18 rather than DLA-34: at 384x128 a DLA-34 step costs ~3x more on a CPU. Fitting 4 scenes it leaves
    # the heatmap plateau within ~150 steps at lr 1e-3, but on the 400-scene split it was still on it after 550
    # steps (19 CPU minutes): this preset needs GPU-length training (not measured: no device was lent).
    base = centernet_3d_dla34()
    return replace(
        base,
        name="centernet_3d_synthetic",
        model=replace(base.model, backbone="resnet18", backbone_weights=None),
        data=replace(base.data, classes=("Car",), input_size=384, input_height=128, num_workers=2),
        optim=OptimConfig(lr=1e-3, base_batch=8, batch_size=8, epochs=20, lr_steps=(16,)),
        eval=EvalConfig(every=5, batch_size=16, score_threshold=0.1),
    )


def centripetalnet_hg104() -> ExperimentConfig:
    """CentripetalNet, Hourglass-104 + mask head, the paper's recipe (46.1 box AP, 38.8 mask AP on test-dev).

    As mmdetection runs it: Adam 5e-4 at batch 96, 210 epochs, lr / 10 at 190 (METHODS.md App. A #10), grad clip
    35, 500 warm-up steps, 512 crops (the paper's 511 padded to the hourglass's multiple of 128), flip test.
    """
    return ExperimentConfig(
        name="centripetalnet_hg104",
        model=CornerConfig(method="centripetalnet", backbone="hourglass104", mask_head=True),
        data=DataConfig(input_size=512),
        optim=OptimConfig(
            lr=5e-4, base_batch=96, batch_size=6, epochs=210, lr_steps=(190,), warmup_iters=500, grad_clip=35.0
        ),
        eval=EvalConfig(flip=True),
    )


def centripetalnet_hg52() -> ExperimentConfig:
    """CentripetalNet, Hourglass-52, the paper's ablation schedule: 110 epochs, lr / 10 at 90 (41.5 box AP).

    ``model.mask_head=true`` adds the mask head (41.8); ``model.cross_star=false`` is the Table 4 base (40.7).
    """
    base = centripetalnet_hg104()
    return replace(
        base,
        name="centripetalnet_hg52",
        model=CornerConfig(method="centripetalnet", backbone="hourglass52"),
        optim=replace(base.optim, epochs=110, lr_steps=(90,)),
    )


def cornernet_hg52() -> ExperimentConfig:
    """CornerNet (associative-embedding grouping), HG-52 ablation recipe: the matching baseline (37.3 box AP).

    The paper's Table 4 compares it with ``centripetalnet_hg52 model.cross_star=false`` (40.7), the centripetal
    shift without the cross-star DCN, same network otherwise.
    """
    base = centripetalnet_hg52()
    return replace(base, name="cornernet_hg52", model=CornerConfig(method="cornernet", backbone="hourglass52"))


def centripetalnet_shapes() -> ExperimentConfig:
    """CentripetalNet with the mask head on the generated shapes: a CPU-sized hourglass at 128 px."""
    base, shapes = centripetalnet_hg104(), centernet_dla34_shapes()  # the shapes' CPU recipe, longer, clipped
    return replace(
        base,
        name="centripetalnet_shapes",
        model=replace(base.model, backbone="hourglass_small"),
        data=shapes.data,
        optim=replace(shapes.optim, epochs=6, lr_steps=(5,), warmup_iters=50, grad_clip=35.0),
        eval=replace(shapes.eval, flip=True),
    )


def cornernet_shapes() -> ExperimentConfig:
    """CornerNet on the generated shapes, same network and schedule as ``centripetalnet_shapes`` (no masks)."""
    base = centripetalnet_shapes()
    return replace(base, name="cornernet_shapes", model=replace(base.model, method="cornernet", mask_head=False))


def reppoints_r50_fpn() -> ExperimentConfig:
    """RepPoints v1, ResNet-50 + FPN P3-P7 with GN, moment transform: mmdetection's 1x GN recipe (38.2 box AP).

    The 38.2 is COCO minival with ImageNet weights (``model.backbone_weights=imagenet``, the default).

    SGD lr 0.01 at batch 16 (2 per GPU on 8), momentum 0.9, weight decay 1e-4, 500 warm-up steps from 0.001 x lr,
    grad clip 35, 12 epochs with drops after 8 and 11; keep-ratio (1333, 800) training and test, flip 0.5, no
    colour augmentation; frozen stem + stage 1 and frozen BatchNorm.
    """
    return ExperimentConfig(
        name="reppoints_r50_fpn",
        model=RepPointsConfig(backbone="resnet50", backbone_weights="imagenet"),
        data=DataConfig(
            resize="keep_ratio",
            test_resize="keep_ratio",
            min_size=(800,),
            max_size=1333,
            test_min_size=800,
            color_jitter=0.0,
            lighting=0.0,
        ),
        optim=OptimConfig(
            optimizer="sgd",
            lr=0.01,
            base_batch=16,
            batch_size=2,
            momentum=0.9,
            weight_decay=1e-4,
            epochs=12,
            lr_steps=(8, 11),
            warmup_iters=500,
            warmup_ratio=0.001,
            grad_clip=35.0,
        ),
        eval=EvalConfig(every=1, batch_size=8),
    )


def reppoints_shapes() -> ExperimentConfig:
    """RepPoints v1 on the generated shapes at 128 px: ResNet-18 from scratch, 128-channel FPN (87.6 AP on a CPU).

    BatchNorm is trained and nothing is frozen; the shapes' crop recipe; Adam 1e-3 at batch 8, 12 epochs with drops
    after 9 and 11.
    """
    base, shapes = reppoints_r50_fpn(), centernet_dla34_shapes()
    return replace(
        base,
        name="reppoints_shapes",
        model=replace(
            base.model, backbone="resnet18", backbone_weights=None, channels=128, frozen_stages=0, frozen_bn=False
        ),
        data=shapes.data,
        optim=OptimConfig(
            lr=1e-3, base_batch=8, batch_size=8, epochs=12, lr_steps=(9, 11), warmup_iters=100, grad_clip=35.0
        ),
        eval=EvalConfig(every=4, batch_size=32),
    )


# The shapes job's backbone: the offline ImageNet Lite0 with its stem and stride-4 blocks frozen and trained
# BatchNorm, under a 64-channel FPN P3-P7 and head.
_LITE0_SHAPES = {
    "backbone": "timm:efficientnet_lite0",
    "backbone_weights": "imagenet",
    "frozen_stages": 1,
    "frozen_bn": False,
    "channels": 64,
}


def reppoints_lite0_shapes() -> ExperimentConfig:
    """The shapes job: RepPoints on the generated shapes, ImageNet EfficientNet-Lite0 (offline), under 8 CPU minutes.

    ``reppoints_shapes`` with the Lite0 features (stem and stride-4 blocks frozen) and a 64-channel FPN and head:
    a step costs 0.22 s instead of 0.48 s on 2 CPU cores, and ImageNet features converge in 11 epochs with a cosine
    schedule (box AP 84.7, 85.3 with the flip test, in 7 min 45 s from a fresh cache; docs/shapes.md).
    """
    base = reppoints_shapes()
    return replace(
        base,
        name="reppoints_lite0_shapes",
        model=replace(base.model, **_LITE0_SHAPES),
        optim=replace(base.optim, epochs=11, schedule="cosine", lr_steps=()),
        eval=EvalConfig(every=11, batch_size=32, flip=True),
    )


def _on_shapes(name: str, model: FPNBackboneConfig) -> ExperimentConfig:
    """The shapes job's data, schedule (Adam 1e-3 at batch 8, a cosine over 11 epochs) and flip-tested evaluation
    for another family's model, so that the families compare on equal terms."""
    return replace(reppoints_lite0_shapes(), name=name, model=model)


def centernet_effl0_raccoon() -> ExperimentConfig:
    """CenterNet on the shipped raccoon photos: ImageNet EfficientNet-Lite0 (offline) + plain-conv up-sampler with
    skips, 320 px.

    The Lite0 stem and blocks through stride 8 frozen, BatchNorm frozen (fine-tuning 160 photos), the up-sampler's
    3x3 convs plain rather than DCNv2 (a third cheaper step on a CPU) and fed the stride 16/8/4 maps as well as C5
    (``upsampler_skips``, ours: the official C5-only up-sampler does not learn small objects from a few hundred
    photos; chosen on the validation splits of BCCD, Aquarium and the raccoon photos), Adam 5e-4 at batch 8 with a
    60-step warm-up and a cosine over 22 epochs, evaluated once at the end with the flip test (docs/real_photos.md).
    """
    base = centernet_r18()
    return replace(
        base,
        name="centernet_effl0_raccoon",
        model=replace(
            base.model,
            backbone="timm:efficientnet_lite0",
            backbone_weights="imagenet",
            frozen_stages=2,
            frozen_bn=True,
            upsampler_conv="plain",
            upsampler_skips=True,
        ),
        data=DataConfig(dataset="raccoon", input_size=320, num_workers=2),
        optim=OptimConfig(
            lr=5e-4, base_batch=8, batch_size=8, epochs=22, schedule="cosine", warmup_iters=60, grad_clip=35.0
        ),
        eval=EvalConfig(every=22, batch_size=16, flip=True),
    )


# The Lite0 FPN detectors' backbone on the raccoon photos: the offline ImageNet Lite0 frozen through stride 8 with
# frozen BatchNorm, as centernet_effl0_raccoon, under a 64-channel FPN P3-P7 and head.
_LITE0_FPN = {
    "backbone": "timm:efficientnet_lite0",
    "backbone_weights": "imagenet",
    "frozen_stages": 2,
    "frozen_bn": True,
    "channels": 64,
}


def _on_raccoon(
    name: str, model: RepPointsConfig | RepPointsV2Config | LSNetConfig | CPMRCNNConfig
) -> ExperimentConfig:
    """``centernet_effl0_raccoon``'s data, schedule (Adam 5e-4 at batch 8, 60 warm-up steps, a cosine over 22
    epochs) and flip-tested evaluation for another family's model."""
    return replace(centernet_effl0_raccoon(), name=name, model=model)


def reppoints_effl0_raccoon() -> ExperimentConfig:
    """RepPoints v1 on the shipped raccoon photos: Lite0 + 64-channel FPN and GN head, the main job's recipe (Adam
    1e-3, 16 epochs) and class branch (``cls_branch=dense``), with the ATSS refine assigner.

    Both are departures from the v1 head (``cls_branch=points`` and ``refine_assigner=max_iou`` are the official
    choices): the official point-guided class branch goes linear and calls the rare classes of a multi-class set the
    frequent one, and max-IoU on the init boxes gives small objects too few positives. On the validation splits of
    BCCD / the raccoon photos / Aquarium: 17.7 (official) -> 42.9 / 29.2 / 3.6 (a GroupNorm in the official branch,
    ``cls_norm=gn``, and ATSS) -> 46.3 / 32.8 / 6.2 (the dense branch and ATSS); docs/real_photos.md.
    """
    model = RepPointsConfig(**_LITE0_FPN, cls_branch="dense", refine_assigner="atss")
    base = _on_raccoon("reppoints_effl0_raccoon", model)
    return replace(base, optim=replace(base.optim, epochs=16, lr=1e-3), eval=replace(base.eval, every=16))


def reppoints_v2_effl0_raccoon() -> ExperimentConfig:
    """RepPoints v2 on the shipped raccoon photos: v2's head (verification, joint inference) on the Lite0 FPN.

    The raccoon recipe over 16 epochs instead of 22, to fit 10 CPU minutes, at Adam 1e-3 instead of 5e-4: at 5e-4
    the head underfits and calls rare classes the frequent one (BCCD val AP 38.7). 1e-3 is the best of 5e-4 / 1e-3 /
    2e-3 / 3e-3 over the validation splits of BCCD (50.6) and the raccoon photos (48.0). Two departures from the
    official head, chosen on the validation splits of BCCD, Aquarium and the raccoon photos over several seeds: the
    dense class branch (``cls_branch=dense``: the official point-guided one calls the rare classes of a multi-class
    set the frequent one) and ``corner_start=0.5`` (both stages take the same corner points from the first step;
    left free, some seeds cross them and lose most of their AP); docs/real_photos.md. On data of two classes or more
    a region classifier re-scores the classes (``roi_classifier=multi_class``, CPM R-CNN's CPU-sized RoI keys: 64
    RoIs per image, 256-wide FC layers, one RoIAlign sample per bin): the dense heads find the objects of a small
    multi-class set but call the rare classes by the frequent one.
    """
    model = RepPointsV2Config(
        **_LITE0_FPN, cls_branch="dense", corner_start=0.5, roi_classifier="multi_class", roi_batch=64, roi_hidden=256,
        roi_sampling_ratio=1,
    )  # fmt: skip
    base = _on_raccoon("reppoints_v2_effl0_raccoon", model)
    return replace(base, optim=replace(base.optim, epochs=16, lr=1e-3), eval=replace(base.eval, every=16))


def fcos_effl0_raccoon() -> ExperimentConfig:
    """The FCOS peer on the shipped raccoon photos: torchvision's FCOS head on the main job's Lite0 FPN and recipe.

    Not a pointdet method: the yardstick. Everything but the head (backbone, 64-channel FPN P3-P7, data, augmentation,
    schedule and rate, evaluation) is the main job's, so the two compare on equal terms.
    """
    return replace(reppoints_v2_effl0_raccoon(), name="fcos_effl0_raccoon", model=FCOSConfig(**_LITE0_FPN))


def cpm_rcnn_effl0_raccoon() -> ExperimentConfig:
    """CPM R-CNN on the shipped raccoon photos: the Lite0 FPN (P2-P6) and the raccoon recipe, with
    ``cpm_rcnn_shapes``' CPU-sized RoI heads and anchors of 16-256 px (the objects of a 320 px photo)."""
    model = CPMRCNNConfig(
        **_LITE0_FPN, anchor_sizes=(16, 32, 64, 128, 256), rpn_train_rois=300, rpn_test_rois=300, roi_batch=64,
        hidden=256, point_channels=8, grid_convs=4, max_grid_rois=32, train_grid_rois=8, roi_sampling_ratio=1,
    )  # fmt: skip
    return _on_raccoon("cpm_rcnn_effl0_raccoon", model)


def lsnet_effl0_raccoon() -> ExperimentConfig:
    """LSNet on the shipped raccoon photos: the Lite0 FPN, plain-conv towers (as ``lsnet_shapes``; DCN is LSNet's)."""
    return _on_raccoon("lsnet_effl0_raccoon", LSNetConfig(**_LITE0_FPN, tower="conv"))


def reppoints_v2_r50_fpn() -> ExperimentConfig:
    """RepPoints v2, ResNet-50 + FPN P3-P7 with GN, GIoU: Scalsol/RepPointsV2's R50 GIoU 1x recipe (41.1 box AP).

    The 41.1 is COCO minival with ImageNet weights (``model.backbone_weights=imagenet``, the default). The head adds
    corner and foreground verification; ``corner_minmax`` boxes, ATSS refine assigner, NMS 0.6, joint inference on.
    Training as ``reppoints_r50_fpn`` (SGD 0.01 at batch 16, 12 epochs, drops after 8 and 11, (1333, 800)).
    """
    base = reppoints_r50_fpn()
    return replace(
        base, name="reppoints_v2_r50_fpn", model=RepPointsV2Config(backbone="resnet50", backbone_weights="imagenet")
    )


def reppoints_v2_r50_fpn_2x_ms() -> ExperimentConfig:
    """RepPoints v2 R50 GIoU, 24 epochs with multi-scale training (shorter side 480-960): the repo's 43.9 box AP.

    As ``reppoints_v2_r50_fpn`` with drops after 16 and 22 and the shorter side drawn from [480, 960] (long side at
    most 1333); test at (1333, 800).
    """
    return _two_x_multi_scale(reppoints_v2_r50_fpn(), "reppoints_v2_r50_fpn_2x_ms")


def _two_x_multi_scale(base: ExperimentConfig, name: str) -> ExperimentConfig:
    """``base`` (a 1x (1333, 800) recipe) as the RepPoints v2 and LSNet codes' "mstrain_2x": 24 epochs with drops
    after 16 and 22, the training shorter side drawn from [480, 960] (long side at most 1333)."""
    return replace(
        base,
        name=name,
        data=replace(base.data, min_size=(480, 960)),
        optim=replace(base.optim, epochs=24, lr_steps=(16, 22)),
    )


def reppoints_v2_shapes() -> ExperimentConfig:
    """RepPoints v2 on the generated shapes at 128 px: the shapes job (``reppoints_lite0_shapes``) with v2's head
    and defaults (``corner_minmax``, GIoU, ATSS, NMS 0.6, joint inference)."""
    return _on_shapes("reppoints_v2_shapes", RepPointsV2Config(**_LITE0_SHAPES))


def dense_reppoints_v2_r50_fpn() -> ExperimentConfig:
    """Dense RepPoints v2, ResNet-50 + FPN P3-P7 with GN: Scalsol/RepPointsV2's dense_reppoints_v2_r50_fpn_1x recipe.

    ImageNet weights (``model.backbone_weights=imagenet``); 729 points in 9 groups, 121 score maps, a 7-conv mask
    branch, smooth-L1 boxes, Chamfer 0.5 / 1, contour and foreground verification, joint inference at 0.4. Training
    as ``reppoints_r50_fpn`` (SGD 0.01 at batch 16, 12 epochs, drops after 8 and 11, (1333, 800)). The repo's
    headline (mask 39.0 test-dev) is the GIoU 3x multi-scale variant: ``model.box_loss=giou optim.epochs=36
    optim.lr_steps=[24,33] data.min_size=[480,960]``.
    """
    base = reppoints_r50_fpn()
    model = DenseRepPointsV2Config(backbone="resnet50", backbone_weights="imagenet")
    return replace(base, name="dense_reppoints_v2_r50_fpn", model=model)


def dense_reppoints_v2_shapes() -> ExperimentConfig:
    """Dense RepPoints v2 on the generated shapes at 128 px: the shapes job's recipe (``reppoints_lite0_shapes``:
    ImageNet EfficientNet-Lite0 offline, 64-channel FPN and head, Adam 1e-3 at batch 8, a cosine over 11 epochs,
    flip-tested evaluation) with a smaller point set: 81 points in 9 groups, 25 score maps, a 3-conv mask branch.
    Masks are the points' convex hull (``mask_rule="hull"``): the card's triangulation of 81 points cannot exceed
    ~40 mask AP on these 15-40 px objects even with perfect points (docs/reppoints.md).
    """
    model = DenseRepPointsV2Config(
        **_LITE0_SHAPES, num_points=81, num_score_groups=25, stacked_mask_convs=3, mask_rule="hull"
    )
    return _on_shapes("dense_reppoints_v2_shapes", model)


def lsnet_r50_fpn() -> ExperimentConfig:
    """LSNet detection (extreme points), ResNet-50 + FPN P3-P7 with GN, DCN towers, pyramid DCN: the paper's 1x recipe.

    The paper's 1x ablations (Table 3, 36.2 box AP with the pyramid DCN on COCO val) use ImageNet weights
    (``model.backbone_weights=imagenet``, the default). Training is ``reppoints_r50_fpn``'s: SGD lr 0.01 at batch 16,
    momentum 0.9, weight decay 1e-4, 500 warm-up steps from 0.001 x lr, grad clip 35, 12 epochs with drops after 8 and
    11, keep-ratio (1333, 800), flip 0.5 (configs/lsnet/lsnet_bbox_r50_fpn_1x_coco.py of the official code).
    """
    base = reppoints_r50_fpn()
    return replace(base, name="lsnet_r50_fpn", model=LSNetConfig(backbone="resnet50", backbone_weights="imagenet"))


def lsnet_r50_fpn_2x_ms() -> ExperimentConfig:
    """LSNet detection, R-50 + FPN, 24 epochs with multi-scale training: the paper's R-50 headline recipe (44.8 box AP
    on COCO test-dev, MS-train 24 epochs; METHODS.md CARD 4 (f)).

    As ``lsnet_r50_fpn`` with drops after 16 and 22 and the shorter side drawn from [480, 960] (long side at most
    1333); test at (1333, 800). From configs/lsnet/lsnet_bbox_r50_fpn_mstrain_2x_coco.py of the official code
    (``step=[16, 22]``, ``total_epochs = 24``, ``img_scale=[(1333, 480), (1333, 960)]``, ``multiscale_mode='range'``);
    the paper's "[400,1333]-[960,1333]" range differs (METHODS.md App. A #13: the code's is the default).
    """
    return _two_x_multi_scale(lsnet_r50_fpn(), "lsnet_r50_fpn_2x_ms")


ATSS_TEST_SHORTER_SIDES = (400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800)
"""Shorter sides (pixels, long side at most 3000) of the ATSS multi-scale test that LSNet follows (METHODS.md CARD 4
(d) 8; the commented ``test_pipeline`` of Duankaiwen/LSNet code/configs/lsnet/*mstrain* configs), each with flip."""

ATSS_TEST_BOX_RANGES = (
    *((96.0, math.inf),) * 2, *((64.0, math.inf),) * 3, *((0.0, math.inf),) * 2,
    *((0.0, 256.0),) * 2, *((0.0, 192.0),) * 2, (0.0, 96.0),
)  # fmt: skip
"""The valid box size ``sqrt(area)`` (pixels of the resized image, both ends included) of each of
``ATSS_TEST_SHORTER_SIDES``: the configs' commented ``test_cfg`` ``scale_ranges``, whose 10000 stands for no bound."""


def atss_multiscale_eval(evaluation: EvalConfig, short_side: int = 800) -> EvalConfig:
    """``evaluation`` with the ATSS / LSNet multi-scale test: flip, ``ATSS_TEST_SHORTER_SIDES`` as factors of the
    test input's shorter side ``short_side`` (``data.test_min_size``: 800 gives 0.5, 0.625, 0.75, 0.8, ..., 2.25) and
    ``ATSS_TEST_BOX_RANGES``, the scales merged by the post-processor's own merge (LSNet: box voting, IoU 0.66).

    pointdet scales the (1333, 800) test input, so an image's size at a factor is the code's (3000, side) resize for
    images up to 5:3, and at 1800 for every image (3000 = 1333 x 2.25); wider images, whose 800 was capped by the
    1333, come out smaller than the code's at the other sides.
    """
    return replace(
        evaluation,
        flip=True,
        scales=tuple(side / short_side for side in ATSS_TEST_SHORTER_SIDES),
        scale_box_ranges=ATSS_TEST_BOX_RANGES,
    )


def lsnet_cpv_r50_fpn() -> ExperimentConfig:
    """LSNet-CPV, R-50 + FPN: ``lsnet_r50_fpn_2x_ms`` with RepPoints v2's corner and foreground verification branches
    (loss weights 0.25 heatmap, 1.0 corner offset, 0.1 foreground), their fusion into the classifier and the refine
    stage, and joint inference at test time.

    From configs/lsnet/lsnet_bbox_cpv_x101_fpn_dconv_c3-c5_mstrain_2x_coco.py of the official code (``LSCPVHead``), on
    R-50 without backbone DCN (``model.backbone=resnet101 model.backbone_dcn=true`` come closer to its X-101-DCN: 50.4
    box AP on test-dev); every CPV config there trains 24 epochs at multi-scale.
    """
    base = lsnet_r50_fpn_2x_ms()
    model = replace(base.model, corner_verification=True, foreground_verification=True, joint_inference=True)
    return replace(base, name="lsnet_cpv_r50_fpn", model=model)


def lsnet_shapes() -> ExperimentConfig:
    """LSNet on the generated shapes at 128 px: the shapes job (``reppoints_lite0_shapes``) with LSNet's head, its
    towers plain convs (``model.tower=dcn`` is LSNet's, slower on a CPU)."""
    return _on_shapes("lsnet_shapes", LSNetConfig(**_LITE0_SHAPES, tower="conv"))


def cpm_rcnn_r50_fpn() -> ExperimentConfig:
    """CPM R-CNN, ResNet-50 + FPN P2-P6, the code's 2x recipe (METHODS.md CARD 6 (f); paper: 41.5 box AP on COCO val).

    SGD lr 0.02 at batch 16, momentum 0.9, 500 warm-up steps from 0.1 x lr; 180k iterations with drops at 120k and
    160k, i.e. 24 epochs with drops after 16 and 22 on COCO train2017 (7.3k steps per epoch); weight decay 4e-5 as
    the paper (the code's yaml has 1e-4: ``optim.weight_decay=1e-4``, METHODS.md App. A #18); keep-ratio (1333, 800)
    training and test, flip only; frozen stem + stage 1 and frozen BatchNorm.
    """
    base = reppoints_r50_fpn()
    return replace(
        base,
        name="cpm_rcnn_r50_fpn",
        model=CPMRCNNConfig(backbone="resnet50", backbone_weights="imagenet"),  # the paper starts from ImageNet
        optim=replace(
            base.optim, lr=0.02, weight_decay=4e-5, epochs=24, lr_steps=(16, 22), warmup_ratio=0.1, grad_clip=None
        ),
    )


def grid_rcnn_r50_fpn() -> ExperimentConfig:
    """Grid R-CNN Plus: ``cpm_rcnn_r50_fpn`` with cascade mapping, ISM and RSM off (paper Table 1 baseline: 39.9)."""
    base = cpm_rcnn_r50_fpn()
    model = replace(base.model, cascade_mapping=False, iou_scoring=False, rescoring=False)
    return replace(base, name="grid_rcnn_r50_fpn", model=model)


def cpm_rcnn_shapes() -> ExperimentConfig:
    """CPM R-CNN on the generated shapes at 128 px with ``reppoints_lite0_shapes``' recipe: ImageNet EfficientNet-Lite0
    (offline; stem and stride-4 blocks frozen), a 64-channel FPN P2-P6, Adam 1e-3 at batch 8, 11 epochs with a cosine,
    one flip-tested evaluation at the end.

    CPU-sized RoI heads (the paper's numbers stay in ``cpm_rcnn_r50_fpn``): anchors 8-128 px, 300 RPN RoIs, 64 sampled
    RoIs per image for the classifier and the RSM, FC 256, grid branches of 4 convs with 8 channels per point
    (72 = 9 x 8) on at most 8 training RoIs per image and stage, 32 after the test-time NMS, one RoIAlign sample per
    bin (RoIAlign's backward, single-threaded on a CPU, was a quarter of a step with 2 x 2); the three stages, the
    mapping ratios, ISM and RSM as the paper."""
    model = CPMRCNNConfig(
        **_LITE0_SHAPES, anchor_sizes=(8, 16, 32, 64, 128), rpn_train_rois=300, rpn_test_rois=300, roi_batch=64,
        hidden=256, point_channels=8, grid_convs=4, max_grid_rois=32, train_grid_rois=8, roi_sampling_ratio=1,
    )  # fmt: skip
    return _on_shapes("cpm_rcnn_shapes", model)


def lsnet_segm_r50_fpn() -> ExperimentConfig:
    """LSNet instance segmentation (36 contour points, masks from the polygon), ResNet-50 + FPN P3-P7 with GN.

    ``lsnet_r50_fpn``'s network and training with the code's segmentation schedule: 30 epochs, lr / 10 after epoch
    28 (the official config's drops "28, 30" end the run at 30; METHODS.md CARD 4 (f)). ImageNet weights via
    ``model.backbone_weights=resnet50-0676ba61.pth``.
    """
    base = lsnet_r50_fpn()
    return replace(
        base,
        name="lsnet_segm_r50_fpn",
        model=replace(base.model, task="segmentation"),
        optim=replace(base.optim, epochs=30, lr_steps=(28,)),
    )


def lsnet_segm_shapes() -> ExperimentConfig:
    """LSNet instance segmentation on the generated shapes at 128 px: ``lsnet_shapes`` with the contour task."""
    base = lsnet_shapes()
    return replace(base, name="lsnet_segm_shapes", model=replace(base.model, task="segmentation"))


def lsnet_pose_r50_fpn() -> ExperimentConfig:
    """LSNet pose, obj-box (METHODS.md CARD 4): 17 keypoints + centre regressed from the anchor point, a second branch
    for the person box's border centres, ResNet-50 + FPN P3-P7 with GN; the code's 60 epochs with lr / 10 after 54 and
    56 (configs/lsnet/lsnet_pose_bbox_r50_fpn_1x_coco.py; the paper's X-101-DCN reaches 55.7 keypoint AP).

    Training as ``lsnet_r50_fpn`` (SGD 0.01 at batch 16, keep-ratio (1333, 800), flip with the keypoints' left / right
    pairs) on COCO person keypoints (``data.train_json=.../person_keypoints_train2017.json`` and its images); boxes
    of 32 x 32 px or less are dropped before scoring (``eval.min_box_area=1024``, the code's ``simple_test``).
    """
    base = lsnet_r50_fpn()
    schedule = replace(base.optim, epochs=60, lr_steps=(54, 56))
    evaluation = replace(base.eval, min_box_area=1024.0)
    pose = replace(base.model, task="pose")
    return replace(base, name="lsnet_pose_r50_fpn", model=pose, optim=schedule, eval=evaluation)


def lsnet_pose_kbox_r50_fpn() -> ExperimentConfig:
    """LSNet pose, kps-box: the box is the visible keypoints' extent (persons without one are never positive),
    fine-tuned from an ``lsnet_pose_r50_fpn`` run with ``model.init_from=runs/lsnet_pose_r50_fpn-<time>`` (every
    tensor of the keypoint branch and the towers loads; the obj-box box branch is left out), the code's 24 epochs
    with lr / 10 after 12 and 20 (the paper says +20 epochs, METHODS.md CARD 4 (f) ⚠; X-101-DCN: 59.0 keypoint AP).
    """
    base = lsnet_pose_r50_fpn()
    schedule = replace(base.optim, epochs=24, lr_steps=(12, 20))
    kps_box = replace(base.model, pose_box="keypoints")
    return replace(base, name="lsnet_pose_kbox_r50_fpn", model=kps_box, optim=schedule)


def lsnet_pose_shapes() -> ExperimentConfig:
    """LSNet pose (obj-box) on the generated shapes' 4 keypoints (top, right, bottom, left vertices) at 128 px:
    ``lsnet_shapes``' network and recipe, 3 classes with the same keypoint layout, OKS sigma 0.05 per keypoint; no
    32 x 32 px box filter (most shapes are smaller).

    With pointdet's signed-offset L1 term at weight 3 (``model.pose_offset_l1``; 0 is LSNet's loss): a vertex's
    coordinate across its side (top.x, right.y, ...) changes sign with the shape's rotation, and the cross-IoU alone
    puts it on its more frequent side (keypoint AP 30.9 without the term, 39.3 / 59.1 / 55.0 at weights 1 / 3 / 10;
    docs/lsnet.md).
    """
    base = lsnet_shapes()
    model = replace(base.model, task="pose", pose_offset_l1=3.0)
    return replace(base, name="lsnet_pose_shapes", model=model)


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {
    fn.__name__: fn
    for fn in (
        reppoints_lite0_shapes,
        centernet_dla34_shapes,
        centernet_r18,
        centernet_r50,
        centernet_r101,
        centernet_dla34,
        centernet_dla34_2x,
        centernet_hg104,
        centernet_pose_shapes,
        centernet_pose_r18,
        centernet_pose_dla34,
        centernet_pose_hg104,
        centernet_3d_synthetic,
        centernet_3d_dla34,
        centripetalnet_shapes,
        cornernet_shapes,
        centripetalnet_hg52,
        cornernet_hg52,
        centripetalnet_hg104,
        reppoints_shapes,
        reppoints_r50_fpn,
        centernet_effl0_raccoon,
        reppoints_effl0_raccoon,
        reppoints_v2_effl0_raccoon,
        lsnet_effl0_raccoon,
        cpm_rcnn_effl0_raccoon,
        fcos_effl0_raccoon,
        reppoints_v2_shapes,
        reppoints_v2_r50_fpn,
        reppoints_v2_r50_fpn_2x_ms,
        dense_reppoints_v2_shapes,
        dense_reppoints_v2_r50_fpn,
        lsnet_shapes,
        lsnet_r50_fpn,
        lsnet_r50_fpn_2x_ms,
        lsnet_cpv_r50_fpn,
        cpm_rcnn_shapes,
        cpm_rcnn_r50_fpn,
        grid_rcnn_r50_fpn,
        lsnet_segm_r50_fpn,
        lsnet_segm_shapes,
        lsnet_pose_r50_fpn,
        lsnet_pose_kbox_r50_fpn,
        lsnet_pose_shapes,
    )
}
DEFAULT_PRESET = "reppoints_v2_effl0_raccoon"


def get_preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]()
