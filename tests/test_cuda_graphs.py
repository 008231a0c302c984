"""GraphedForward (cgha/utils/cuda_graphs.py): argument checks everywhere, graph replays against eager on CUDA."""
from __future__ import annotations

import threading

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


def test_captures_run_in_thread_local_error_mode(monkeypatch):
    """The capture error mode that make_graphed_callables' graphs get (the real capture needs CUDA: below), and
    torch.cuda.graph is itself again afterwards."""
    original = torch.cuda.graph
    seen = {}

    def fake_make_graphed_callables(callable_, sample_args, **options):
        # As torch does inside: construct torch.cuda.graph contexts (a stand-in stream: no CUDA here).
        mode = {k: v for k, v in options.items() if k == "capture_error_mode"}  # torch versions that take it
        graph = torch.cuda.graph(object(), stream=object(), **mode)
        seen["mode"] = graph.capture_error_mode
        return callable_

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake_make_graphed_callables)
    module = Scaled()
    graphed = GraphedForward(module, ["linear.weight", "linear.bias"])
    graphed._capture((torch.zeros(3, 8), {"gain": torch.ones(3, 1)}), tuple(module.parameters()))
    assert seen["mode"] == "thread_local" and torch.cuda.graph is original


def pin_and_query_until(stop: threading.Event, errors: list) -> None:
    """What a DataLoader's pin-memory thread does while it stages batches: allocate pinned host memory
    (cudaHostAlloc) and query CUDA events, over and over."""
    event = torch.cuda.Event()
    event.record(torch.cuda.Stream())
    pinned = []
    try:
        while not stop.is_set():
            pinned.append(torch.empty(1 << 16, dtype=torch.uint8).pin_memory())
            event.query()
            if len(pinned) >= 4096:
                pinned.clear()
    except Exception as error:  # noqa: BLE001 - the test reports it
        errors.append(error)


@pytest.mark.cuda
def test_capture_survives_another_thread_pinning_memory():
    """Another thread's CUDA calls during a capture (the pin-memory thread's) invalidate it in CUDA's default
    "global" error mode; GraphedForward captures in "thread_local" mode, so training's captures survive them."""
    module = Scaled().cuda()
    stop, errors = threading.Event(), []
    thread = threading.Thread(target=pin_and_query_until, args=(stop, errors), daemon=True)
    thread.start()
    try:
        for batch in (16, 17, 18):  # three captures while the thread runs
            graphed = GraphedForward(module, ["linear.weight", "linear.bias"])
            out = graphed(torch.randn(batch, 8, device="cuda"), {"gain": torch.ones(batch, 1, device="cuda")})
            out["y"].sum().backward()
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join()
    assert not errors


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
