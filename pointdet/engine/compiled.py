"""The network and the batched decode of a detector under ``torch.compile``: ``Predictor.predict``'s fast path.

On CUDA the mode is ``reduce-overhead`` (CUDA graphs): one graph replay takes the uint8 batch to fixed-size
detections, with no host sync inside; elsewhere the default mode. Two decoders qualify, without an RoI stage:
the CenterNet family's (max-pool peaks + top-K + gathers) and the RepPoints family's ``top_detections`` (RepPoints
v1 / v2, Dense RepPoints v2, LSNet: every level and image at once, fixed-size NMS), whose per-image split after
the graph is the one host sync (and where an image's fixed-size result is not certified exact, its eager decode).
The CenterNet family compiles by default on CUDA; the others when asked (``compile=True``). Shapes are static
(``dynamic=False``): each new batch shape compiles (and records) once.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import Tensor

from pointdet.decoders.centernet import CenterNetPostprocess, per_image
from pointdet.decoders.reppoints import RepPointsPostprocess, TopDetections, image_frames
from pointdet.models.detector import Detector
from pointdet.structures import Detections


def compiles(model: Detector) -> bool:
    """Whether ``model``'s predict path compiles into one graph (see the module docstring)."""
    return isinstance(model.postprocess, (CenterNetPostprocess, RepPointsPostprocess)) and model.roi_heads is None


def compiled_by_default(model: Detector) -> bool:
    """Whether ``Predictor`` compiles ``model`` on CUDA unasked: the CenterNet family."""
    return isinstance(model.postprocess, CenterNetPostprocess) and model.roi_heads is None


def _cloned(detections: Detections) -> Detections:
    """A copy that outlives the next CUDA-graph replay (which overwrites the graph's output memory)."""
    tensors = {f.name: getattr(detections, f.name) for f in fields(detections)}
    return replace(detections, **{n: t.clone() for n, t in tensors.items() if isinstance(t, Tensor)})


def network_and_decode(model: Detector, images: Tensor, flip: bool, k: int) -> Detections | TopDetections:
    """(B, 3, H, W) uint8 images -> the fixed-size decode of ``model`` (the part ``CompiledPredict`` compiles):
    a batched ``Detections`` (CenterNet family) or ``TopDetections`` (RepPoints family)."""
    outputs, flipped, _ = model.head_outputs(images, flip)
    if isinstance(model.postprocess, RepPointsPostprocess):
        return model.postprocess.top_detections(outputs, flipped, k)
    return model.postprocess.batched(outputs, flipped, k)


class CompiledPredict:
    """``model.predict(images, flip, k)`` with the network and the fixed-size decode compiled.

    Args:
        model: a ``Detector`` for which ``compiles(model)`` holds, in eval mode.
        mode: ``torch.compile`` mode (``reduce-overhead`` on CUDA; None = default).
    """

    def __init__(self, model: Detector, mode: str | None = None) -> None:
        if not compiles(model):
            raise ValueError(
                f"{type(model.postprocess).__name__} models do not compile (CenterNet and RepPoints families only)"
            )
        self.model, self.mode = model, mode
        self.network_and_decode = torch.compile(network_and_decode, mode=mode, dynamic=False)

    @torch.no_grad()
    def __call__(self, images: Tensor, flip: bool = False, k: int = 100) -> list[Detections]:
        """Detections in the pixels of ``images`` ((B, 3, H, W) uint8), one per image, as ``Detector.predict``."""
        images = images.to(self.model.pixel_mean.device)
        if images.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        result = self.network_and_decode(self.model, images, flip, k)
        if isinstance(result, Detections):
            return per_image(_cloned(result))
        top = TopDetections(*(t.clone() for t in result))
        return self.model.postprocess.per_image(top, lambda: self._eager_candidates(images, flip), k)

    def _eager_candidates(self, images: Tensor, flip: bool) -> tuple[Tensor, Tensor]:
        """The candidates of ``images`` decoded eagerly, for the images whose fixed-size result is not exact."""
        outputs, flipped, _ = self.model.head_outputs(images, flip)
        frame = image_frames(outputs.priors, outputs.strides)
        return self.model.postprocess.merged_candidates(outputs, flipped, frame)
