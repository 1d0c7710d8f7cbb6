import math

import pytest
import torch

from pointdet.losses import masked_l1, penalty_reduced_focal_loss


def test_focal_loss_hand_computed():
    # One positive pixel with p=0.8, two negatives (Y=0.5, p=0.3) and (Y=0, p=0.1), N=1.
    probs = torch.tensor([0.8, 0.3, 0.1])
    target = torch.tensor([1.0, 0.5, 0.0])
    logits = torch.logit(probs).view(1, 1, 1, 3)
    expected = -(
        (1 - 0.8) ** 2 * math.log(0.8) + (1 - 0.5) ** 4 * 0.3**2 * math.log(0.7) + 1.0 * 0.1**2 * math.log(0.9)
    )
    got = penalty_reduced_focal_loss(logits, target.view(1, 1, 1, 3), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert penalty_reduced_focal_loss(logits, target.view(1, 1, 1, 3), 2.0).item() == pytest.approx(
        expected / 2, rel=1e-5
    )


def test_focal_loss_clamps_like_reference():
    # CenterNet clamps p to [1e-4, 1 - 1e-4]: a hopeless positive costs at most -log(1e-4).
    loss = penalty_reduced_focal_loss(torch.tensor([-50.0]).view(1, 1, 1, 1), torch.ones(1, 1, 1, 1), 1.0)
    assert loss.item() == pytest.approx(-((1 - 1e-4) ** 2) * math.log(1e-4), rel=1e-4)


def test_focal_loss_gradcheck():
    logits = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 2, 3, 4, dtype=torch.float64)
    target[0, 1, 1, 1] = 1.0
    assert torch.autograd.gradcheck(lambda x: penalty_reduced_focal_loss(x, target, 1.0), (logits,))


def test_masked_l1_normalises_per_element():
    pred = torch.tensor([[[1.0, 2.0], [5.0, 5.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 0.0]])  # the second slot is padding
    assert masked_l1(pred, target, mask).item() == pytest.approx(3.0 / 2, rel=1e-4)
