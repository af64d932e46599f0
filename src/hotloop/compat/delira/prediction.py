"""``predict``: predictions, labels and metric means collected without a host sync until the end, as delira."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from hotloop.compat.delira.data import HAS_NUMPY, _label_keys, np
from hotloop.engine import Engine

__all__: list[str] = []


def _require_numpy() -> None:
    if not HAS_NUMPY:
        raise ModuleNotFoundError(
            "hotloop.compat.delira returns predictions as NumPy arrays, as delira does; install numpy "
            "(pip install numpy)"
        )


def _to_host_async(t: torch.Tensor) -> torch.Tensor:
    # Sync-free: a device tensor is copied into pinned host memory without waiting; predict synchronises once at
    # the end, before the arrays are read.
    t = t.detach()
    if t.device.type != "cuda":
        return t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return out.copy_(t, non_blocking=True)


def _host_outputs(preds: Any) -> Any:
    if isinstance(preds, torch.Tensor):
        return [_to_host_async(preds)]  # one output
    if isinstance(preds, Mapping):
        return {k: _to_host_async(v) for k, v in preds.items()}
    return [_to_host_async(p) for p in preds]


def _rows(chunks: list[torch.Tensor]) -> Any:
    # delira: np.vstack of the per-pass arrays, i.e. concatenated along dim 0 for outputs of 2 or more dims. A 1-d
    # output is concatenated too (one entry per sample), where vstack would stack the passes as rows.
    return np.concatenate([np.atleast_1d(c.numpy()) for c in chunks])


class _PredictionCollector:
    """Collects one ``predict`` run as delira's predict does, without host syncs until the end.

    Per forward pass: the predictions (one array per output), the labels (the prepared batch's entries whose key holds
    neither ``"data"`` nor ``"img"``, sorted by key) and the sums of the metric and loss values; the means are the
    sums divided by the number of forward passes, and stay tensors (delira's ``val.detach()`` sums).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.preds: list[Any] = []
        self.labels: list[list[torch.Tensor]] = []
        self.metric_sums: dict[str, Any] = {}
        self.loss_sums: dict[str, Any] = {}
        self.passes = 0

    def __call__(self, engine: Engine) -> None:
        state: Any = engine.state  # Ignite types output/batch narrowly
        metric_vals, loss_vals, preds = state.output
        batch = state.batch  # the prepared batch the step got (a closure may have popped "data" from it)
        self.preds.append(_host_outputs(preds))
        self.labels.append([_to_host_async(batch[k]) for k in _label_keys(batch)])
        _accumulate(self.metric_sums, metric_vals)
        _accumulate(self.loss_sums, loss_vals)
        self.passes += 1

    def result(self) -> tuple[Any, list[Any], dict[str, Any]]:
        _require_numpy()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the one sync of a predict run: the async host copies must have landed
        labels = [_rows(list(chunks)) for chunks in zip(*self.labels)]
        first = self.preds[0] if self.preds else []
        if isinstance(first, Mapping):
            preds: Any = {k: _rows([chunk[k] for chunk in self.preds]) for k in first}
        else:
            preds = [_rows(list(chunks)) for chunks in zip(*self.preds)]
        means = {k: v / self.passes for k, v in {**self.metric_sums, **self.loss_sums}.items()}
        return preds, labels, means


def _accumulate(sums: dict[str, Any], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            value = value.detach()
        sums[key] = sums[key] + value if key in sums else value
