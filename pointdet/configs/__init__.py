"""Experiment configuration: frozen dataclasses, named presets and ``key=value`` overrides."""

from pointdet.configs.overrides import (
    apply_eval_overrides,
    apply_overrides,
    config_from_dict,
    config_to_dict,
)
from pointdet.configs.presets import DEFAULT_PRESET, PRESETS, get_preset
from pointdet.configs.schema import (
    MODEL_FAMILIES,
    CenterNetConfig,
    CornerConfig,
    DataConfig,
    DenseRepPointsV2Config,
    EvalConfig,
    ExperimentConfig,
    LSNetConfig,
    ModelConfig,
    OptimConfig,
    RepPointsConfig,
    RepPointsV2Config,
)
from pointdet.configs.versions import CONFIG_VERSION, config_from_checkpoint, upgrade_config
from pointdet.errors import ConfigError

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_PRESET",
    "MODEL_FAMILIES",
    "PRESETS",
    "CenterNetConfig",
    "ConfigError",
    "CornerConfig",
    "DataConfig",
    "DenseRepPointsV2Config",
    "EvalConfig",
    "ExperimentConfig",
    "LSNetConfig",
    "ModelConfig",
    "OptimConfig",
    "RepPointsConfig",
    "RepPointsV2Config",
    "apply_eval_overrides",
    "apply_overrides",
    "config_from_checkpoint",
    "config_from_dict",
    "config_to_dict",
    "get_preset",
    "upgrade_config",
]
