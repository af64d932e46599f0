"""``hotloop.collate.gather_samples``: every sample once, in dataset order, across real DDP ranks.

The two-rank test starts two Python processes on the ``gloo`` backend (CPU) running ``_ddp_worker.py``, with a
timeout, and checks what each rank got back; the single-process tests cover the argument checks on Ignite's serial
model (no process group), where the gather is the identity.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ignite.distributed.auto import DistributedProxySampler
from torch.utils.data import DistributedSampler, SequentialSampler

from hotloop.collate import gather_samples

_WORKER = Path(__file__).with_name("_ddp_worker.py")
_TIMEOUT_S = 240  # two cold Python processes importing torch on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_two_ranks(tmp_path: Path) -> list[dict[Any, Any]]:
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    outputs = [tmp_path / f"rank{rank}.pkl" for rank in range(2)]
    logs = [tmp_path / f"rank{rank}.log" for rank in range(2)]
    processes = []
    for rank in range(2):
        env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        with open(logs[rank], "wb") as log:
            command = [sys.executable, str(_WORKER), str(outputs[rank])]
            processes.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [process.wait(timeout=_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for rank, code in enumerate(codes):
        assert code == 0, f"rank {rank} exited with {code}:\n{logs[rank].read_text(errors='replace')[-4000:]}"
    return [pickle.loads(path.read_bytes()) for path in outputs]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict[Any, Any]]:
    return _run_two_ranks(tmp_path_factory.mktemp("ddp"))


def _expected(size: int) -> list[tuple[int, str, float]]:
    return [(i, f"s{i}", float(i)) for i in range(size)]


def test_two_ranks_ran_on_gloo(two_ranks):
    assert [results["world"] for results in two_ranks] == [(0, 2, "gloo"), (1, 2, "gloo")]


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("size", [6, 7, 1, 9])
def test_every_sample_once_in_dataset_order_on_every_rank(two_ranks, size, shuffle):
    padded = -(-size // 2)  # what each rank evaluated, DistributedSampler's repeats included
    for results in two_ranks:
        assert results["local", size, shuffle] == padded
        assert results["sampler", size, shuffle] == _expected(size)


def test_later_epochs_drop_last_and_dst(two_ranks):
    for results in two_ranks:
        assert results["epoch3"] == _expected(7)
        assert results["drop_last"] == _expected(6)  # drop_last cuts the tail: nothing repeated, nothing to drop
    assert two_ranks[0]["dst"] is None and two_ranks[1]["dst"] == _expected(7)


def test_indices_with_different_counts_per_rank_and_a_shared_index(two_ranks):
    expected = [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (6, 1)]  # index 2 kept once, from rank 0
    assert two_ranks[0]["indices"] == two_ranks[1]["indices"] == expected


def test_metatensor_samples_arrive_with_their_metadata(two_ranks):
    if two_ranks[0]["metatensor"] is None:
        pytest.skip("MONAI is not installed (hotloop[monai])")
    expected = [(i, "MetaTensor", False, 2.0 * i) for i in range(5)]
    assert two_ranks[0]["metatensor"] == two_ranks[1]["metatensor"] == expected


# ---------------------------------------------------------------------------------------------------------------
# One process: Ignite's serial model


def test_indices_are_sorted_and_deduplicated():
    samples = ["c", "a", "b", "a-again"]
    assert gather_samples(samples, indices=[2, 0, 1, 0]) == ["a", "b", "c"]
    assert gather_samples(samples, indices=torch.tensor([2, 0, 1, 0])) == ["a", "b", "c"]
    assert gather_samples(samples, indices=np.array([2, 0, 1, 0])) == ["a", "b", "c"]
    assert gather_samples([], indices=[]) == []


def test_a_sampler_of_one_replica_gives_dataset_order():
    data = list(range(5))
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    samples = [f"out{i}" for i in sampler]
    assert gather_samples(samples, sampler=sampler) == [f"out{i}" for i in data]
    assert gather_samples(samples, sampler=sampler, dst=0) == [f"out{i}" for i in data]


def test_a_proxy_sampler_leaves_the_random_state_alone():
    proxy = DistributedProxySampler(SequentialSampler(range(4)), num_replicas=1, rank=0)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    assert gather_samples(list("abcd"), sampler=proxy) == list("abcd")
    assert torch.equal(torch.get_rng_state(), state)


class _Contiguous(DistributedSampler):
    def __iter__(self):
        return iter(range(len(self.dataset)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "exactly one of sampler= and indices="),
        ({"indices": [0], "sampler": DistributedSampler([0], num_replicas=1, rank=0)}, ValueError, "exactly one"),
        ({"indices": [0, 1]}, ValueError, "got 1 samples but 2 indices"),
        ({"indices": [0], "dst": 1}, ValueError, r"dst must be a rank in \[0, 1\) or None, got 1"),
        ({"indices": [True]}, TypeError, "indices must be integers, got True"),
        ({"indices": ["0"]}, TypeError, "indices must be integers, got '0'"),
        ({"sampler": list(range(1))}, TypeError, "sampler must be a DistributedSampler, got list"),
        ({"sampler": _Contiguous([0], num_replicas=1, rank=0)}, TypeError, "overrides DistributedSampler.__iter__"),
        ({"sampler": DistributedSampler([0, 1], num_replicas=2, rank=1)}, ValueError, "built for rank 1 of 2"),
        ({"sampler": DistributedSampler([0, 1], num_replicas=1, rank=0)}, ValueError, "sampler gives it 2 indices"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        gather_samples(["only"], **kwargs)
