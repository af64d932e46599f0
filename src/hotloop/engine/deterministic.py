"""hotloop's :class:`DeterministicEngine`: Ignite's deterministic engine on hotloop's fast loop."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

from ignite.engine.deterministic import DeterministicEngine as _IgniteDeterministicEngine
from ignite.engine.deterministic import ReproducibleBatchSampler as _IgniteReproducibleBatchSampler
from ignite.engine.deterministic import keep_random_state, update_dataloader
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _DatasetKind

from hotloop.engine.engine import Engine

__all__ = ["DeterministicEngine", "ReproducibleBatchSampler", "keep_random_state", "update_dataloader"]


class ReproducibleBatchSampler(_IgniteReproducibleBatchSampler):
    """Ignite's :class:`~ignite.engine.deterministic.ReproducibleBatchSampler` that can draw an epoch's indices early.

    Ignite's ``__iter__`` is a generator: the indices are drawn at the first ``next()`` — inside ``iter(dataloader)``
    when the ``DataLoader`` has worker processes (they prefetch), at the engine's first ``next()`` otherwise. When a
    run resumes in the middle of an epoch, the saved random state is restored between ``iter()`` and that ``next()``,
    so without workers the resumed epoch would get another permutation than the interrupted one had. :meth:`prime`
    draws them from the epoch's seed before that, and the next ``__iter__`` uses them.
    """

    _primed = False
    _draws = 0  # how many times this sampler has drawn an epoch's indices

    def setup_batch_indices(self) -> None:
        super().setup_batch_indices()
        self._draws += 1

    def prime(self) -> None:
        """Draws this epoch's batch indices now; the next ``__iter__`` yields them."""
        self.setup_batch_indices()
        self._primed = True

    def __iter__(self) -> Generator[list[int], None, None]:
        if not self._primed:
            self.setup_batch_indices()
        self._primed = False
        yield from self.batch_indices


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

    def _setup_engine(self) -> None:
        data = self.state.dataloader
        if isinstance(data, DataLoader) and getattr(data, "_dataset_kind", _DatasetKind.Map) == _DatasetKind.Map:
            batch_sampler = data.batch_sampler
            if batch_sampler is not None and not isinstance(batch_sampler, _IgniteReproducibleBatchSampler):
                self.state.dataloader = update_dataloader(data, ReproducibleBatchSampler(batch_sampler))  # type: ignore[arg-type]
        super()._setup_engine()

    def _from_iteration(self, iteration: int) -> Iterator:
        sampler = getattr(self.state.dataloader, "batch_sampler", None)
        if not isinstance(sampler, ReproducibleBatchSampler):
            return super()._from_iteration(iteration)
        sampler._primed = False  # indices primed for a run that never iterated are stale
        draws = sampler._draws
        data_iter = super()._from_iteration(iteration)
        if self._dataloader_len and iteration % self._dataloader_len and sampler._draws == draws:
            # Resuming mid-epoch, and iter() has not drawn the epoch's indices (a DataLoader without workers): draw
            # them now, after the DataLoader's base seed as in the uninterrupted run and before the saved random
            # state is restored (Ignite 0.5.5 draws them after, and the resumed epoch gets another order;
            # docs/differences.md). With workers, iter() has drawn them already, at the same point: nothing to do.
            sampler.prime()
        return data_iter
