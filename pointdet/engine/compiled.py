"""The network and the batched decode of a detector under ``torch.compile``: ``Predictor.predict``'s fast path.

On CUDA the mode is ``reduce-overhead`` (CUDA graphs): one graph replay takes the uint8 batch to the batched
detections, with no host sync inside; elsewhere the default mode. Only the CenterNet family qualifies (its decode
is max-pool peaks + top-K + gathers: static shapes, no ``.item()``), without an RoI stage; other models run
eagerly. Shapes are static (``dynamic=False``): each new batch shape compiles (and records) once.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import Tensor

from pointdet.decoders.centernet import CenterNetPostprocess, per_image
from pointdet.models.detector import Detector
from pointdet.structures import Detections


def compiles(model: Detector) -> bool:
    """Whether ``model``'s predict path compiles into one graph (see the module docstring)."""
    return isinstance(model.postprocess, CenterNetPostprocess) and model.roi_heads is None


def _cloned(detections: Detections) -> Detections:
    """A copy that outlives the next CUDA-graph replay (which overwrites the graph's output memory)."""
    tensors = {f.name: getattr(detections, f.name) for f in fields(detections)}
    return replace(detections, **{n: t.clone() for n, t in tensors.items() if isinstance(t, Tensor)})


class CompiledPredict:
    """``model.predict(images, flip, k)`` with the network and the batched decode compiled.

    Args:
        model: a ``Detector`` for which ``compiles(model)`` holds, in eval mode.
        mode: ``torch.compile`` mode (``reduce-overhead`` on CUDA; None = default).
    """

    def __init__(self, model: Detector, mode: str | None = None) -> None:
        if not compiles(model):
            raise ValueError(f"{type(model.postprocess).__name__} models do not compile (CenterNet family only)")
        self.model, self.mode = model, mode
        self.network_and_decode = torch.compile(self._network_and_decode, mode=mode, dynamic=False)

    def _network_and_decode(self, images: Tensor, flip: bool, k: int) -> Detections:
        outputs, flipped, _ = self.model.head_outputs(images, flip)
        return self.model.postprocess.batched(outputs, flipped, k)

    @torch.no_grad()
    def __call__(self, images: Tensor, flip: bool = False, k: int = 100) -> list[Detections]:
        """Detections in the pixels of ``images`` ((B, 3, H, W) uint8), one per image, as ``Detector.predict``."""
        images = images.to(self.model.pixel_mean.device)
        if images.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        return per_image(_cloned(self.network_and_decode(images, flip, k)))
