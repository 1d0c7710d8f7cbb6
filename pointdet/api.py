"""The Python API: ``pointdet.load(path).predict(images)`` and ``pointdet.build(preset, num_classes)``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pointdet.configs import config_from_checkpoint, get_preset
from pointdet.data.dataset import collate
from pointdet.data.images import pil_to_tensor_rgb, read_image
from pointdet.data.transforms import Letterbox, Sample, Transform
from pointdet.distributed import device_for_process
from pointdet.engine.checkpoint import load_checkpoint, load_model_weights, model_state
from pointdet.engine.compiled import CompiledPredict, compiled_by_default, compiles
from pointdet.engine.data import select_eval_transforms
from pointdet.engine.inference import check_box_ranges, predict_images, to_original_pixels
from pointdet.models.build import build_model
from pointdet.models.detector import Detector
from pointdet.structures import Detections, Instances

ImageInput = str | Path | Image.Image | np.ndarray | Tensor
logger = logging.getLogger(__name__)


def as_image_tensor(image: ImageInput) -> Tensor:
    """A file path, PIL image, HxWx3 uint8 array or (3, H, W) uint8 tensor -> (3, H, W) uint8 RGB."""
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_tensor_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"numpy images must be HxWx3 (or HxW) uint8 RGB, got shape {image.shape} dtype {image.dtype}"
            )
        if not image.flags.writeable:  # e.g. np.asarray(PIL image): torch shares writable memory only, so copy
            image = np.array(image)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(
                f"tensor images must be (3, H, W) uint8, got shape {tuple(image.shape)} dtype {image.dtype}"
            )
        return image
    raise TypeError(f"unsupported image type {type(image).__name__}")


class Predictor:
    """A trained detector with its class names and input size, ready for batched inference.

    Attributes:
        model: the ``Detector`` (eval mode).
        class_names: C names; ``Detections.labels`` index into it.
        category_ids: C original dataset category ids.
        input_size: long side images are resized to.
        keypoint_names: J joint names of a pose model (empty otherwise).
        skeleton: joint index pairs drawn as limbs.
        input_height: input height of non-square models (None = square).
        calibration: the (3, 4) training camera of a monocular 3D model (None otherwise); its ``mono3d``
            outputs are lifted to 3D with ``ops.camera.lift_to_camera`` and the image's own camera.
        transform: the test geometry (``data.test_resize`` of the run); None = letterbox to
            ``input_height x input_size``.
        compile: ``torch.compile`` the network + decode of single-scale predictions (``engine.compiled``:
            CUDA graphs on CUDA): None = on CUDA for the CenterNet family, True = also on the CPU and for the
            RepPoints family (RepPoints v1 / v2, Dense RepPoints v2, LSNet), False = never; others run eagerly.
    """

    def __init__(
        self,
        model: Detector,
        class_names: Sequence[str],
        category_ids: Sequence[int],
        input_size: int,
        keypoint_names: Sequence[str] = (),
        skeleton: Sequence[tuple[int, int]] = (),
        input_height: int | None = None,
        calibration: Sequence[Sequence[float]] | None = None,
        transform: Transform | None = None,
        compile: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.class_names, self.category_ids, self.input_size = list(class_names), list(category_ids), input_size
        self.keypoint_names, self.skeleton = list(keypoint_names), list(skeleton)
        self.input_height, self.calibration = input_height, calibration
        self.transform = transform or Letterbox(input_size, input_height)
        self.compile = compile
        self._compiled: CompiledPredict | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Predictor:
        self.model.to(device)
        return self

    def compiled_predict(self) -> CompiledPredict | None:
        """The compiled network + decode when ``compile`` asks for it on this device and the model qualifies."""
        on_cuda = self.device.type == "cuda"
        if not (self.compile if self.compile is not None else on_cuda and compiled_by_default(self.model)):
            return None
        if not compiles(self.model):
            if self.compile:
                logger.warning(
                    "%s models run eagerly: compile applies to the CenterNet and RepPoints families", type(self.model)
                )
            return None
        mode = "reduce-overhead" if on_cuda else None
        if self._compiled is None or self._compiled.mode != mode:
            self._compiled = CompiledPredict(self.model, mode)
        return self._compiled

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
        score_threshold: float = 0.0,
        batch_size: int = 16,
        k: int = 100,
        box_ranges: Sequence[tuple[float, float]] = (),
    ) -> list[Detections]:
        """Detect objects in one image or a list; returns one ``Detections`` per image in its original pixels (an
        empty list for an empty list).

        ``box_ranges``: empty, or one valid box-size range ``(low, high)`` of ``sqrt(area)`` per scale, in the
        pixels the network sees at that scale (the ATSS / LSNet multi-scale test, ``predict_images``).

        Raises:
            ValueError: ``batch_size`` or ``k`` below 1, ``scales`` empty or not positive, ``box_ranges`` not one
                ``0 <= low < high`` pair per scale, an empty (0-pixel) image.
        """
        if batch_size < 1 or k < 1:
            raise ValueError(f"batch_size and k must be >= 1, got batch_size={batch_size}, k={k}")
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be one or more positive factors, got {list(scales)}")
        check_box_ranges(box_ranges, len(scales))
        if isinstance(images, str | Path | Image.Image | np.ndarray | Tensor):
            images = [images]
        results: list[Detections] = []
        for start in range(0, len(images), batch_size):
            samples = []
            for index, image in enumerate(images[start : start + batch_size], start):
                tensor = as_image_tensor(image)
                if 0 in tensor.shape[-2:]:
                    height, width = tensor.shape[-2:]
                    raise ValueError(f"image {index} is empty ({height}x{width} pixels)")
                sample = Sample(tensor, Instances.empty(), orig_size=tuple(tensor.shape[-2:]))
                samples.append(self.transform(sample))
            batch = collate(samples)
            compiled = self.compiled_predict() if tuple(scales) == (1.0,) and not box_ranges else None
            if compiled is not None:
                detections = compiled(batch.images, flip=flip, k=k)
            else:
                detections = predict_images(
                    self.model, batch.images, flip=flip, scales=scales, k=k, box_ranges=box_ranges
                )
            factors = batch.scales.to(self.device)
            for dets in to_original_pixels(detections, factors, batch.orig_sizes):
                results.append(dets[dets.scores >= score_threshold].to("cpu"))
        return results


def load(path: str | Path, device: str | torch.device | None = None, compile: bool | None = None) -> Predictor:
    """Load a trained model from a checkpoint (``best.pt``/``last.pt``) or a run folder, which means its ``last.pt``
    (the latest weights; logged at INFO level, since ``best.pt`` holds the best evaluated ones).

    ``compile``: ``torch.compile`` the network + decode of ``predict`` (``Predictor``): None = on CUDA only
    (``mode="reduce-overhead"``, CUDA graphs), False = off, True = also on the CPU.

    Raises:
        CheckpointError: the file is not a pointdet checkpoint or its weights do not fit the recorded model.
    """
    state = load_checkpoint(path)
    config = config_from_checkpoint(state)
    # The checkpoint holds the trained weights; the ImageNet file the run started from is not needed.
    keypoint_names = state.get("keypoint_names", [])
    flip_pairs = [tuple(pair) for pair in state.get("flip_pairs", [])]
    model = build_model(
        config.model, len(state["class_names"]), len(keypoint_names), flip_pairs, with_backbone_weights=False
    )
    load_model_weights(model, model_state(state), path)
    if "pixel_mean" in state:  # a converted model whose data set was normalised otherwise (pointdet convert)
        model.set_normalisation(state["pixel_mean"], state["pixel_std"])
    predictor = Predictor(
        model,
        state["class_names"],
        state["category_ids"],
        config.data.input_size,
        keypoint_names=keypoint_names,
        skeleton=[tuple(pair) for pair in state.get("skeleton", [])],
        input_height=config.data.input_height,
        calibration=state.get("calibration"),
        transform=select_eval_transforms(config.data),
        compile=compile,
    )
    return predictor.to(device if device is not None else device_for_process())


def build(preset: str, num_classes: int) -> Detector:
    """An untrained detector of a preset (``pointdet presets`` lists them)."""
    return build_model(get_preset(preset).model, num_classes)
