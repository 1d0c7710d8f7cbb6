"""CenterNet decoding (METHODS.md §2a(d)): heatmap peaks -> boxes from size and offset, batched on device."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pointdet.ops.gather import gather_at
from pointdet.ops.peaks import Peaks, peak_topk
from pointdet.structures import Detections


def centre_boxes(heatmap: Tensor, size: Tensor, offset: Tensor, k: int = 100) -> tuple[Peaks, Tensor]:
    """Top-K centre peaks and their boxes in output pixels.

    Args:
        heatmap: (B, C, H, W) probabilities.
        size: (B, 2, H, W) ``(w, h)`` in output pixels.
        offset: (B, 2, H, W) sub-pixel centre offsets.
        k: peaks per image.

    Returns:
        The ``Peaks`` ((B, K) fields) and (B, K, 4) xyxy boxes in output pixels.
    """
    peaks = peak_topk(heatmap, k)
    wh = gather_at(size, peaks.flat_index)  # (B, K, 2)
    delta = gather_at(offset, peaks.flat_index)  # (B, K, 2)
    cx = peaks.xs.to(wh.dtype) + delta[..., 0]
    cy = peaks.ys.to(wh.dtype) + delta[..., 1]
    boxes = torch.stack([cx - wh[..., 0] / 2, cy - wh[..., 1] / 2, cx + wh[..., 0] / 2, cy + wh[..., 1] / 2], dim=-1)
    return peaks, boxes.float()


def per_image(batched: Detections) -> list[Detections]:
    """Split a batched ``Detections`` (every field with a leading batch dimension B) into B per-image ones."""
    return batched.unbind()


def decode_centernet(heatmap: Tensor, size: Tensor, offset: Tensor, stride: int, k: int = 100) -> Detections:
    """Top-K centre peaks turned into boxes in input-image pixels.

    Args:
        heatmap: (B, C, H, W) probabilities (after sigmoid, possibly flip-averaged).
        size: (B, 2, H, W) ``(w, h)`` in output pixels.
        offset: (B, 2, H, W) sub-pixel centre offsets.
        stride: output stride R.
        k: detections per image.

    Returns:
        Batched ``Detections``: (B, K, 4) boxes and (B, K) scores and labels, sorted by score (``per_image``
        splits it). Everything stays a tensor op, so the decoder also exports to ONNX.
    """
    peaks, boxes = centre_boxes(heatmap, size, offset, k)
    return Detections(boxes * stride, peaks.scores.float(), peaks.labels)


class CenterNetPostprocess:
    """Raw CenterNet maps -> detections in input pixels, with the reference flip test (METHODS.md §2a(d)):
    heatmaps and sizes of the plain and mirrored passes averaged, sub-pixel offsets from the plain pass.

    The pose and 3D post-processors extend ``maps`` (what the decoder reads) and ``decode_maps``.

    Args:
        stride: output stride R.
    """

    def __init__(self, stride: int) -> None:
        self.stride = stride

    def maps(self, outputs: NamedTuple, flipped: NamedTuple | None) -> dict[str, Tensor]:
        """Decoder inputs: sigmoid heatmaps, flip-averaged with ``flipped`` (outputs of the mirrored batch)."""
        maps = {"heatmap": outputs.heatmap.sigmoid(), "size": outputs.size, "offset": outputs.offset}
        if flipped is not None:
            maps["heatmap"] = (maps["heatmap"] + flipped.heatmap.sigmoid().flip(-1)) / 2
            maps["size"] = (maps["size"] + flipped.size.flip(-1)) / 2
        return maps

    def decode_maps(self, maps: dict[str, Tensor], k: int) -> Detections:
        return decode_centernet(maps["heatmap"], maps["size"], maps["offset"], self.stride, k)

    def batched(self, outputs: NamedTuple, flipped: NamedTuple | None = None, k: int = 100) -> Detections:
        """The top ``k`` of every image as one batched ``Detections`` (fields (B, K, ...)); tensor ops only, so it
        exports to ONNX."""
        return self.decode_maps(self.maps(outputs, flipped), k)

    def __call__(self, outputs: NamedTuple, flipped: NamedTuple | None = None, k: int = 100) -> list[Detections]:
        """Per-image detections in input pixels (optionally flip-merged with ``flipped``)."""
        return per_image(self.batched(outputs, flipped, k))
