"""Walking nested batches: tensors inside tuples (named or not), lists and mappings, and constant leaves.

One set of walkers for every part of hotloop that looks inside a batch or an output: the device prefetcher (pin and
copy every tensor), the compiled and CUDA-graphed steps (a key per input structure and shape; static copies of the
inputs), exact distributed evaluation (detached clones of each output). Containers are rebuilt with their own type
(a ``dict`` subclass is copied with :func:`copy.copy`, so a ``defaultdict`` keeps its factory); any other object is
a leaf.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import torch

__all__ = [
    "CONSTANT_TYPES",
    "OPAQUE",
    "tree_clone",
    "tree_copy_",
    "tree_key",
    "tree_layout",
    "tree_leaves",
    "tree_map",
    "tree_tensors",
]

_Tensor = torch.Tensor
#: Non-tensor leaves that are values, not objects: immutable and hashable, so a key may hold them.
CONSTANT_TYPES: tuple[type, ...] = (type(None), bool, int, float, complex, str, bytes)
#: Marks, in a :func:`tree_layout`, a leaf that is neither a tensor nor a constant.
OPAQUE = object()


def tree_map(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    """``obj`` with ``fn`` applied to every tensor; containers rebuilt with their type, other leaves kept as they are.

    Args:
        fn: called on each tensor leaf.
        obj: a tensor, or tuples, lists and mappings of them (and of other leaves).

    Returns:
        the new tree.
    """
    if isinstance(obj, _Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        out = copy.copy(obj)
        for key in out:
            out[key] = tree_map(fn, obj[key])
        return out
    if isinstance(obj, Mapping):
        return type(obj)({key: tree_map(fn, value) for key, value in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple):
        items = [tree_map(fn, item) for item in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, list):
        items = copy.copy(obj)
        items[:] = [tree_map(fn, item) for item in obj]
        return items
    return obj


def tree_leaves(obj: Any) -> Iterator[Any]:
    """The leaves of ``obj`` (tensors and anything that is not a tuple, list or mapping), in a fixed order."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from tree_leaves(item)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from tree_leaves(value)
    else:
        yield obj


def tree_tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors of ``obj`` in a fixed order."""
    return [leaf for leaf in tree_leaves(obj) if isinstance(leaf, _Tensor)]


def tree_clone(obj: Any) -> Any:
    """A copy of ``obj`` with every tensor detached and cloned into new memory (same strides); constants shared."""
    return tree_map(_detached_clone, obj)


def _detached_clone(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone()


def tree_copy_(dst: Any, src: Any) -> None:
    """Copy the tensors of ``src`` into the matching tensors of ``dst`` (the same layout), without a host sync."""
    if isinstance(dst, _Tensor):
        dst.copy_(src, non_blocking=True)  # device-to-device: enqueued, no host sync
    elif isinstance(dst, Mapping):
        for key in dst:
            tree_copy_(dst[key], src[key])
    elif isinstance(dst, (tuple, list)):
        for dst_item, src_item in zip(dst, src):
            tree_copy_(dst_item, src_item)


def tree_layout(obj: Any, constants: list[Any]) -> Hashable:
    """The structure of ``obj`` with each tensor's type, shape, dtype, device and ``requires_grad``.

    Host metadata only: reading them never synchronizes with the device. Constant leaves (:data:`CONSTANT_TYPES`)
    are appended to ``constants`` and stand in the layout as their type; any other leaf as ``(OPAQUE, type)``.
    """
    if isinstance(obj, _Tensor):
        return (type(obj), obj.shape, obj.dtype, obj.device, obj.requires_grad)
    if isinstance(obj, (tuple, list)):
        return (type(obj), *[tree_layout(item, constants) for item in obj])
    if isinstance(obj, Mapping):
        return (type(obj), *[(key, tree_layout(value, constants)) for key, value in obj.items()])
    if type(obj) in CONSTANT_TYPES:
        constants.append(obj)
        return (type(obj),)
    return (OPAQUE, type(obj))


def tree_key(obj: Any) -> tuple[Hashable, tuple[Any, ...]]:
    """``(layout, constants)`` of ``obj`` (:func:`tree_layout`): equal for inputs that one compiled or captured
    step can take."""
    constants: list[Any] = []
    return tree_layout(obj, constants), tuple(constants)
