"""GraphedForward (cgha/utils/cuda_graphs.py): argument checks everywhere, graph replays against eager on CUDA."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cgha.utils.cuda_graphs import GraphedForward


class Scaled(nn.Module):
    """A fixed-shape forward reading a parameter, a buffer and a dict argument."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.register_buffer("offset", torch.linspace(-1, 1, 4))

    def forward(self, x: torch.Tensor, extra: dict) -> dict:
        y = torch.tanh(self.linear(x)) + self.offset
        return {"y": y * extra["gain"], "sum": y.sum(0)}


def test_unknown_parameters_and_cpu_inputs_are_errors():
    module = Scaled()
    with pytest.raises(ValueError, match=r"has no parameters \['linear.wieght'\]"):
        GraphedForward(module, ["linear.wieght"])
    graphed = GraphedForward(module, ["linear.weight", "linear.bias"])
    with pytest.raises(ValueError, match="CUDA tensor"):
        graphed(torch.zeros(3, 8), {"gain": torch.ones(3, 1)})


@pytest.mark.cuda
def test_replays_match_eager_and_follow_reallocated_parameters():
    torch.manual_seed(0)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    module = Scaled().cuda()
    graphed = GraphedForward(module, ["linear.weight", "linear.bias"], max_graphs=1)

    def run(call, x, gain):
        module.zero_grad(set_to_none=True)
        gain = gain.clone().requires_grad_(True)
        out = call(x, {"gain": gain})
        (out["y"].square().sum() + out["sum"].sum()).backward()
        return out["y"].detach().clone(), module.linear.weight.grad.clone(), gain.grad.clone()

    for rows in (5, 5, 7, 5):  # a repeat, a new shape (a new capture), the first shape again (evicted: recaptured)
        x, gain = torch.randn(rows, 8, device="cuda"), torch.rand(rows, 1, device="cuda")
        for got, expected in zip(run(graphed, x, gain), run(module, x, gain)):
            torch.testing.assert_close(got, expected)
    assert graphed.captures == 3

    # Parameters replaced by new tensors (load_state_dict with assign) are read from their new storage.
    state = {name: value.detach() * 2 for name, value in module.named_parameters()}
    module.load_state_dict(state, strict=False, assign=True)
    assert module.linear.weight.requires_grad
    x, gain = torch.randn(5, 8, device="cuda"), torch.rand(5, 1, device="cuda")
    for got, expected in zip(run(graphed, x, gain), run(module, x, gain)):
        torch.testing.assert_close(got, expected)
    assert graphed.captures == 3
    torch.set_float32_matmul_precision(precision)
