"""Corner pooling (CornerNet; METHODS.md §1.8) as directional cumulative maxima with ``torch.cummax``.

``torch.cummax`` has autograd (the gradient goes to the arg-max element), so no compiled extension is needed.
The four directions, for a map ``x`` (B, C, H, W) and output ``out[i, j]``:

- ``top``:    ``max_{k >= i} x[k, j]`` (looks down the column from i)
- ``bottom``: ``max_{k <= i} x[k, j]``
- ``left``:   ``max_{k >= j} x[i, k]`` (looks right along the row from j)
- ``right``:  ``max_{k <= j} x[i, k]``

Top-left corners use top + left, bottom-right corners bottom + right.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Direction = Literal["top", "bottom", "left", "right"]
_DIMS: dict[str, tuple[int, bool]] = {"top": (2, True), "bottom": (2, False), "left": (3, True), "right": (3, False)}


def corner_pool(x: Tensor, direction: Direction) -> Tensor:
    """Directional cumulative max of ``x`` (B, C, H, W) -> (B, C, H, W)."""
    if direction not in _DIMS:
        raise ValueError(f"corner pool direction must be one of {sorted(_DIMS)}, got {direction!r}")
    dim, reverse = _DIMS[direction]
    if reverse:
        return x.flip(dim).cummax(dim).values.flip(dim)
    return x.cummax(dim).values
