"""Planar polygon helpers (NumPy), shared by the data generators and the KITTI evaluation."""

from __future__ import annotations

import numpy as np


def signed_area(polygon: np.ndarray) -> float:
    """Shoelace formula for (P, 2) vertices: positive when they run counter-clockwise (x right, y up)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
