"""``LossWindow``: the trainer reads the losses of several steps at once and still names the first bad step."""

import math

import pytest
import torch

from pointdet.engine.loss_window import LossWindow


def test_read_gives_the_last_steps_terms_and_empties_the_window():
    window = LossWindow()
    window.add(0, {"cls": torch.tensor(2.0), "box": torch.tensor(1.0, requires_grad=True)})
    window.add(1, {"cls": torch.tensor(1.5), "box": torch.tensor(0.5)})
    assert len(window) == 2
    assert window.read() == {"cls": 1.5, "box": 0.5}
    assert len(window) == 0


def test_a_non_finite_loss_is_reported_at_its_step_with_its_terms():
    window = LossWindow()
    window.add(7, {"cls": torch.tensor(1.0), "box": torch.tensor(1.0)})
    window.add(8, {"cls": torch.tensor(math.nan), "box": torch.tensor(1.0)})
    window.add(9, {"cls": torch.tensor(math.inf), "box": torch.tensor(1.0)})
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 8: \{'cls': nan, 'box': 1.0\}"):
        window.read()
