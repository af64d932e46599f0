"""hotloop's :class:`DeterministicEngine`: Ignite's deterministic engine on hotloop's fast loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine.deterministic import DeterministicEngine as _IgniteDeterministicEngine
from ignite.engine.deterministic import ReproducibleBatchSampler, keep_random_state, update_dataloader

from hotloop.engine.engine import Engine

__all__ = ["DeterministicEngine", "ReproducibleBatchSampler", "keep_random_state", "update_dataloader"]


class DeterministicEngine(Engine, _IgniteDeterministicEngine):
    """Deterministic engine derived from :class:`hotloop.Engine`.

    Ignite's :class:`~ignite.engine.deterministic.DeterministicEngine` (dataflow synchronization: the
    same batches in the same order for a given seed, across resumes; ``ReproducibleBatchSampler`` patched into
    map-style ``DataLoader`` s; random states saved in ``state_dict()``) running on hotloop's loop. It is an
    instance of both ``hotloop.Engine`` and ``ignite.engine.DeterministicEngine``.

    Args:
        process_function: A function receiving a handle to the engine and the current batch
            in each iteration, and returns data to be stored in the engine's state.
    """

    def __init__(self, process_function: Callable[[Any, Any], Any]) -> None:
        super().__init__(process_function)
