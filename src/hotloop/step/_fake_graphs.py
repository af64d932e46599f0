"""A CPU stand-in for CUDA graphs: the backend that :class:`hotloop.step.graphed.GraphedStep` calls, without a GPU.

Installed as ``hotloop.step.graphed._backend`` by the tests (``tests/step/test_graphed.py``) and by the GPU check's dry
run (``./dev gpu --dry-run``, :mod:`hotloop.bench.gpu`), so that the capture/replay logic runs on a CPU.

It behaves like CUDA graphs where it matters to the wrapper: a capture records the step function and runs none of its
work (the model and optimizer are rolled back, and gradients the capture allocated hold garbage, as graph memory does
before a replay); a replay re-runs the recorded function on the static buffers and writes its results into the
outputs returned at capture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hotloop.step.tree import tree_tensors

__all__ = ["FakeBackend"]


class _FakeStream:
    def __init__(self, name: str) -> None:
        self.name = name


class _FakeGraph:
    def __init__(self) -> None:
        self.fn: Callable[[], Any] | None = None
        self.outputs: Any = None
        self.grads: list[torch.Tensor | None] = []


class _Rollback:
    """What a capture must leave as it found it: parameters, buffers, gradients and optimizer state."""

    def __init__(self, model: nn.Module | None, optimizer: torch.optim.Optimizer | None) -> None:
        self.params = list(model.parameters()) if model is not None else []
        self.tensors: list[torch.Tensor] = [*self.params, *(model.buffers() if model is not None else [])]
        self.values = [t.detach().clone() for t in self.tensors]
        self.grads = [p.grad for p in self.params]
        self.optimizer = optimizer
        self.state = {} if optimizer is None else {p: dict(s) for p, s in optimizer.state.items()}
        self.state_values = {
            p: {k: v.detach().clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
            for p, s in self.state.items()
        }

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, value in zip(self.tensors, self.values):
            tensor.copy_(value)
        for param, before in zip(self.params, self.grads):
            if param.grad is not None and param.grad is not before:
                param.grad.fill_(float("nan"))  # allocated by the capture, never written: garbage
        if self.optimizer is not None:
            self.optimizer.state.clear()
            for key, state in self.state.items():
                self.optimizer.state[key] = state
                for name, value in self.state_values[key].items():
                    state[name].copy_(value)


class FakeBackend:
    """CPU stand-in for ``graphed._CudaBackend``; records every call in ``log``."""

    device_type = "cpu"

    def __init__(
        self,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        log: list[Any] | None = None,
        fail_capture: Exception | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.log: list[Any] = [] if log is None else log
        self.fail_capture = fail_capture
        self.current = _FakeStream("current")
        self.n_streams = 0
        self.n_captures = 0
        self.n_replays = 0

    def is_available(self) -> bool:
        return True

    def new_stream(self, device: torch.device) -> _FakeStream:
        self.n_streams += 1
        return _FakeStream("side")

    def current_stream(self, device: torch.device) -> _FakeStream:
        return self.current

    def wait_stream(self, waiter: _FakeStream, waited: _FakeStream) -> None:
        self.log.append(("wait", waiter.name, waited.name))

    @contextmanager
    def use_stream(self, stream: _FakeStream) -> Iterator[None]:
        self.log.append(("enter", stream.name))
        yield
        self.log.append(("exit", stream.name))

    def new_graph(self) -> _FakeGraph:
        return _FakeGraph()

    def capture(self, graph: _FakeGraph, fn: Callable[[], Any], stream: _FakeStream) -> Any:
        self.log.append(("capture", stream.name))
        self.n_captures += 1
        rollback = _Rollback(self.model, self.optimizer)
        try:
            outputs = fn()
            if self.fail_capture is not None:
                raise self.fail_capture
        finally:
            rollback.restore()  # a capture records work and runs none of it
        graph.fn, graph.outputs, graph.grads = fn, outputs, rollback.grads
        return outputs

    def replay(self, graph: _FakeGraph) -> None:
        self.log.append("replay")
        self.n_replays += 1
        assert graph.fn is not None
        for param, grad in zip(self.model.parameters() if self.model is not None else [], graph.grads):
            param.grad = grad  # the recorded backward starts from the gradients the capture saw
        new = graph.fn()
        with torch.no_grad():
            for static, value in zip(tree_tensors(graph.outputs), tree_tensors(new)):
                static.copy_(value)
