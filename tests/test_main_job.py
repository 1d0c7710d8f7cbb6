"""The main job's promise: the default preset reaches box AP >= 0.5 on shapes val within minutes on a CPU."""

from dataclasses import replace

import pytest

from pointdet.configs import DEFAULT_PRESET, get_preset
from pointdet.engine.trainer import Trainer


@pytest.mark.slow
def test_default_preset_reaches_half_ap(tmp_path):
    config = get_preset(DEFAULT_PRESET)
    config = replace(config, run_dir=str(tmp_path / "run"))
    metrics = Trainer(config).train()
    assert metrics["AP"] >= 0.5, metrics
