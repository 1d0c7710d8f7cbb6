"""Starting a model from another run's weights (``model.init_from``): fine-tuning on a data set with other
classes, a pose model from the detection model (CenterNet §6.3), LSNet pose from its detector.

Tensors are matched by name and shape; the others keep the fresh initialisation of the model just built (a
head for another class count, branches the other run did not have). The report says which were which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pointdet.models.backbones.weights import WeightsError, read_state_dict

logger = logging.getLogger(__name__)

LISTED = 4  # names shown per category in the report before the rest are counted


@dataclass(frozen=True)
class InitReport:
    """What ``initialise_from`` did, by parameter or buffer name.

    Attributes:
        source: the file read.
        loaded: tensors copied from it.
        reshaped: tensors of the model whose counterpart has another shape, as ``name (file shape -> model shape)``;
            they keep their fresh initialisation.
        missing: tensors of the model the file does not have (freshly initialised).
        unused: tensors of the file the model does not have.
    """

    source: Path
    loaded: list[str]
    reshaped: list[str]
    missing: list[str]
    unused: list[str]

    def summary(self) -> str:
        total = len(self.loaded) + len(self.reshaped) + len(self.missing)
        lines = [f"model.init_from: {self.source}: loaded {len(self.loaded)} of the model's {total} tensors"]
        for what, names in (
            ("re-initialised, another shape there", self.reshaped),
            ("re-initialised, not in the file", self.missing),
            ("in the file, not in this model (ignored)", self.unused),
        ):
            if names:
                more = f", ... ({len(names) - LISTED} more)" if len(names) > LISTED else ""
                lines.append(f"  {len(names)} {what}: {', '.join(names[:LISTED])}{more}")
        return "\n".join(lines)


def initialise_from(model: nn.Module, source: str | Path) -> InitReport:
    """Copy into ``model`` every tensor of ``source`` whose name and shape match, and log what was done.

    Args:
        model: a freshly built model.
        source: a run folder (its ``last.pt``), a pointdet checkpoint or a state-dict file (``.pt``/``.safetensors``).

    Raises:
        WeightsError: the file is missing or unreadable, or not one of its tensors fits the model.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "last.pt"
    try:
        state = read_state_dict(path)
    except WeightsError as error:
        raise WeightsError(f"model.init_from: {error}") from error
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    own = model.state_dict()
    loaded = [name for name, tensor in own.items() if name in state and state[name].shape == tensor.shape]
    reshaped = [
        f"{name} {tuple(state[name].shape)} -> {tuple(tensor.shape)}"
        for name, tensor in own.items()
        if name in state and state[name].shape != tensor.shape
    ]
    report = InitReport(
        source=path,
        loaded=loaded,
        reshaped=reshaped,
        missing=[name for name in own if name not in state],
        unused=[name for name in state if name not in own],
    )
    if not loaded:
        raise WeightsError(
            f"model.init_from: {path}: not one tensor fits this model (no name with the same shape): the weights of "
            f"another architecture? e.g. the file has {list(state)[:2]}, the model {list(own)[:2]}"
        )
    model.load_state_dict({name: state[name] for name in loaded}, strict=False)
    logger.info("%s", report.summary())
    return report
