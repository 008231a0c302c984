"""Replay a module's forward (or another method) and its backward from CUDA graphs, one capture per input
signature.

A training step of many small kernels (the Gaussian head's MLPs over ~100k points: a few hundred launches forward
and backward) is bound by the host's launch rate, not by the GPU. A CUDA graph launches all of them at once.
`torch.cuda.make_graphed_callables` captures a callable's forward and backward, but only for fixed input shapes,
dtypes and requires_grad flags; `GraphedForward` keeps a few such captures keyed by that signature.

What the graphed module's forward may do: read its arguments and its own parameters and buffers, with shapes
that follow from the argument shapes alone. No host synchronisation (`.item()`, `nonzero`, printing), no
randomness, no data-dependent shapes. Parameters are passed to the graph as inputs, so a parameter re-allocated
after capture (`.to()`, `load_state_dict` with assign) is copied into the captured storage rather than ignored;
buffers are read in place and must stay where they were.

Captures run in CUDA's "thread_local" error mode: in the default "global" mode a CUDA call from any other thread
invalidates the capture, and the DataLoader's pin-memory thread makes such calls (`cudaHostAlloc`, event queries)
while it stages the next batches. A capture failed so on an H100 (2026-12-08: `cudaErrorStreamCaptureInvalidated` at
the first Gaussian-head capture of `demo.py --video --device cuda`, as the loader's workers delivered their first
batches; the same run in a new process captured), the race that vLLM and others fixed the same way. The other
threads' calls touch only their own host buffers, so nothing of theirs belongs in the graph.

Gradients come back as views of the graph's static gradient buffers (that is how `make_graphed_callables`
returns them): zero gradients with `zero_grad(set_to_none=True)` (PyTorch's default) between steps, and do not
accumulate gradients over two backward passes of the same graph.
"""
from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, Tuple

import torch
from torch import nn
from torch.utils._pytree import arg_tree_leaves, tree_map

log = logging.getLogger(__name__)

__all__ = ["GraphedForward", "replays"]

Signature = Tuple[Tuple[Tuple[int, ...], torch.dtype, bool, torch.device], ...]


def tensor_signature(tensors: Sequence[torch.Tensor]) -> Signature:
    """What a captured graph is specific to: each tensor's shape, dtype, requires_grad and device."""
    return tuple((tuple(t.shape), t.dtype, t.requires_grad, t.device) for t in tensors)


def replays(graphed: "GraphedForward | None", example: torch.Tensor) -> bool:
    """Whether a call of `graphed`'s module should replay its graphs: they are enabled, the module is in training
    mode, autograd is recording and the inputs (`example`) are on CUDA. Evaluation and CPU calls run eagerly."""
    return graphed is not None and graphed.module.training and torch.is_grad_enabled() and example.is_cuda


class _ThreadLocalCapture(torch.cuda.graph):
    """`torch.cuda.graph` in the "thread_local" capture error mode (see the module docstring)."""

    def __init__(self, cuda_graph: Any, pool: Any = None, stream: Any = None, **options: Any) -> None:
        super().__init__(cuda_graph, pool=pool, stream=stream, **{**options, "capture_error_mode": "thread_local"})


# torch.cuda.make_graphed_callables takes the mode in versions that have the argument; before that it constructs
# `torch.cuda.graph` itself, which is then swapped for _ThreadLocalCapture while it runs.
_TAKES_ERROR_MODE = "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters


@contextmanager
def thread_local_capture() -> Iterator[dict]:
    """Context in which `torch.cuda.make_graphed_callables(..., **options)` captures in the "thread_local" error
    mode; yields the keyword options to pass it. Captures run on one thread at a time (a CUDA graph rule), so
    swapping the module attribute for the duration is safe."""
    if _TAKES_ERROR_MODE:
        yield {"capture_error_mode": "thread_local"}
        return
    original = torch.cuda.graph
    torch.cuda.graph = _ThreadLocalCapture
    try:
        yield {}
    finally:
        torch.cuda.graph = original


class _BoundMethod(nn.Module):
    """`module.<method>(*args)` as a forward, so that `functional_call` can swap the module's parameters."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.inner = module
        self.method = method

    def forward(self, *args: Any) -> Any:
        return getattr(self.inner, self.method)(*args)


class GraphedForward:
    """`module.<method>(*args)` (args: tensors, or tuples / dicts of tensors) replayed from CUDA graphs.

    Args:
        module: the module whose method is captured (see the module docstring for what it may do).
        parameter_names: the parameters the method reads, by `named_parameters()` name; they become graph inputs.
            Parameters that it receives as arguments instead must not be listed.
        method: the name of the captured method (`forward` by default).
        max_graphs: captures kept; the least recently used one is dropped (with its memory pool) beyond it.
        warmup_iters: eager forward+backward passes on a side stream before each capture (cuBLAS/cuDNN set-up).
    """

    def __init__(self, module: nn.Module, parameter_names: Sequence[str], method: str = "forward",
                 max_graphs: int = 2, warmup_iters: int = 3) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        named = dict(module.named_parameters())
        unknown = [name for name in parameter_names if name not in named]
        if unknown:
            raise ValueError(f"{type(module).__name__} has no parameters {unknown}")
        if not callable(getattr(module, method, None)):
            raise ValueError(f"{type(module).__name__} has no method {method!r}")
        self.module, self.method = module, method
        self.parameter_names = tuple(parameter_names)
        # (owning submodule, attribute) of each parameter: read on every call, cheaper than get_parameter's path walk.
        self._owners = [(module.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2])
                        for name in self.parameter_names]
        self.max_graphs = max_graphs
        self.warmup_iters = warmup_iters
        self._graphs: "OrderedDict[Signature, Callable[..., Any]]" = OrderedDict()
        self._parameter_identity: Tuple[Tuple[int, bool], ...] = ()
        self._parameter_signature: Signature = ()
        self.captures = 0

    def _parameters(self) -> Tuple[torch.Tensor, ...]:
        parameters = tuple(getattr(owner, attribute) for owner, attribute in self._owners)
        # The parameters' full signature is recomputed only when one of them moved or changed requires_grad.
        identity = tuple((parameter.data_ptr(), parameter.requires_grad) for parameter in parameters)
        if identity != self._parameter_identity:
            if not all(parameter.is_cuda for parameter in parameters):
                raise ValueError("GraphedForward needs every parameter to be a CUDA tensor")
            self._parameter_identity, self._parameter_signature = identity, tensor_signature(parameters)
        return parameters

    def __call__(self, *args: Any) -> Any:
        """Same result as `module.<method>(*args)`; the first call with a new signature captures (a few eager
        passes)."""
        leaves = arg_tree_leaves(*args)
        if not all(isinstance(leaf, torch.Tensor) and leaf.is_cuda for leaf in leaves):
            raise ValueError("GraphedForward needs every argument to be a CUDA tensor")
        parameters = self._parameters()
        key = tensor_signature(leaves) + self._parameter_signature
        graphed = self._graphs.get(key)
        if graphed is None:
            graphed = self._capture(args, parameters)
            self._graphs[key] = graphed
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return graphed(*args, parameters)

    def _capture(self, args: Tuple[Any, ...], parameters: Tuple[torch.Tensor, ...]) -> Callable[..., Any]:
        bound = _BoundMethod(self.module, self.method)
        names = tuple(f"inner.{name}" for name in self.parameter_names)

        def call_with(*inputs: Any) -> Any:
            return torch.func.functional_call(bound, dict(zip(names, inputs[-1])), inputs[:-1], strict=False)

        # The graph's static inputs are fresh leaf tensors: taking the arguments themselves would tie the captured
        # backward to the autograd nodes (and streams) of this one call when they are outputs of earlier eager work.
        # Each call copies its arguments into them. An argument's storage must not be shared: a later call passing
        # another tensor there (a quantised attribute instead of the parameter) would overwrite it. The parameters
        # are the exception: they are the same tensors on every call, so they are shared and never copied.
        sample_args = tree_map(lambda tensor: tensor.detach().clone().requires_grad_(tensor.requires_grad), args)
        sample_parameters = tuple(p.detach().requires_grad_(p.requires_grad) for p in parameters)
        with thread_local_capture() as options:
            graphed = torch.cuda.make_graphed_callables(call_with, (*sample_args, sample_parameters),
                                                        num_warmup_iters=self.warmup_iters, allow_unused_input=True,
                                                        **options)
        self.captures += 1
        shapes = ", ".join("x".join(map(str, leaf.shape)) for leaf in arg_tree_leaves(*args))
        log.info("captured CUDA graphs of %s.%s (capture %d) for inputs %s", type(self.module).__name__,
                 self.method, self.captures, shapes)
        return graphed
