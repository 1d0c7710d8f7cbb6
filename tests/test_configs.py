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
    ("reppoints_shapes", "model.corner_start", -1, ">= 0"),
    ("reppoints_shapes", "model.cls_weight", 0, "> 0"),
    ("reppoints_shapes", "model.roi_batch", 0, ">= 1"),
    ("reppoints_shapes", "model.roi_hidden", 0, ">= 1"),
    ("reppoints_shapes", "model.roi_sampling_ratio", -1, ">= 0"),
    ("reppoints_shapes", "model.score_threshold", 1.0, "in [0, 1)"),
    ("reppoints_shapes", "model.nms_iou", 0, "in (0, 1]"),
    ("reppoints_shapes", "model.pre_nms", 0, ">= 1"),
]

# Every numeric or list field of every config section: (preset of its family, key, a value out of range, the rule).
OUT_OF_RANGE = [
    ("centernet_r18", "model.head_conv", 0, ">= 1"),
    ("centernet_r18", "model.frozen_stages", -1, "in [0, 4]"),
    ("centernet_r18", "model.min_overlap", 1.0, "in (0, 1)"),
    ("centernet_effl0_raccoon", "model.upsampler_skip_init", -1.0, ">= 0"),
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
    ("fcos_effl0_raccoon", "model.cls_weight", 0, "> 0"),
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
    ("centernet_r18", "data.shapes_train", 0, "in [1, 1000000]"),
    ("centernet_r18", "data.shapes_train", 100_000_000, "in [1, 1000000]"),
    ("centernet_r18", "data.shapes_val", 0, "in [1, 1000000]"),
    ("centernet_r18", "data.shapes_image_size", 16, "in [32, 2048]"),
    ("centernet_r18", "data.shapes_image_size", 4096, "in [32, 2048]"),
    ("centernet_r18", "data.classes", [], "a non-empty list"),
    ("centernet_r18", "data.synthetic_train", 0, "in [1, 1000000]"),
    ("centernet_r18", "data.synthetic_val", -3, "in [1, 1000000]"),
    ("centernet_r18", "data.input_size", 7, "in [32, 4096]"),
    ("centernet_r18", "data.input_size", 100_000, "in [32, 4096]"),
    ("centernet_r18", "data.input_height", 0, "in [32, 4096]"),
    ("centernet_r18", "data.input_height", 65_536, "in [32, 4096]"),
    ("centernet_r18", "data.scales", [], "a non-empty list of numbers > 0"),
    ("centernet_r18", "data.min_size", [800, 600], "one size in [1, 4096] or [low, high]"),
    ("centernet_r18", "data.min_size", [8000], "one size in [1, 4096] or [low, high]"),
    ("centernet_r18", "data.max_size", 0, "in [1, 4096]"),
    ("centernet_r18", "data.max_size", 10_000, "in [1, 4096]"),
    ("centernet_r18", "data.test_min_size", 0, "in [1, 4096]"),
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
    ("centernet_r18", "seed", -1, "in [0, 4294967295]"),
    ("centernet_r18", "seed", 1_000_000_000_000_000, "in [0, 4294967295]"),
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
        ("data.input_size=7", r"config error: data.input_size=7: must be in \[32, 4096\]"),
        ("optim.epochs=0", "config error: optim.epochs=0: must be >= 1"),
    ]:
        with pytest.raises(SystemExit, match=f"^{message}$"):
            main(["train", override])


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("optim.lr=[1,", "expected the node content, but found '<stream end>'"),
        ("data.scales={0.5: 1", "expected ',' or '}', but got '<stream end>'"),
        ('name=!!python/object/apply:os.system ["echo hi"]', "could not determine a constructor for the tag"),
        ("data.scales=" + "[" * 100_000, "nested too deeply"),
    ],
    ids=["syntax", "unclosed-mapping", "python-tag", "nested"],
)
def test_overrides_that_are_not_yaml_data_are_one_line_config_errors(override, problem, capsys):
    from pointdet.cli import main

    key, text = override.split("=", 1)
    with pytest.raises(SystemExit) as caught:
        main(["train", override])
    message = str(caught.value.code)
    assert message.startswith(f"config error: {key}={text[:60]}: not a value ({problem}")
    assert len(message.splitlines()) == 1 and "values are YAML data" in message


def test_a_checkpoint_config_out_of_range_is_refused_before_anything_is_built(tmp_path, tiny_shapes):
    import torch

    from pointdet.cli import main
    from pointdet.configs import config_from_checkpoint
    from pointdet.engine.checkpoint import save_checkpoint

    from .helpers import untrained_checkpoint

    path = untrained_checkpoint(tiny_shapes, tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)
    state["config"]["data"]["input_size"] = 65536
    save_checkpoint(state, path)
    expected = "the config stored in the checkpoint is not valid: data.input_size=65536: must be in [32, 4096]"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config_from_checkpoint(state)
    with pytest.raises(SystemExit, match=re.escape(f"config error: {expected}")):
        main(["eval", "--weights", str(path)])
    with pytest.raises(ConfigError, match="the checkpoint holds no config"):
        config_from_checkpoint({"model": state["model"]})


def test_generating_many_images_shows_progress(tmp_path, monkeypatch, capsys):
    from pointdet.data.shapes import generate_shapes

    monkeypatch.setattr("pointdet.data.cache.GENERATION_PROGRESS_FROM", 3)
    generate_shapes(tmp_path, num_train=3, num_val=2, image_size=32)
    error = capsys.readouterr().err
    assert "generating 3 shapes images (train)" in error and "generating 2 shapes images" not in error


def test_the_config_modules_import_each_other_without_a_circle():
    """Every import among ``pointdet.configs.*`` and ``pointdet.errors`` (at the top or inside a function) points
    one way."""
    import ast
    from pathlib import Path

    import pointdet

    root = Path(pointdet.__file__).parent
    files = {f"pointdet.configs.{p.stem}": p for p in (root / "configs").glob("*.py") if p.stem != "__init__"}
    files["pointdet.errors"] = root / "errors.py"
    imports = {
        module: {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module in files
        }
        for module, path in files.items()
    }
    assert imports["pointdet.configs.schema"] and imports["pointdet.configs.overrides"]  # the graph is not empty

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(m == target or (m not in seen and reaches(m, target, seen | {m})) for m in imports[start])

    circles = [module for module in files if reaches(module, module, {module})]
    assert not circles
