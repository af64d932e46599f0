"""A device prefetcher: the next batch is pinned and copied to the GPU while the current step runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from hotloop.step.tree import tree_map, tree_tensors

__all__ = ["DevicePrefetcher", "prefetch_enabled"]

_END = object()


def prefetch_enabled(option: bool, device: str | torch.device | None) -> bool:
    """Whether ``prefetch=option`` does anything for ``device``: only a CUDA device has a copy engine to overlap.

    Args:
        option: the user's ``prefetch`` argument.
        device: the step's device.

    Returns:
        True when batches should go through :class:`DevicePrefetcher`.

    Raises:
        TypeError: ``option`` is not a bool.
    """
    if not isinstance(option, bool):
        raise TypeError(f"prefetch should be True or False, got {option!r}")
    return option and device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()


def _pin(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type != "cpu" or t.is_pinned() else t.pin_memory()


class DevicePrefetcher(Iterator):
    """Wraps a batch iterator; yields batches already on ``device``, copied one step ahead on a side stream.

    On CUDA the next batch is pinned (unless it already is, as with ``DataLoader(pin_memory=True)``) and copied with
    ``non_blocking=True`` on a dedicated stream while the current step runs. Before a batch is handed out, the
    current stream waits for the copy stream, and every tensor of the batch is ``record_stream``-ed on the current
    stream so the caching allocator does not reuse its memory while the step still reads it.

    It reads one batch ahead of the consumer. Over a ``DataLoader`` this is invisible (a new iterator is made each
    epoch). Over a one-shot iterator shared between runs, the batch read ahead when a run stops stays in the
    prefetcher, not in the underlying iterator.

    On any other device it is a pass-through: no thread, no look-ahead, the batch is returned unchanged.

    Args:
        data: an iterable or iterator of batches (tensors, or tuples/lists/dicts of tensors).
        device: the device to copy to.
        non_blocking: copy asynchronously (needs pinned memory to overlap).
        pin_memory: pin host tensors before copying.
    """

    def __init__(
        self, data: Iterable | Iterator, device: str | torch.device, non_blocking: bool = True, pin_memory: bool = True
    ) -> None:
        self._it = iter(data)
        self.device = torch.device(device)
        self.non_blocking = non_blocking
        self.pin_memory = pin_memory
        self._active = self.device.type == "cuda" and torch.cuda.is_available()
        self._stream = torch.cuda.Stream(device=self.device) if self._active else None
        self._next: Any = None
        self._loaded = False

    def __iter__(self) -> DevicePrefetcher:
        return self

    def _load(self) -> None:
        try:
            batch = next(self._it)
        except StopIteration:
            self._next = _END
            return
        if self.pin_memory:
            batch = tree_map(_pin, batch)
        with torch.cuda.stream(self._stream):  # type: ignore[arg-type]
            self._next = tree_map(lambda t: t.to(self.device, non_blocking=self.non_blocking), batch)

    def __next__(self) -> Any:
        if not self._active:
            return next(self._it)
        if not self._loaded:
            self._load()
            self._loaded = True
        batch = self._next
        if batch is _END:
            raise StopIteration
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self._stream)  # type: ignore[arg-type]
        for t in tree_tensors(batch):
            t.record_stream(current)
        self._load()
        return batch
