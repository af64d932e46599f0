"""One rank of ``test_distributed.py``'s two-process run on gloo: pickles what ``gather_samples`` returned.

Usage: ``python _ddp_worker.py OUT_PATH``, with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` in the environment (Ignite's ``env://`` initialization).
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import ignite.distributed as idist
import torch
from torch.utils.data import DataLoader, DistributedSampler

from hotloop.collate import decollate_batch, gather_samples

DATASET_SIZES = (6, 7, 1, 9)  # divisible by 2, not divisible, fewer samples than ranks, odd again


def _dataset(size: int) -> list[dict[str, Any]]:
    return [{"index": i, "image": torch.full((2, 2), float(i)), "name": f"s{i}"} for i in range(size)]


def _epoch(size: int, shuffle: bool, drop_last: bool = False, epoch: int = 0) -> tuple[list[Any], DistributedSampler]:
    """One evaluation pass: the loader's batches decollated into this rank's per-sample items."""
    data = _dataset(size)
    sampler = DistributedSampler(data, shuffle=shuffle, seed=7, drop_last=drop_last)
    sampler.set_epoch(epoch)
    samples: list[Any] = []
    for batch in DataLoader(data, batch_size=2, sampler=sampler):
        samples.extend(decollate_batch(batch))
    return samples, sampler


def _summary(samples: list[dict[str, Any]] | None) -> list[tuple[int, str, float]] | None:
    if samples is None:
        return None
    return [(s["index"], s["name"], float(s["image"][0, 0])) for s in samples]


def _metatensor_samples(rank: int) -> list[tuple[int, str, bool, float]] | None:
    try:
        from monai.data import MetaTensor, list_data_collate
    except ModuleNotFoundError:  # MONAI is optional (hotloop[monai])
        return None

    mine = [0, 2] if rank == 0 else [1, 3, 4]  # different batch sizes on the two ranks
    batch = list_data_collate([MetaTensor(torch.full((1, 2), float(i)), meta={"i": i}) for i in mine])
    got = gather_samples(decollate_batch(batch), indices=mine)
    assert got is not None
    return [(s.meta["i"], type(s).__name__, s.is_batch, float(s.sum())) for s in got]


def run(rank: int) -> dict[Any, Any]:
    results: dict[Any, Any] = {}
    for size in DATASET_SIZES:
        for shuffle in (False, True):
            samples, sampler = _epoch(size, shuffle)
            results["local", size, shuffle] = len(samples)
            results["sampler", size, shuffle] = _summary(gather_samples(samples, sampler=sampler))
    samples, sampler = _epoch(7, shuffle=True, epoch=3)
    results["epoch3"] = _summary(gather_samples(samples, sampler=sampler))
    samples, sampler = _epoch(7, shuffle=False, drop_last=True)
    results["drop_last"] = _summary(gather_samples(samples, sampler=sampler))
    samples, sampler = _epoch(7, shuffle=True)
    results["dst"] = _summary(gather_samples(samples, sampler=sampler, dst=1))
    mine = [0, 1, 2] if rank == 0 else [6, 5, 4, 3, 2]  # uneven, index 2 on both ranks
    got = gather_samples([{"index": i, "rank": rank} for i in mine], indices=torch.tensor(mine))
    results["indices"] = [(s["index"], s["rank"]) for s in got or []]
    results["metatensor"] = _metatensor_samples(rank)
    return results


def main(argv: list[str]) -> None:
    idist.initialize("gloo")
    try:
        results = run(idist.get_rank())
        results["world"] = (idist.get_rank(), idist.get_world_size(), idist.backend())
    finally:
        idist.finalize()
    with open(argv[1], "wb") as file:
        pickle.dump(results, file)


if __name__ == "__main__":
    main(sys.argv)
