"""The pure-Python reference of ``hotloop.collate.decollate_batch``: the twin of ``csrc/decollate.cpp``.

It follows ``monai.data.decollate_batch`` (MONAI 1.6.1) step by step, without importing MONAI, and differs from it
where the native module does, with the same messages: a reference cycle raises ``ValueError`` (MONAI recurses until
``RecursionError``), nesting deeper than :data:`MAX_DEPTH` raises ``RecursionError``, and the exceptions MONAI raises
by accident (``IndexError`` for a tensor with batch size 0, ``TypeError`` from ``zip`` with ``pad=False``) keep their
types but name the place. ``tests/collate/test_decollate.py`` holds it equal to the native module and to MONAI.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

import torch

__all__ = ["MAX_DEPTH", "decollate_batch"]

#: The deepest nesting of containers (and MetaTensor metadata) walked; the native module's ``MAX_DEPTH``.
MAX_DEPTH = 128

_KEY, _INDEX, _META = 0, 1, 2


@dataclass(frozen=True)
class _Options:
    detach: bool
    pad: bool
    fill_value: Any


# MONAI decollates MetaTensor metadata with decollate_batch's defaults, whatever the outer call's arguments.
_META_OPTIONS = _Options(detach=True, pad=True, fill_value=None)


class _Path:
    """The containers entered, outermost first, each with the step taken into the current child.

    It refuses cycles and nesting deeper than :data:`MAX_DEPTH`, and names the place of an error
    (``batch['image'].meta['affine'][0]``).
    """

    def __init__(self) -> None:
        self.containers: list[Any] = []
        self.steps: list[list[Any]] = []  # [kind, key or index]

    def enter(self, container: Any, kind: int) -> None:
        if len(self.containers) >= MAX_DEPTH:
            raise RecursionError(f"decollate_batch: {self.render()} is nested deeper than {MAX_DEPTH} containers")
        for outer, seen in enumerate(self.containers):
            if seen is container:
                raise ValueError(
                    f"decollate_batch: {self.render()} is the same {type(container).__qualname__} object as "
                    f"{self.render(outer)}: the batch contains a reference cycle"
                )
        self.containers.append(container)
        self.steps.append([kind, None])

    def leave(self) -> None:
        self.containers.pop()
        self.steps.pop()

    def at(self, key: Any) -> None:
        self.steps[-1][1] = key

    def render(self, count: int | None = None) -> str:
        parts = ["batch"]
        for kind, key in self.steps[:count]:
            parts.append(".meta" if kind == _META else f"[{key!r}]" if kind == _KEY else f"[{key}]")
        return "".join(parts)


def _meta_types() -> tuple[type, Any] | None:
    """``(MetaObj, TraceKeys.NONE)`` once MONAI has been imported (no MetaTensor can exist before), else ``None``."""
    meta_obj = sys.modules.get("monai.data.meta_obj")
    enums = sys.modules.get("monai.utils.enums")
    if meta_obj is None or enums is None or not hasattr(meta_obj, "MetaObj") or not hasattr(enums, "TraceKeys"):
        return None
    return meta_obj.MetaObj, enums.TraceKeys.NONE


def _is_numpy_scalar(obj: Any) -> bool:
    return type(obj).__module__ == "numpy" and not isinstance(obj, Iterable)


def _is_zero_dim(obj: Any) -> bool:
    return getattr(obj, "ndim", -1) == 0 and hasattr(obj, "item")


def _empty_batch_error(path: _Path, tensor: torch.Tensor) -> IndexError:
    return IndexError(
        f"decollate_batch: {path.render()} is a tensor with batch size 0 (shape {tuple(tensor.shape)}): "
        "it has no sample to decollate"
    )


def _assign_each(parts: Any, values: Any, attr: str, meta_obj: type) -> None:
    """``for t, v in zip(parts, values)``: a MetaObj sample gets ``attr = v`` and ``is_batch = False``."""
    for part, value in zip(parts, values):
        if isinstance(part, meta_obj):
            setattr(part, attr, value)
            part.is_batch = False  # type: ignore[attr-defined]


def _decollate_meta(batch: Any, tensor: Any, parts: Any, path: _Path, meta_obj: type) -> None:
    """Gives each sample of a MetaObj batch its own decollated metadata and applied operations."""
    path.enter(batch, _META)
    try:
        _assign_each(parts, _decollate(tensor.meta, _META_OPTIONS, path), "meta", meta_obj)
    finally:
        path.leave()
    _assign_each(parts, tensor.applied_operations, "applied_operations", meta_obj)


def _decollate_tensor(batch: torch.Tensor, options: _Options, path: _Path) -> list[Any]:
    """MONAI's tensor branch: unbind along dim 0; per-sample metadata for MetaTensors; Python scalars for 1-d."""
    tensor = batch.detach() if options.detach else batch
    parts = torch.unbind(tensor, dim=0)
    meta = _meta_types()
    if meta is not None and isinstance(tensor, meta[0]):
        _decollate_meta(batch, tensor, parts, path, meta[0])
    if len(parts) == 0:
        raise _empty_batch_error(path, tensor)
    if parts[0].ndim == 0 and options.detach:
        return [part.item() for part in parts]
    return list(parts)


def _is_unbatched(value: Any) -> bool:
    """MONAI's test for a decollated value with no batch dimension (repeated per sample when padding)."""
    return (
        not isinstance(value, Iterable)
        or isinstance(value, (str, bytes))
        or (isinstance(value, torch.Tensor) and value.ndim == 0)
    )


def _unbatched_error(path: _Path, key: Any, value: Any) -> TypeError:
    path.at(key)
    return TypeError(
        f"decollate_batch(pad=False): {path.render()} ({type(value).__qualname__}) has no batch dimension to split; "
        "pad=True repeats it for every sample"
    )


def _columns(keys: list[Any], values: list[Any], unbatched: list[bool], path: _Path) -> list[Any]:
    """Every value as a list (iterated as ``zip`` would); a value that cannot be iterated gets a clear TypeError."""
    columns = []
    for key, value, flat in zip(keys, values, unbatched):
        try:
            columns.append(value if isinstance(value, (list, tuple)) else list(value))
        except TypeError as error:
            if flat:
                raise _unbatched_error(path, key, value) from error
            raise
    return columns


def _zip(keys: list[Any], values: list[Any], mapping: bool, options: _Options, path: _Path) -> Any:
    """MONAI's ``_non_zipping_check`` and zip step over the decollated values of one container."""
    batch_size = 0
    unbatched = [_is_unbatched(value) for value in values]
    for value, flat in zip(values, unbatched):
        if not flat and isinstance(value, Sized):
            batch_size = max(batch_size, len(value))
    if batch_size <= 0:
        return dict(zip(keys, values)) if mapping else values
    if options.pad:
        values = [
            [copy.deepcopy(value) for _ in range(batch_size)] if flat else value
            for value, flat in zip(values, unbatched)
        ]
    columns = _columns(keys, values, unbatched, path)
    rows = zip_longest(*columns, fillvalue=options.fill_value) if options.pad else zip(*columns)
    if mapping:
        return [dict(zip(keys, row)) for row in rows]
    return [list(row) for row in rows]


def _decollate_mapping(batch: Mapping, options: _Options, path: _Path) -> Any:
    path.enter(batch, _KEY)
    try:
        deco: dict[Any, Any] = {}
        for key in batch:
            path.at(key)
            deco[key] = _decollate(batch[key], options, path)
        return _zip(list(deco), list(deco.values()), True, options, path)
    finally:
        path.leave()


def _decollate_iterable(batch: Iterable, options: _Options, path: _Path) -> Any:
    path.enter(batch, _INDEX)
    try:
        values = []
        for index, item in enumerate(batch):
            path.at(index)
            values.append(_decollate(item, options, path))
        return _zip(list(range(len(values))), values, False, options, path)
    finally:
        path.leave()


def _decollate(batch: Any, options: _Options, path: _Path) -> Any:
    """``decollate_batch``'s dispatch, in MONAI's order."""
    if batch is None or isinstance(batch, (float, int, str, bytes)) or _is_numpy_scalar(batch):
        return batch
    if _is_zero_dim(batch):
        return batch.item() if options.detach else batch
    if isinstance(batch, torch.Tensor):
        return _decollate_tensor(batch, options, path)
    if isinstance(batch, Mapping):
        return _decollate_mapping(batch, options, path)
    if isinstance(batch, Iterable):
        return _decollate_iterable(batch, options, path)
    raise NotImplementedError(
        f"decollate_batch: {path.render()} ({type(batch).__qualname__}) is not a tensor, mapping, iterable, number, "
        "string or None: cannot decollate it"
    )


def decollate_batch(batch: Any, detach: bool = True, pad: bool = True, fill_value: Any = None) -> Any:
    """``monai.data.decollate_batch`` in pure Python; see :func:`hotloop.collate.decollate_batch`.

    Args:
        batch: The collated batch.
        detach: Detach tensors; 0-d tensors become Python numbers.
        pad: Pad per-sample sequences of different lengths to the longest (else cut to the shortest).
        fill_value: The padding value.

    Returns:
        The per-sample structures (see :func:`hotloop.collate.decollate_batch`).
    """
    return _decollate(batch, _Options(bool(detach), bool(pad), fill_value), _Path())
