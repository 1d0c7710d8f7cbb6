"""``pointdet.launches``: the operator count of a call is the number of aten operators it dispatches."""

import torch
from torch import nn

from pointdet.launches import count_ops, host_cost


def test_count_ops_counts_each_dispatched_operator_and_the_views_apart():
    x = torch.randn(4, 3)
    counted = count_ops(lambda: (x + 1).view(12).relu())
    assert counted.operators == 3 and counted.views == 1
    assert counted.by_name == {"aten.add": 1, "aten.view": 1, "aten.relu": 1}


def test_count_ops_includes_the_backward_pass():
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    forward = count_ops(lambda: layer(x).sum())
    both = count_ops(lambda: layer(x).sum().backward())
    assert forward.by_name == {"aten.t": 1, "aten.addmm": 1, "aten.sum": 1}
    # Backward adds the weight gradient's mm and the bias gradient's sum (x needs no gradient).
    assert both.by_name["aten.mm"] == 1 and both.by_name["aten.sum"] == 2 and both.operators > forward.operators


def test_host_cost_times_the_call_it_counts():
    x = torch.randn(8, 8)
    cost = host_cost(lambda: x @ x, warmup=0, iters=2)
    assert cost.ops.by_name == {"aten.mm": 1} and cost.host_ms >= 0
