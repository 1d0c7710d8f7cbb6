import json
import re

import pytest

from pointdet.configs import (
    PRESETS,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    OptimConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    get_preset,
)
from pointdet.errors import ConfigError


def test_overrides_are_typed():
    config = apply_overrides(
        get_preset("centernet_r18"),
        ["optim.lr=2e-4", "optim.weight_decay=1.0e-4", "data.scales=[0.5,1]", "optim.grad_clip=35", "seed=3"],
    )
    assert config.optim.lr == 2e-4 and config.optim.weight_decay == 1e-4 and config.data.scales == (0.5, 1.0)
    assert config.optim.grad_clip == 35.0 and config.seed == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("optim.epochs=ten", "optim.epochs: expected int"),
        ("model.backbone=vgg", "not one of"),
        ("optim=3", "is a section"),
        ("nonsense", "must look like key=value"),
    ],
)
def test_bad_overrides_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_preset("centernet_r18"), [override])


def test_yaml_round_trip_of_every_preset():
    for name in PRESETS:
        config = get_preset(name)
        assert config_from_dict(ExperimentConfig, config_to_dict(config)) == config


def test_values_are_data_not_code():
    config = apply_overrides(get_preset("centernet_r18"), ["name=__import__('os').system('echo hi')"])
    assert config.name == "__import__('os').system('echo hi')"


# RepPoints' keys, which RepPoints v2 shares: (preset, key, a value out of range, the rule).
def verification_ranges(preset: str) -> list[tuple]:
    """The corner / foreground verification weights shared by RepPoints v2, Dense RepPoints v2 and LSNet-CPV."""
    weights = (("heatmap_weight", -1.0), ("corner_offset_weight", -1.0), ("foreground_weight", -0.1))
    return [(preset, f"model.{name}", value, ">= 0") for name, value in weights]


REPPOINTS_RANGES = [
    ("reppoints_shapes", "model.frozen_stages", 5, "in [0, 4]"),
    ("reppoints_shapes", "model.channels", 0, ">= 1"),
    ("reppoints_shapes", "model.stacked_convs", 0, ">= 1"),
    ("reppoints_shapes", "model.num_points", 8, "an odd square >= 9"),
    ("reppoints_shapes", "model.gradient_mul", 1.5, "in [0, 1]"),
    ("reppoints_shapes", "model.score_threshold", 1.0, "in [0, 1)"),
    ("reppoints_shapes", "model.nms_iou", 0, "in (0, 1]"),
    ("reppoints_shapes", "model.pre_nms", 0, ">= 1"),
]

# Every numeric or list field of every config section: (preset of its family, key, a value out of range, the rule).
OUT_OF_RANGE = [
    ("centernet_r18", "model.head_conv", 0, ">= 1"),
    ("centernet_r18", "model.frozen_stages", -1, "in [0, 4]"),
    ("centernet_r18", "model.min_overlap", 1.0, "in (0, 1)"),
    ("centernet_r18", "model.size_weight", -0.1, ">= 0"),
    ("centernet_r18", "model.offset_weight", float("nan"), ">= 0"),
    ("cornernet_hg52", "model.head_conv", -1, ">= 1"),
    ("cornernet_hg52", "model.guiding_weight", -1, ">= 0"),
    ("cornernet_hg52", "model.soft_nms_sigma", 0, "> 0"),
    *REPPOINTS_RANGES,
    *(("reppoints_v2_shapes", key, value, rule) for _, key, value, rule in REPPOINTS_RANGES),
    *verification_ranges("reppoints_v2_shapes"),
    ("lsnet_shapes", "model.channels", 48, "a multiple of 32"),
    ("lsnet_shapes", "model.stacked_convs", 0, ">= 1"),
    ("lsnet_shapes", "model.frozen_stages", -1, "in [0, 4]"),
    ("lsnet_shapes", "model.init_weight", -1.0, ">= 0"),
    ("lsnet_shapes", "model.refine_weight", -0.5, ">= 0"),
    ("lsnet_pose_shapes", "model.pose_offset_l1", -1.0, ">= 0"),
    ("lsnet_shapes", "model.gradient_mul", -0.1, "in [0, 1]"),
    ("lsnet_shapes", "model.nms_iou", 1.5, "in (0, 1]"),
    ("lsnet_shapes", "model.score_threshold", -0.1, "in [0, 1)"),
    ("lsnet_shapes", "model.pre_nms", -1, ">= 1"),
    *verification_ranges("lsnet_shapes"),
    ("fcos_effl0_raccoon", "model.frozen_stages", 5, "in [0, 4]"),
    ("fcos_effl0_raccoon", "model.channels", 0, ">= 1"),
    ("fcos_effl0_raccoon", "model.num_convs", 0, ">= 1"),
    ("fcos_effl0_raccoon", "model.center_sampling_radius", 0, "> 0"),
    ("fcos_effl0_raccoon", "model.score_threshold", 1, "in [0, 1)"),
    ("fcos_effl0_raccoon", "model.nms_iou", 0, "in (0, 1]"),
    ("fcos_effl0_raccoon", "model.pre_nms", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.frozen_stages", 5, "in [0, 4]"),
    ("cpm_rcnn_shapes", "model.channels", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.anchor_sizes", [8, 0, 32, 64, 128], "a non-empty list of numbers > 0"),
    ("cpm_rcnn_shapes", "model.rpn_train_rois", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.rpn_test_rois", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.roi_batch", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.positive_fraction", 0, "in (0, 1]"),
    ("cpm_rcnn_shapes", "model.hidden", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.point_channels", 6, "a multiple of 4"),
    ("cpm_rcnn_shapes", "model.mapping_ratios", [2, 0.5, 1.25], "a non-empty list of numbers >= 1"),
    ("cpm_rcnn_shapes", "model.grid_convs", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.roi_sampling_ratio", -1, ">= 0"),
    ("cpm_rcnn_shapes", "model.soft_nms_sigma", 0, "> 0"),
    ("cpm_rcnn_shapes", "model.train_grid_rois", 0, ">= 1"),
    *(("dense_reppoints_v2_shapes", key, value, rule) for _, key, value, rule in REPPOINTS_RANGES),
    *verification_ranges("dense_reppoints_v2_shapes"),
    ("dense_reppoints_v2_shapes", "model.num_groups", 0, ">= 1"),
    ("dense_reppoints_v2_shapes", "model.num_score_groups", 24, "a square (121, 25, ...)"),
    ("dense_reppoints_v2_shapes", "model.stacked_mask_convs", 0, ">= 1"),
    ("dense_reppoints_v2_shapes", "model.chamfer_init_weight", -1.0, ">= 0"),
    ("dense_reppoints_v2_shapes", "model.chamfer_refine_weight", -1.0, ">= 0"),
    ("dense_reppoints_v2_shapes", "model.mask_score_weight", -1.0, ">= 0"),
    ("dense_reppoints_v2_shapes", "model.contour_heatmap_weight", -1.0, ">= 0"),
    ("dense_reppoints_v2_shapes", "model.contour_offset_weight", -1.0, ">= 0"),
    ("dense_reppoints_v2_shapes", "model.contour_threshold", 1.5, "in [0, 1]"),
    ("dense_reppoints_v2_shapes", "model.mask_size", 1, ">= 2"),
    ("dense_reppoints_v2_shapes", "model.band_distance", -1.0, ">= 0"),
    ("cpm_rcnn_shapes", "model.stage_ious", [0.5, 1.6, 0.7], "a non-empty list of numbers in [0, 1]"),
    ("cpm_rcnn_shapes", "model.stage_weights", [1, -0.5, 0.25], "a non-empty list of numbers >= 0"),
    ("cpm_rcnn_shapes", "model.max_grid_rois", 0, ">= 1"),
    ("cpm_rcnn_shapes", "model.score_threshold", 1.0, "in [0, 1)"),
    ("cpm_rcnn_shapes", "model.nms_iou", 0, "in (0, 1]"),
    ("cpm_rcnn_shapes", "model.gamma", 1.5, "in [0, 1]"),
    ("centernet_r18", "data.shapes_train", 0, ">= 1"),
    ("centernet_r18", "data.shapes_val", 0, ">= 1"),
    ("centernet_r18", "data.shapes_image_size", 16, ">= 32"),
    ("centernet_r18", "data.classes", [], "a non-empty list"),
    ("centernet_r18", "data.synthetic_train", 0, ">= 1"),
    ("centernet_r18", "data.synthetic_val", -3, ">= 1"),
    ("centernet_r18", "data.input_size", 7, ">= 32"),
    ("centernet_r18", "data.input_height", 0, ">= 32"),
    ("centernet_r18", "data.scales", [], "a non-empty list of numbers > 0"),
    ("centernet_r18", "data.min_size", [800, 600], "one size >= 1 or [low, high]"),
    ("centernet_r18", "data.max_size", 0, ">= 1"),
    ("centernet_r18", "data.test_min_size", 0, ">= 1"),
    ("centernet_r18", "data.flip", 2, "in [0, 1]"),
    ("centernet_r18", "data.color_jitter", -0.5, "in [0, 1]"),
    ("centernet_r18", "data.lighting", -0.1, ">= 0"),
    ("centernet_r18", "data.num_workers", -1, ">= 0"),
    ("centernet_r18", "optim.lr", -1, "> 0"),
    ("centernet_r18", "optim.base_batch", 0, ">= 1"),
    ("centernet_r18", "optim.batch_size", 0, ">= 1"),
    ("centernet_r18", "optim.momentum", 1, "in [0, 1)"),
    ("centernet_r18", "optim.weight_decay", -1e-4, ">= 0"),
    ("centernet_r18", "optim.epochs", 0, ">= 1"),
    ("centernet_r18", "optim.lr_steps", [0], "a list of numbers >= 1"),
    ("centernet_r18", "optim.warmup_iters", -1, ">= 0"),
    ("centernet_r18", "optim.warmup_ratio", 1.5, "in [0, 1]"),
    ("centernet_r18", "optim.grad_clip", 0, "> 0"),
    ("centernet_r18", "eval.every", 0, ">= 1"),
    ("centernet_r18", "eval.scales", [1, -1], "a non-empty list of numbers > 0"),
    ("centernet_r18", "eval.scale_box_ranges", [[96, 64]], "a list of [low, high] pairs with 0 <= low < high"),
    ("centernet_r18", "eval.topk", 0, ">= 1"),
    ("centernet_r18", "eval.batch_size", 0, ">= 1"),
    ("centernet_r18", "eval.keypoint_sigmas", [0.05, 0], "a list of numbers > 0"),
    ("centernet_r18", "eval.score_threshold", 1, "in [0, 1)"),
    ("centernet_r18", "eval.confusion_threshold", 1.5, "in [0, 1]"),
    ("lsnet_pose_shapes", "eval.min_box_area", -1, ">= 0"),
    ("centernet_r18", "seed", -1, ">= 0"),
    ("centernet_r18", "checkpoint_every", -1, ">= 0"),
    ("centernet_r18", "num_visualizations", -1, ">= 0"),
    ("centernet_r18", "max_steps", -1, ">= 0"),
]


def _numeric_fields() -> set[tuple[str, str]]:
    """(section class, field) of every int, float or list field, optional or not; Literal and bool ones excluded."""
    import dataclasses
    import types
    import typing

    from pointdet.configs import MODEL_FAMILIES

    classes = {*MODEL_FAMILIES.values(), DataConfig, OptimConfig, EvalConfig, ExperimentConfig}
    found = set()
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            options = typing.get_args(hints[field.name]) if isinstance(hints[field.name], types.UnionType) else ()
            kinds = [o for o in options or (hints[field.name],) if o is not type(None)]
            if any(kind in (int, float) or typing.get_origin(kind) is tuple for kind in kinds):
                found.add((cls.__name__, field.name))
    return found


def test_the_range_table_covers_every_numeric_and_list_field():
    covered = {(type(_section(get_preset(p), key)).__name__, key.split(".")[-1]) for p, key, _, _ in OUT_OF_RANGE}
    assert covered == _numeric_fields()


def _section(config, key):
    return getattr(config, key.split(".")[0]) if "." in key else config


@pytest.mark.parametrize(
    ("preset", "key", "value", "allowed"), OUT_OF_RANGE, ids=[f"{p}:{k}" for p, k, *_ in OUT_OF_RANGE]
)
def test_every_out_of_range_value_is_refused_with_its_key(preset, key, value, allowed):
    text = json.dumps(value).replace("NaN", ".nan")  # as a user types it on the command line (YAML)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.*: must be {re.escape(allowed)}"):
        apply_overrides(get_preset(preset), [f"{key}={text}"])


def test_input_sizes_are_multiples_of_the_backbone_stride():
    with pytest.raises(
        ConfigError, match=r"data.input_size=100: must be a multiple of 32, .* resnet18 .*\(e.g. 96 or 128\)"
    ):
        apply_overrides(get_preset("centernet_r18"), ["data.input_size=100"])
    with pytest.raises(ConfigError, match=r"data.input_height=96: must be a multiple of 128, .* hourglass52 .*128\)"):
        apply_overrides(get_preset("cornernet_hg52"), ["data.input_height=96"])
    # Overrides are applied as a whole: an invalid mix on the way (hourglass52 at 96 px) is not refused.
    config = apply_overrides(get_preset("cornernet_hg52"), ["data.input_size=96", "model.backbone=hourglass_small"])
    assert (config.data.input_size, config.model.backbone) == (96, "hourglass_small")
    config = apply_overrides(get_preset("reppoints_shapes"), ["model.channels=48", "model.norm=none"])
    assert config.model.channels == 48
    with pytest.raises(ConfigError, match="model.channels=48: must be a multiple of 32 with model.norm=gn"):
        apply_overrides(get_preset("reppoints_shapes"), ["model.channels=48"])


def test_size_divisors_match_the_backbones():
    import torch

    from pointdet.configs.validation import size_divisor
    from pointdet.models.backbones import DLA34, ResNet, hourglass52, hourglass104, hourglass_small

    with torch.device("meta"):
        built = {
            "hourglass104": hourglass104(),
            "hourglass52": hourglass52(),
            "hourglass_small": hourglass_small(),
            "resnet18": ResNet(18),
            "dla34": DLA34(),
        }
    for name, backbone in built.items():
        assert size_divisor(name) == backbone.size_divisor, name


def test_configs_built_in_python_are_checked_too():
    with pytest.raises(ConfigError, match=r"^optim.epochs=0: must be >= 1"):
        OptimConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"^data.scales=\[\]: must be a non-empty list"):
        DataConfig(scales=())


def test_cli_says_which_setting_is_wrong(capsys):
    from pointdet.cli import main

    for override, message in [
        ("optim.batch_size=0", "config error: optim.batch_size=0: must be >= 1"),
        ("optim.lr=-1", "config error: optim.lr=-1.0: must be > 0"),
        ("data.scales=[]", r"config error: data.scales=\[\]: must be a non-empty list of numbers > 0"),
        ("eval.every=0", "config error: eval.every=0: must be >= 1"),
        ("data.input_size=7", "config error: data.input_size=7: must be >= 32"),
        ("optim.epochs=0", "config error: optim.epochs=0: must be >= 1"),
    ]:
        with pytest.raises(SystemExit, match=f"^{message}$"):
            main(["train", override])
