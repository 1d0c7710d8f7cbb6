"""Versioned configs in checkpoints: what today's code writes, and how older ones are read.

Version 1 (pointdet up to the corner methods) had one flat ``ModelConfig`` of 17 fields for every method;
version 2 has one config class per method family (``configs.schema.MODEL_FAMILIES``); version 3 has the same
configs, and the deformable convolutions of the CenterNet up-samplers (DLA-up, the ResNet DCN up-sampler) gained
the bias of the official DCNv2 layer (older weights load with zero biases: ``engine.checkpoint.model_state``);
version 4 gave the DCNv2 layers of LSNet's head towers their official bias too (likewise loaded as zeros).
"""

from __future__ import annotations

from typing import Any

from pointdet.configs.overrides import config_from_dict
from pointdet.configs.schema import MODEL_FAMILIES, ExperimentConfig
from pointdet.errors import ConfigError

CONFIG_VERSION = 4


def upgrade_config(data: dict[str, Any], version: int) -> dict[str, Any]:
    """A config dict written by ``version`` in today's form (a new dict; ``data`` is unchanged)."""
    if version > CONFIG_VERSION:
        raise ConfigError(f"config version {version} is newer than this pointdet understands ({CONFIG_VERSION})")
    data = dict(data)
    if version < 2 and "model" in data:
        # The flat v1 model section: keep the keys of the method's family; the others never applied to it.
        model = data["model"]
        family = MODEL_FAMILIES.get(model.get("method", "centernet"))
        if family is None:
            raise ConfigError(f"unknown model.method {model.get('method')!r} in a version-{version} config")
        known = {name for name in family.__dataclass_fields__}
        data["model"] = {key: value for key, value in model.items() if key in known}
    return data


def config_from_checkpoint(state: dict[str, Any]) -> ExperimentConfig:
    """The experiment config stored in a checkpoint of any version, checked as any config is.

    Raises:
        ConfigError: the checkpoint holds no config, or one with a key or value that is not valid (an
            ``input_size`` out of range, ...), saying that the checkpoint's config is meant.
    """
    stored = state.get("config")
    if not isinstance(stored, dict):
        raise ConfigError("the checkpoint holds no config (a 'config' mapping); it was not written by pointdet")
    try:
        return config_from_dict(ExperimentConfig, upgrade_config(stored, state.get("config_version", 1)))
    except ConfigError as error:
        raise ConfigError(f"the config stored in the checkpoint is not valid: {error}") from None
