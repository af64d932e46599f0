"""Batches and data: delira's batch dicts, ``prepare_batch``, data managers, batch generators, stacked batches."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

try:
    import numpy as np

    HAS_NUMPY = True
except ImportError:  # pragma: no cover - numpy comes with every supported torch install we test
    HAS_NUMPY = False

__all__: list[str] = []


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if HAS_NUMPY and isinstance(value, np.ndarray):
        return torch.as_tensor(value)
    return None


def _label_keys(batch: Mapping[str, Any]) -> list[str]:
    # delira's predict: the prepared batch's entries whose key holds neither "data" nor "img", in sorted key order.
    return sorted(k for k, v in batch.items() if "data" not in k and "img" not in k and isinstance(v, torch.Tensor))


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"a batch should be a dict with a 'data' entry and label entries (delira's convention), "
            f"got {type(batch).__name__}; return dicts from your dataset, e.g. {{'data': x, 'label': y}}"
        )
    if "data" not in batch:
        raise KeyError(f"a batch should have a 'data' entry (delira's convention), got keys {list(batch)}")


class _Prepare:
    """A raw batch as the step gets it: ``network.prepare_batch(batch, input_device, output_device)`` as in delira.

    A network without delira's ``prepare_batch`` gets hotloop's: ``"data"`` to the input device, every other tensor
    or NumPy entry to the output device (dtypes kept), other entries (file names, meta data) left out. delira's
    ``prepare_batch`` may consume its argument (``batch.pop("data")``), so it gets a shallow copy: a re-iterable of
    stored batches is not emptied by the first epoch.
    """

    def __init__(self, network_prepare: Callable | None, input_device: Any, output_device: Any, non_blocking: bool):
        self.network_prepare = network_prepare
        self.input_device = input_device
        self.output_device = output_device
        self.non_blocking = non_blocking

    def __call__(self, batch: Any) -> Any:
        if self.network_prepare is not None:
            return self.network_prepare(
                dict(batch) if isinstance(batch, Mapping) else batch, self.input_device, self.output_device
            )
        _check_batch(batch)
        out: dict[str, Any] = {}
        for key, value in batch.items():
            tensor = _as_tensor(value)
            if tensor is None:
                continue
            device = self.input_device if key == "data" else self.output_device
            out[key] = tensor.to(device, non_blocking=self.non_blocking)
        if "data" not in out:
            raise TypeError(f"batch['data'] should be a tensor or a NumPy array, got {type(batch['data']).__name__}")
        return out


class _StepBatch:
    """``prepare_batch`` of hotloop's step: ``(batch["data"], labels)`` of a prepared batch (labels: the other
    tensors, in key order); with ``prepare``, the raw batch is prepared first."""

    def __init__(self, prepare: _Prepare | None) -> None:
        self.prepare = prepare

    def __call__(self, batch: Any, device: Any = None, non_blocking: bool = False) -> tuple[Any, tuple]:
        if self.prepare is not None:
            batch = self.prepare(batch)
        _check_batch(batch)
        labels = tuple(v for k, v in batch.items() if k != "data" and isinstance(v, torch.Tensor))
        return batch["data"], labels


def _cat_values(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([v.reshape(1) if v.dim() == 0 else v for v in values])
    if HAS_NUMPY and isinstance(first, np.ndarray):
        return np.concatenate([np.atleast_1d(v) for v in values])
    if isinstance(first, (list, tuple)):
        return [e for v in values for e in v]
    return values


def _stack(group: list[Any]) -> dict[str, Any]:
    # delira's predict: the prepared batches of a group concatenated key by key (torch.cat).
    merged: dict[str, list[Any]] = {}
    for batch in group:
        if not isinstance(batch, Mapping):
            raise TypeError(f"predict(batch_size=...) stacks dict batches, got {type(batch).__name__}")
        for key, value in batch.items():
            merged.setdefault(key, []).append(value)
    return {k: _cat_values(v) for k, v in merged.items()}


class _Prepared:
    """The batches of ``data``, each prepared (``_Prepare``) as it is read: what delira's predict forwards."""

    def __init__(self, data: Iterable, prepare: _Prepare) -> None:
        self.data = data
        self.prepare = prepare

    def __iter__(self) -> Iterator[Any]:
        prepare = self.prepare
        return (prepare(batch) for batch in self.data)


class _Stacked:
    """delira's artificial batch size: ``batch_size`` consecutive batches concatenated along dim 0 (the last group
    may be smaller, so no sample is dropped)."""

    def __init__(self, data: Iterable, batch_size: int) -> None:
        self.data = data
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        group: list[Any] = []
        for batch in self.data:
            group.append(batch)
            if len(group) == self.batch_size:
                yield _stack(group)
                group = []
        if group:
            yield _stack(group)


def _accepts_seed(get_batchgen: Callable) -> bool:
    try:
        params = inspect.signature(get_batchgen).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "seed" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _finish(batchgen: Any) -> None:
    finish = getattr(batchgen, "_finish", None)  # batchgenerators' MultiThreadedAugmenter stops its workers
    if callable(finish):
        finish()


def _finishing(batchgen: Any) -> Iterator[Any]:
    # delira's loops call batchgen._finish() after their last batch. The engine may stop reading at a known epoch
    # length instead of at the end of the generator, so the generator is finished when it is closed too.
    try:
        yield from batchgen
    finally:
        _finish(batchgen)


class _DataManagerBatches:
    """A delira data manager as a re-iterable: each ``iter()`` asks for a new batch generator, seeded with the epoch
    when ``seed_fn`` is given and ``get_batchgen`` takes a seed."""

    def __init__(self, datamgr: Any, seed_fn: Callable[[], int] | None) -> None:
        self.datamgr = datamgr
        self.seed_fn = seed_fn if _accepts_seed(datamgr.get_batchgen) else None

    def __iter__(self) -> Iterator[Any]:
        if self.seed_fn is None:
            return _finishing(self.datamgr.get_batchgen())
        return _finishing(self.datamgr.get_batchgen(seed=self.seed_fn()))


def _as_batches(data: Any, name: str, seed_fn: Callable[[], int] | None = None) -> Iterable:
    if callable(getattr(data, "get_batchgen", None)):
        return _DataManagerBatches(data, seed_fn)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        return data
    raise TypeError(
        f"{name} should be a DataLoader, an iterable of dict batches or an object with get_batchgen() "
        f"(a delira data manager), got {type(data).__name__}"
    )
