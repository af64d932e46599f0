"""``decollate_batch``: MONAI's per-sample decollation, run by the native module (``csrc/``) when it is built.

The native module ``hotloop.collate._decollate`` is built by the package install (scikit-build-core, CMake,
pybind11). When it cannot be imported, the pure-Python reference (:mod:`hotloop.collate._reference`) does the work,
with one ``RuntimeWarning`` at the first call. :data:`HAS_NATIVE` tells which one runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from hotloop.collate import _reference

__all__ = ["HAS_NATIVE", "decollate_batch"]

_Decollate = Callable[[Any, Any, Any, Any], Any]

_native_decollate: _Decollate | None
try:
    from hotloop.collate._decollate import decollate_batch as _native_decollate
except ImportError as error:
    _native_decollate = None
    _NATIVE_IMPORT_ERROR: str = f"{type(error).__name__}: {error}"
else:
    _NATIVE_IMPORT_ERROR = ""

#: Whether the native module was imported (else the pure-Python reference runs).
HAS_NATIVE: bool = _native_decollate is not None


def _reference_after_warning(batch: Any, detach: Any, pad: Any, fill_value: Any) -> Any:
    """The first call without the native module: warn once, then hand every later call to the reference."""
    global _impl
    _impl = _reference.decollate_batch
    warnings.warn(
        "hotloop.decollate_batch: the native module hotloop.collate._decollate could not be imported "
        f"({_NATIVE_IMPORT_ERROR}); using the pure-Python reference, several times slower. Reinstall hotloop "
        "(pip install -e .) to build it.",
        RuntimeWarning,
        stacklevel=3,
    )
    return _impl(batch, detach, pad, fill_value)


_impl: _Decollate = _native_decollate if _native_decollate is not None else _reference_after_warning


def decollate_batch(batch: Any, detach: bool = True, pad: bool = True, fill_value: Any = None) -> Any:
    """De-collates a batch into a list of per-sample structures, as ``monai.data.decollate_batch`` does.

    The same results as MONAI 1.6.1's function, a multiple faster (the walk is in C++):

    - a tensor is unbound along its first dimension (views, detached when ``detach``); a 1-d tensor gives Python
      numbers when ``detach``; a 0-d tensor or array gives ``.item()`` when ``detach``, else itself;
    - a MONAI ``MetaTensor`` batch gives per-sample ``MetaTensor``\\ s, each with its own decollated ``meta``,
      its own ``applied_operations`` and ``is_batch = False``;
    - a mapping gives a list of dicts, a list, tuple or other iterable a list of lists, zipping the decollated values;
      values with no batch dimension (numbers, strings, ``None``, NumPy scalars) are repeated per sample when
      ``pad``; per-sample lists of different lengths are padded with ``fill_value`` to the longest when ``pad``,
      cut to the shortest otherwise;
    - ``None``, numbers, strings and bytes come back as they are.

    Like MONAI, a NumPy array is walked as nested lists and a mapping whose values have no batch dimension comes
    back as a dict. Unlike MONAI, a batch that contains itself raises ``ValueError`` instead of recursing until
    ``RecursionError``, nesting deeper than 128 containers raises ``RecursionError``, and the errors MONAI raises by
    accident keep their types but name the place (``batch['label']``).

    Args:
        batch: The collated batch: tensors with the batch first, nested in dicts, lists and tuples, with per-sample
            lists and unbatched values.
        detach: Detach tensors from the autograd graph; 0-d and 1-d tensors then give Python numbers.
        pad: Pad per-sample sequences to the longest and repeat unbatched values per sample; else zip cuts to the
            shortest and an unbatched value that cannot be iterated raises ``TypeError``.
        fill_value: The value padded in when ``pad``.

    Returns:
        A list with one structure per sample; ``batch`` itself for ``None``, numbers and strings; a dict or list for
        a container with no batch dimension.

    Raises:
        NotImplementedError: A value that is neither a tensor, a mapping, an iterable, a number, a string nor
            ``None`` (MONAI's exception).
        IndexError: A tensor with batch size 0 (MONAI's exception).
        TypeError: With ``pad=False``, a value with no batch dimension that cannot be iterated.
        ValueError: A reference cycle.
        RecursionError: Containers nested more than 128 deep.

    Examples:
        .. code-block:: python

            import torch
            from hotloop.collate import decollate_batch

            batch = {"image": torch.rand(2, 1, 4, 4), "label": torch.tensor([0, 1]), "name": ["a", "b"]}
            samples = decollate_batch(batch)
            samples[1]["image"].shape, samples[1]["label"], samples[1]["name"]
            # (torch.Size([1, 4, 4]), 1, 'b')
    """
    return _impl(batch, detach, pad, fill_value)
