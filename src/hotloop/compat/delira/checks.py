"""Argument checks of the delira trainer: the type or value a user gave, and what is expected."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

__all__: list[str] = []

_EMPTY: Mapping[str, Any] = MappingProxyType({})
#: delira's default ``mixed_precision_kwargs`` (the keyword arguments of apex's legacy ``amp.init``).
_APEX_DEFAULTS: Mapping[str, Any] = MappingProxyType({"allow_banned": False, "enable_caching": True, "verbose": False})
_SCALER_KEYS = frozenset({"init_scale", "growth_factor", "backoff_factor", "growth_interval"})
_MODES = ("highest", "lowest")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} should be an integer >= {minimum}, got {value}")
    return value


def _check_mapping(name: str, value: Any, of_callables: bool = False) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} should be a dict, got {type(value).__name__} ({value!r})")
    if of_callables:
        bad = [k for k, v in value.items() if not callable(v)]
        if bad:
            raise TypeError(f"{name} should map names to callables fn(preds, *labels); not callable: {bad}")
    return value


def _check_mode(val_score_mode: Any) -> None:
    if val_score_mode not in _MODES:
        raise ValueError(f"Invalid Mode: {val_score_mode!r}. Mode must be in {list(_MODES)}")


def _check_gpu_ids(gpu_ids: Any) -> list[int]:
    if isinstance(gpu_ids, (str, bytes)) or not isinstance(gpu_ids, Iterable):
        raise TypeError(f"gpu_ids should be a list of GPU indices (empty: CPU), got {gpu_ids!r}")
    ids = list(gpu_ids)
    for i in ids:
        _check_int("every entry of gpu_ids", i, 0)
    if len(set(ids)) != len(ids):
        raise ValueError(f"gpu_ids should not repeat a GPU, got {ids}")
    return ids


def _check_mixed_precision(mixed_precision: Any, kwargs: Any) -> None:
    if not isinstance(mixed_precision, bool):
        raise TypeError(f"mixed_precision should be True or False, got {mixed_precision!r}")
    _check_mapping("mixed_precision_kwargs", kwargs)
    unknown = sorted(set(kwargs) - set(_APEX_DEFAULTS) - _SCALER_KEYS)
    if unknown:
        raise ValueError(
            f"mixed_precision_kwargs has unknown keys {unknown}; accepted: apex's {sorted(_APEX_DEFAULTS)} (ignored) "
            f"and torch.amp.GradScaler's {sorted(_SCALER_KEYS)}"
        )


def _check_save_path(save_path: Any) -> str:
    if not isinstance(save_path, (str, os.PathLike)):
        raise TypeError(f"save_path should be a directory path (str or os.PathLike), got {save_path!r}")
    path = os.fspath(save_path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"save_path should be a directory, but {path!r} is a file")
    return path
