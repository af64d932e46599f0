"""Small helpers over nested batches (tensors inside tuples, lists and dicts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__: list[str] = []


def _tree_map(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in ``obj``; containers are rebuilt, other leaves returned as they are."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return type(obj)({k: _tree_map(fn, v) for k, v in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_tree_map(fn, v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tree_map(fn, v) for v in obj)
    return obj


def _tree_tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors of ``obj`` in a fixed order."""
    out: list[torch.Tensor] = []
    _tree_map(out.append, obj)
    return out


def _shape_key(obj: Any) -> tuple:
    """A hashable key made of the structure, shapes, dtypes and devices of ``obj`` (host metadata only)."""
    if isinstance(obj, torch.Tensor):
        return ("T", tuple(obj.shape), obj.dtype, obj.device)
    if isinstance(obj, Mapping):
        return ("M", tuple((k, _shape_key(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return ("S", type(obj), tuple(_shape_key(v) for v in obj))
    return ("O", type(obj), obj if isinstance(obj, (int, float, str, bool, type(None))) else id(obj))
