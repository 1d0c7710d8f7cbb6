"""Loss functions (functional, testable on hand-made tensors)."""

from pointdet.losses.chamfer import chamfer_distance
from pointdet.losses.embedding import associative_embedding_loss
from pointdet.losses.focal import normalized_focal_loss, penalty_reduced_focal_loss
from pointdet.losses.regression import masked_l1, masked_smooth_l1

__all__ = [
    "associative_embedding_loss",
    "chamfer_distance",
    "masked_l1",
    "masked_smooth_l1",
    "normalized_focal_loss",
    "penalty_reduced_focal_loss",
]
