"""``hotloop.distributed.initialize`` and ``Parallel``: the bounded timeout, and the namespace each ``torchrun``
attempt agrees on in the agent's store, which still holds the keys of the attempts before it.

The agreement runs here on threads against a real ``TCPStore``; the restarts themselves, with real processes under
``torchrun``, are in ``test_elastic.py``.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import ignite.distributed as idist
import pytest
import torch
import torch.distributed as dist

import hotloop.distributed as hd
from hotloop.distributed import DEFAULT_TIMEOUT, Parallel, initialize

_ROUND = "hotloop/elastic/round"


@pytest.fixture
def agent_store():
    """What torchrun's agent hosts: a TCP store server that outlives the workers."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30))
    yield server


def _client(server: dist.TCPStore) -> dist.TCPStore:
    return dist.TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=30))


def _join(server: dist.TCPStore, ranks: list[int], world_size: int, delays: dict[int, float], budget_s: float = 20):
    """Runs ``_agree_on_round`` for ``ranks`` on threads (rank r starts after ``delays[r]`` s); token or error each."""
    outcome: dict[int, Any] = {}

    def rank_main(rank: int) -> None:
        time.sleep(delays.get(rank, 0.0))
        try:
            outcome[rank] = hd._agree_on_round(_client(server), rank, world_size, time.monotonic() + budget_s)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome[rank] = exc

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in ranks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcome


def _leave_a_finished_attempt(server: dist.TCPStore, world_size: int) -> str:
    """The keys a completed attempt leaves behind, with nonces no live rank has."""
    old = "0" * 32
    server.set(_ROUND, old)
    server.set(f"{_ROUND}/{old}/members", json.dumps({str(r): f"dead{r}" for r in range(1, world_size)}))
    for rank in range(1, world_size):
        server.set(f"{_ROUND}/{old}/hello/{rank}", f"dead{rank}")
    return old


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_that_read_a_finished_attempts_token_wait_for_the_new_one(agent_store, world_size):
    old = _leave_a_finished_attempt(agent_store, world_size)
    late_rank0 = {0: 0.5}  # the others read the old token first
    outcome = _join(agent_store, list(range(world_size)), world_size, late_rank0)
    tokens = set(outcome.values())
    assert len(tokens) == 1 and old not in tokens and all(isinstance(t, str) for t in tokens)


def test_a_token_whose_rank_zero_died_before_admitting_anyone_is_left_behind(agent_store):
    agent_store.set(_ROUND, "1" * 32)  # an attempt whose rank 0 published its token, then died
    outcome = _join(agent_store, [0, 1], 2, {0: 0.5})
    assert outcome[0] == outcome[1] != "1" * 32


def test_every_call_agrees_on_a_new_token(agent_store):
    first = _join(agent_store, [0, 1], 2, {})
    second = _join(agent_store, [0, 1], 2, {1: 0.2})
    assert first[0] == first[1] != second[0] == second[1]


@pytest.mark.parametrize("present", [[0], [1]], ids=["rank1-missing", "rank0-missing"])
def test_a_missing_rank_is_a_timeout_error(agent_store, present):
    outcome = _join(agent_store, present, 2, {}, budget_s=0.5)
    (error,) = outcome.values()
    assert isinstance(error, TimeoutError) and "did not all join the process group within the timeout" in str(error)


def test_under_torchrun_the_process_group_lives_in_the_agreed_namespace(agent_store, monkeypatch):
    # One rank as torchrun starts it (the agent's store, no attempt prefix), twice, as after a restart.
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent_store.port)}
    for name, value in {**env, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    tokens = []
    for _ in range(2):
        initialize("gloo", timeout=10)
        try:
            assert (idist.backend(), idist.get_world_size(), idist.get_rank()) == ("gloo", 1, 0)
            gloo = dist.group.WORLD._get_backend(torch.device("cpu"))  # type: ignore[union-attr]
            assert gloo.options._timeout == timedelta(seconds=10)  # what a collective waits for
            tokens.append(agent_store.get(_ROUND).decode())
            tensor = torch.ones(1)
            dist.all_reduce(tensor)
        finally:
            idist.finalize()
    assert tokens[0] != tokens[1]
    assert idist.get_world_size() == 1 and not dist.is_initialized()


def test_elsewhere_it_is_idist_initialize_with_the_timeout(monkeypatch):
    calls = []
    monkeypatch.setattr(hd.idist, "initialize", lambda backend, **kwargs: calls.append((backend, kwargs)))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    initialize("gloo")
    initialize("nccl", timeout=timedelta(seconds=90), init_method="env://")
    initialize("xla-tpu")  # not a native backend: its own timeouts
    torchrun = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for name, value in {**torchrun, "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    initialize("gloo", rank=0, world_size=1)  # under torchrun, but the caller says how to set up
    assert calls == [
        ("gloo", {"timeout": DEFAULT_TIMEOUT}),
        ("nccl", {"timeout": timedelta(seconds=90), "init_method": "env://"}),
        ("xla-tpu", {}),
        ("gloo", {"timeout": DEFAULT_TIMEOUT, "rank": 0, "world_size": 1}),
    ]


_BAD_TIMEOUTS = [("60", TypeError), (True, TypeError), (0, ValueError), (-1.0, ValueError)]


@pytest.mark.parametrize(("timeout", "error"), _BAD_TIMEOUTS)
def test_timeout_is_checked(timeout, error):
    with pytest.raises(error, match="timeout"):
        initialize("gloo", timeout=timeout)
    with pytest.raises(error, match="timeout"):
        Parallel(backend="gloo", timeout=timeout)


def test_parallel_passes_the_timeout_to_the_processes_it_spawns():
    parallel = Parallel(backend="gloo", nproc_per_node=2, timeout=5)
    assert parallel.timeout == timedelta(seconds=5)
    assert parallel._spawn_params is not None and parallel._spawn_params["timeout"] == timedelta(seconds=5)
    assert Parallel().timeout == DEFAULT_TIMEOUT == timedelta(minutes=10)


def test_parallel_without_a_backend_runs_one_process():
    seen = []
    with Parallel(backend=None) as parallel:
        parallel.run(lambda local_rank, x: seen.append((local_rank, x, idist.get_world_size())), "config")
    assert seen == [(0, "config", 1)]


def test_initialize_registers_the_exit_pause_once(monkeypatch):
    # At exit, gloo's worker threads may still need the GIL to drop finished work; see hotloop.distributed._drain.
    registered = []
    monkeypatch.setattr(hd.atexit, "register", registered.append)
    monkeypatch.setattr(hd.idist, "initialize", lambda backend, **kwargs: None)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    hd._drain_at_exit.cache_clear()
    try:
        initialize("gloo")
        initialize("gloo")
    finally:
        hd._drain_at_exit.cache_clear()  # registered for real again by the next initialize of this process
    assert registered == [hd._drain]
