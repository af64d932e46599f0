"""Per-sample outputs gathered across DDP ranks: every sample once, in dataset order.

``DistributedSampler`` evens out the shards by repeating the first indices of its (possibly shuffled) order, so a
plain all-gather of per-rank outputs over ``N`` samples holds ``world_size * ceil(N / world_size)`` items, in an
interleaved order. :func:`gather_samples` drops the repeats where they were made and puts the samples back in
dataset order, so that an evaluation over ``N`` samples sees exactly ``N``, once each.

:class:`ExactDistributedSampler` avoids the repeats in the first place: it deals the same order as
``DistributedSampler`` without padding, so ranks may get one sample (and one batch) more than others. Ignite's metrics
reduce across ranks only when they are computed, so such uneven shards count every sample once and do not hang.

Built on ``ignite.distributed`` (``idist.all_gather`` of Python objects), so it runs under every backend and launcher
that Ignite supports, and as a no-op gather in a single process.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence, Sized
from typing import Any, TypeVar

import ignite.distributed as idist
import torch
from ignite.distributed.auto import DistributedProxySampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["ExactDistributedSampler", "gather_samples"]

T = TypeVar("T")


class ExactDistributedSampler(DistributedSampler):
    """``DistributedSampler``'s order, dealt without padding: each index of the dataset goes to exactly one rank.

    Rank ``r`` of ``W`` gets ``order[r::W]``, where ``order`` is what ``DistributedSampler`` (same ``shuffle``,
    ``seed`` and epoch) would shuffle, less the repeats it appends to give every rank ``ceil(N / W)`` indices. Ranks
    then hold ``ceil`` or ``floor`` of ``N / W`` samples: meant for evaluation, where Ignite's metrics sum their
    statistics across ranks once, at ``compute``, and per-rank outputs are gathered with :func:`gather_samples`.
    Do not train on it: DDP all-reduces gradients at every step, so ranks with one batch fewer would wait forever.

    Args:
        dataset: A dataset with ``len``.
        num_replicas: The world size; ``None`` asks ``ignite.distributed`` (1 without a process group).
        rank: This process's rank; ``None`` asks ``ignite.distributed`` (0 without a process group).
        shuffle: Shuffle with ``seed + epoch`` as ``DistributedSampler`` does. Off by default: evaluation order does
            not matter, and a fixed one makes per-rank logs comparable.
        seed: The shuffling seed, the same on every rank.

    Raises:
        ValueError: ``rank`` outside ``[0, num_replicas)``, or fewer samples than ranks (a rank without data would
            make ``Engine.run`` refuse its empty loader).

    Examples:
        .. code-block:: python

            import ignite.distributed as idist

            sampler = ExactDistributedSampler(val_set)
            val_loader = idist.auto_dataloader(val_set, batch_size=64, sampler=sampler)  # used as it is
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        num_replicas = idist.get_world_size() if num_replicas is None else num_replicas
        rank = idist.get_rank() if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        if len(dataset) < num_replicas:
            raise ValueError(
                f"ExactDistributedSampler: {len(dataset)} samples cannot give each of {num_replicas} ranks at least "
                "one; evaluate on fewer ranks, or use DistributedSampler (which repeats samples) with gather_samples"
            )
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.total_size, generator=generator).tolist()
        else:
            order = list(range(self.total_size))
        return iter(order[self.rank : self.total_size : self.num_replicas])


# Samplers whose rank r deals order[r::num_replicas] of a list padded (or not) past len(dataset): _unpadded knows them.
_STRIDED_SHARDINGS = (DistributedSampler.__iter__, DistributedProxySampler.__iter__, ExactDistributedSampler.__iter__)


def gather_samples(
    samples: Sequence[T],
    *,
    sampler: DistributedSampler | None = None,
    indices: Sequence[int] | torch.Tensor | None = None,
    dst: int | None = None,
) -> list[T] | None:
    """Gathers per-sample items from every rank, without ``DistributedSampler``'s padding, in dataset order.

    Every rank must call it (it is a collective), each with the items it produced. Where each item came from is told
    by exactly one of ``sampler`` and ``indices``:

    - ``sampler``: the ``DistributedSampler`` (Ignite's ``DistributedProxySampler``, hotloop's
      :class:`ExactDistributedSampler`) that fed this rank, its epoch unchanged since; ``samples`` are this rank's
      items in the order the sampler gave them (one per index, as :func:`~hotloop.collate.decollate_batch` returns
      them batch after batch). The items the sampler repeated to even out the shards are dropped on the rank that
      made them, before anything is sent.
    - ``indices``: the dataset index of each item. Ranks may hold different numbers of items; an index that appears
      more than once (on one rank or several) is kept once, the copy from the lowest rank, first seen.

    Items travel as pickled Python objects (``idist.all_gather``), so tensors, MONAI ``MetaTensor``\\ s with their
    metadata, strings and nested containers all arrive as they are sent.

    Args:
        samples: This rank's per-sample items.
        sampler: The distributed sampler that fed this rank.
        indices: The dataset index of each item of ``samples`` (a sequence of ints or an integer tensor).
        dst: ``None`` to return the gathered items on every rank; a rank number to return them there only (the other
            ranks get ``None``). Ignite has no gather-to-one collective: the items are all-gathered either way.

    Returns:
        The items of all ranks sorted by dataset index, each index once; ``None`` on ranks other than ``dst``.

    Raises:
        ValueError: Neither or both of ``sampler`` and ``indices``; a count of items that does not match; a sampler
            built for another world size or rank; ``dst`` out of range.
        TypeError: A sampler that is not a ``DistributedSampler`` with its own sharding, or indices that are not
            integers.

    Examples:
        .. code-block:: python

            samples = []

            @evaluator.on(Events.ITERATION_COMPLETED)
            def collect(engine):
                samples.extend(decollate_batch(engine.state.output))

            @evaluator.on(Events.COMPLETED)
            def gather(engine):
                engine.state.samples = gather_samples(samples, sampler=loader.sampler)  # N samples on every rank
    """
    world_size, rank = idist.get_world_size(), idist.get_rank()
    if dst is not None and not 0 <= dst < world_size:
        raise ValueError(f"gather_samples: dst must be a rank in [0, {world_size}) or None, got {dst!r}")
    if (sampler is None) == (indices is None):
        raise ValueError("gather_samples: pass exactly one of sampler= and indices=")
    if sampler is not None:
        local = _unpadded(samples, sampler, world_size, rank)
    else:
        local = list(zip(_index_list(indices, len(samples)), samples))
    gathered: list[list[tuple[int, T]]] = idist.all_gather(local)  # type: ignore[assignment]
    if dst is not None and rank != dst:
        return None
    return _in_dataset_order(gathered, unique=sampler is None)


def _sampler_order(sampler: DistributedSampler) -> list[int]:
    """The indices ``sampler`` gives this rank in its current epoch, the caller's random state left untouched."""
    with torch.random.fork_rng(devices=[]):  # DistributedProxySampler reseeds the global generator
        return [int(index) for index in sampler]


def _unpadded(samples: Sequence[T], sampler: DistributedSampler, world_size: int, rank: int) -> list[tuple[int, T]]:
    """``(dataset index, item)`` of this rank's items, less the ones the sampler repeated as padding.

    ``DistributedSampler`` deals ``indices[rank::world_size]`` from a list of ``total_size`` indices whose tail past
    ``len(dataset)`` repeats its head: this rank's ``i``-th item sits at global position ``i * world_size + rank``,
    a repeat when that is ``len(dataset)`` or more. :class:`ExactDistributedSampler` deals the same way from an
    unpadded list, so none of its items is dropped.
    """
    _check_sampler(sampler, world_size, rank)
    order = _sampler_order(sampler)
    if len(order) != len(samples):
        raise ValueError(
            f"gather_samples: rank {rank} has {len(samples)} samples but its sampler gives it {len(order)} indices; "
            "pass one item per index the sampler gave, in its order (a whole epoch)"
        )
    dataset_size = len(sampler.dataset)  # type: ignore[arg-type]
    return [
        (index, sample)
        for position, (index, sample) in enumerate(zip(order, samples))
        if position * world_size + rank < dataset_size
    ]


def _check_sampler(sampler: DistributedSampler, world_size: int, rank: int) -> None:
    if not isinstance(sampler, DistributedSampler):
        raise TypeError(f"gather_samples: sampler must be a DistributedSampler, got {type(sampler).__qualname__}")
    sharding = type(sampler).__iter__
    if sharding not in _STRIDED_SHARDINGS:
        raise TypeError(
            f"gather_samples: {type(sampler).__qualname__} overrides DistributedSampler.__iter__, so where its padding "
            "lies is unknown; pass indices= (the dataset index of each sample) instead"
        )
    if sampler.num_replicas != world_size or sampler.rank != rank:
        raise ValueError(
            f"gather_samples: the sampler was built for rank {sampler.rank} of {sampler.num_replicas}, but this is "
            f"rank {rank} of {world_size}"
        )


def _index_list(indices: Sequence[int] | torch.Tensor | None, count: int) -> list[int]:
    values = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices if indices is not None else ())
    if len(values) != count:
        raise ValueError(f"gather_samples: got {count} samples but {len(values)} indices; pass one index per sample")
    return [_as_index(value) for value in values]


def _as_index(value: Any) -> int:
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"gather_samples: indices must be integers, got {value!r} ({type(value).__qualname__})")


def _in_dataset_order(gathered: list[list[tuple[int, Any]]], unique: bool) -> list[Any]:
    """The items of all ranks, sorted by index (stable: rank, then local order); with ``unique``, each index once."""
    pairs = sorted((pair for per_rank in gathered for pair in per_rank), key=lambda pair: pair[0])
    if not unique:
        return [item for _, item in pairs]
    out: list[Any] = []
    last: int | None = None
    for index, item in pairs:
        if index != last:
            out.append(item)
            last = index
    return out
