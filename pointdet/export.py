"""``pointdet export``: a trained model with its decoder as one ONNX graph.

The graph takes ``images`` (B, 3, H, W) uint8 RGB — batch, height and width are dynamic (H and W multiples of 32)
— and returns the top ``k`` detections per image in the pixels of that input: ``boxes`` (B, K, 4) xyxy, ``scores``
(B, K) and ``labels`` (B, K), plus ``keypoints`` (B, K, J, 3) for pose models and ``mono3d`` (B, K, 7) for
monocular 3D models. Normalisation, the network, peak extraction and decoding are all inside the graph; the
deformable convolutions export through their ``grid_sample`` formulation (``ops.dcn``). The caller letterboxes
and maps boxes back to the original image, as ``pointdet.load(...).predict`` does.

RepPoints v1 and LSNet models are the exception to "detections": their graph returns the top ``k`` **pre-NMS
candidates** per image (``k`` = 1000 by default), by score, in the same three outputs; rows past an image's
candidates are zero-score fillers. The caller applies the score threshold (0.05) and class-wise NMS at IoU 0.5
(the config's ``nms_iou``), then keeps the top 100::

    for b in range(len(boxes)):  # the graph's outputs, numpy
        keep = scores[b] > 0.05
        box, score, label = (torch.from_numpy(a[b][keep]) for a in (boxes, scores, labels))
        top = torchvision.ops.batched_nms(box, score, label, 0.5)[:100]  # box[top], score[top], label[top]

NMS is left out of the graph because per-image NMS over a dynamic batch has no plain traced form: torchvision's
``nms`` traces to one ``NonMaxSuppression`` over a single box set (a per-image loop would be unrolled to the
traced batch), and ONNX's batched ``NonMaxSuppression`` has no PyTorch op to trace from and returns a
data-dependent list; ``decoders.reppoints`` gives the details.

A model exports when its post-processor has a tensor-only ``batched(outputs, k=...)`` path and it has no RoI
stage: CenterNet (boxes, keypoints, 3D boxes), RepPoints v1 and LSNet (boxes only: its extreme points, contours and
keypoints stay out of the graph). Corner detectors are refused: their Gaussian soft-NMS keeps a data-dependent
number of boxes one at a time, which has no ONNX operator. RepPoints v2 and LSNet-CPV are refused too: their corner
pooling is ``torch.cummax``, which has no ONNX operator (the decoder, joint inference included, is tensor-only).
Dense RepPoints v2 (masks from scipy) and CPM R-CNN (an RoI stage) are refused as well.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from pointdet.models.detector import Detector
from pointdet.models.heads.corner import CornerPoolModule

OPSET = 17
DEFAULT_K = 100
# What exports (tests/test_export.py, tests/test_lsnet_training.py): CenterNet's boxes with their keypoints (pose)
# or 3D boxes (mono3d), RepPoints v1's and LSNet's boxes (LSNet's extreme points, contours and keypoints stay out).
EXPORTABLE = "CenterNet (boxes, keypoints, 3D boxes), RepPoints v1 and LSNet (boxes)"


class ExportableDetector(nn.Module):
    """uint8 images -> normalised -> network -> batched decode; the ``forward`` that is exported.

    Args:
        model: a ``Detector`` whose post-processor has a ``batched`` path.
        k: detections (candidates, for RepPoints) per image; None: the post-processor's ``export_k`` if it has one
            (RepPoints: 1000), else 100.
    """

    def __init__(self, model: Detector, k: int | None = None) -> None:
        super().__init__()
        postprocess = type(model.postprocess).__name__
        if not hasattr(model.postprocess, "batched") or model.roi_heads is not None:
            reason = "has an RoI stage" if model.roi_heads is not None else f"decodes with {postprocess}"
            raise ValueError(
                f"this model cannot be exported to ONNX: it {reason}, whose data-dependent loop (soft-NMS, RoI "
                f"selection) has no ONNX form; export supports models with a tensor-only decoder: {EXPORTABLE}"
            )
        if any(isinstance(module, CornerPoolModule) for module in model.modules()):
            raise ValueError(
                "this model cannot be exported to ONNX: its corner pooling (RepPoints v2's corner verification) is "
                "torch.cummax, which has no ONNX operator (opset 17); export supports models with a tensor-only "
                f"network and decoder: {EXPORTABLE}"
            )
        self.model = model.eval()
        self.k = getattr(model.postprocess, "export_k", DEFAULT_K) if k is None else k
        self.output_names = ["boxes", "scores", "labels"]
        probe = self._decode(torch.zeros(1, 3, 64, 64, dtype=torch.uint8, device=model.pixel_mean.device))
        self.output_names += [name for name in ("keypoints", "mono3d") if getattr(probe, name) is not None]

    def _decode(self, images: Tensor):
        return self.model.postprocess.batched(self.model(self.model.preprocess(images)), k=self.k)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        detections = self._decode(images)
        return tuple(getattr(detections, name) for name in self.output_names)


def export_onnx(
    model: Detector, path: str | Path, height: int = 512, width: int = 512, k: int | None = None
) -> list[str]:
    """Write ``model`` with its decoder to ``path`` (ONNX opset 17); returns the output names.

    Args:
        model: a ``Detector`` of a family that exports (``EXPORTABLE``), on the CPU.
        path: the ``.onnx`` file.
        height, width: size of the example input that is traced (the exported graph accepts any size).
        k: detections per image (pre-NMS candidates for RepPoints and LSNet); None: 1000 for those, 100 otherwise.
    """
    # eval() on the wrapper itself: the exporter restores the wrapper's mode afterwards, and a wrapper left in
    # training mode would switch the model's BatchNorm back to batch statistics.
    wrapper = ExportableDetector(model, k).cpu().eval()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    example = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({name: {0: "batch"} for name in wrapper.output_names})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["images"],
            output_names=wrapper.output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    return wrapper.output_names
