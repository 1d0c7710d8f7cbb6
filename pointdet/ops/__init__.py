"""Pure tensor functions: Gaussian targets, peak extraction, soft-NMS, deformable convolution."""

from pointdet.ops.dcn import ModulatedDeformConv2d
from pointdet.ops.gaussian import draw_gaussian, gaussian_radius
from pointdet.ops.nms import soft_nms
from pointdet.ops.peaks import peak_topk

__all__ = ["ModulatedDeformConv2d", "draw_gaussian", "gaussian_radius", "peak_topk", "soft_nms"]
