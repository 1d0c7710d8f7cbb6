"""Experiment configuration: frozen dataclasses, named presets and ``key=value`` overrides."""

from pointdet.configs.overrides import apply_overrides, config_from_dict, config_to_dict
from pointdet.configs.presets import DEFAULT_PRESET, PRESETS, get_preset
from pointdet.configs.schema import DataConfig, EvalConfig, ExperimentConfig, ModelConfig, OptimConfig

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "get_preset",
]
