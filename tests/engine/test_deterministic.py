"""Differential tests: ``hotloop.DeterministicEngine`` synchronises the dataflow exactly as Ignite's does.

Each scenario runs on ``ignite.engine.DeterministicEngine`` (the reference) and on ``hotloop.DeterministicEngine``
with the same seed (``ignite.utils.manual_seed``); the batches seen, the random numbers drawn by the process
function, the engine state and ``state_dict()`` must be identical.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

import ignite.engine
import ignite.engine.deterministic
import numpy as np
import pytest
import torch
from ignite.engine import Events
from ignite.utils import manual_seed
from torch.utils.data import DataLoader, IterableDataset

import hotloop

IgniteDeterministic = ignite.engine.DeterministicEngine
HotloopDeterministic = hotloop.DeterministicEngine
ENGINES = (IgniteDeterministic, HotloopDeterministic)
SEED = 56

LOOPS = pytest.mark.parametrize("legacy", [False, True], ids=["generator_loop", "legacy_loop"])


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    # Tiny tensors: intra-op threads only add waiting on a busy machine. Results do not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- helpers --------------------------------------------------------------------------------------------------------


def run_both(scenario: Callable[..., Any], **kwargs: Any) -> tuple[Any, Any]:
    """The scenario's result on Ignite's engine and on hotloop's, in that order."""
    return scenario(IgniteDeterministic, **kwargs), scenario(HotloopDeterministic, **kwargs)


def run(engine: Any, data: Any, legacy: bool = False, **kwargs: Any) -> Any:
    """``engine.run`` on the chosen loop; for hotloop, also checks that the fast loop (not Ignite's) ran."""
    engine.interrupt_resume_enabled = not legacy
    state = engine.run(data, **kwargs)
    assert getattr(engine, "_hl_faithful", False) is False, "hotloop fell back to Ignite's loop: nothing was compared"
    return state


def shuffled_loader(size: int = 40, batch_size: int = 4, drop_last: bool = False) -> DataLoader:
    return DataLoader(torch.arange(0, size), batch_size=batch_size, shuffle=True, drop_last=drop_last)


def as_list(batch: Any) -> Any:
    return batch.tolist() if isinstance(batch, torch.Tensor) else batch


def recording_step(log: list, draw: bool = False) -> Callable:
    """A process function that records ``(epoch, iteration, batch)``, and optionally a random "augmentation"."""

    def step(engine: Any, batch: Any) -> None:
        entry: tuple = (engine.state.epoch, engine.state.iteration, as_list(batch))
        if draw:
            entry += (torch.rand(1).item(), random.random(), float(np.random.rand()))
        log.append(entry)

    return step


class RandomIterable:
    """A plain (non-DataLoader) iterable with a length, whose items are drawn from torch's global generator."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.length):
            yield torch.randint(0, 1000, (3,)).tolist()


class RandomStream(IterableDataset):
    """An iterable-style dataset: a DataLoader over it cannot get a ReproducibleBatchSampler."""

    def __init__(self, length: int | None) -> None:
        self.length = length

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"object of type '{type(self).__name__}' has no len()")
        return self.length

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = 0
        while self.length is None or n < self.length:
            n += 1
            yield torch.randint(0, 1000, (2,))


def random_generator() -> Iterator[torch.Tensor]:
    while True:
        yield torch.randint(0, 100, size=(1,))


def same_rng_states(ref: list, got: list) -> bool:
    """``rng_states`` of ``state_dict()``: ``[random state, torch state, numpy state]``."""
    (r_py, r_torch, r_np), (g_py, g_torch, g_np) = ref, got
    np_equal = r_np[0] == g_np[0] and np.array_equal(r_np[1], g_np[1]) and tuple(r_np[2:]) == tuple(g_np[2:])
    return r_py == g_py and torch.equal(r_torch, g_torch) and np_equal


# -- identity -------------------------------------------------------------------------------------------------------


def test_is_both_ignites_deterministic_engine_and_hotloops_engine() -> None:
    engine = HotloopDeterministic(lambda e, b: None)
    assert isinstance(engine, IgniteDeterministic)
    assert isinstance(engine, hotloop.Engine)
    assert isinstance(engine, ignite.engine.Engine)
    assert issubclass(HotloopDeterministic, IgniteDeterministic) and issubclass(HotloopDeterministic, hotloop.Engine)
    reference = IgniteDeterministic(lambda e, b: None)
    assert engine.state_dict_user_keys == reference.state_dict_user_keys == ["rng_states"]
    assert engine.state.rng_states is None


@pytest.mark.parametrize("name", ["keep_random_state", "update_dataloader"])
def test_helpers_are_ignites(name: str) -> None:
    original = getattr(ignite.engine.deterministic, name)
    assert getattr(hotloop, name) is original
    assert getattr(hotloop.engine, name) is original
    assert name in hotloop.__all__


def test_reproducible_batch_sampler_is_a_subclass_of_ignites() -> None:
    # hotloop's adds prime() (mid-epoch resume, docs/differences.md); isinstance checks against Ignite's still hold.
    assert issubclass(hotloop.ReproducibleBatchSampler, ignite.engine.deterministic.ReproducibleBatchSampler)
    assert hotloop.engine.ReproducibleBatchSampler is hotloop.ReproducibleBatchSampler
    assert "ReproducibleBatchSampler" in hotloop.__all__


def test_data_none_raises_ignites_error() -> None:
    messages = []
    for cls in ENGINES:
        engine = cls(lambda e, b: None)
        with pytest.raises(ValueError, match="Deterministic engine does not support the option of data=None") as info:
            engine.run(None, max_epochs=1, epoch_length=3)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


# -- dataflow synchronisation ---------------------------------------------------------------------------------------


def _shuffled_run(
    engine_cls: type, batch_size: int, drop_last: bool, epoch_length: int | None, legacy: bool
) -> dict[str, Any]:
    log: list = []
    engine = engine_cls(recording_step(log, draw=True))
    manual_seed(SEED)
    run(engine, shuffled_loader(40, batch_size, drop_last), legacy, max_epochs=3, epoch_length=epoch_length)
    return {
        "log": log,
        "seed": engine.state.seed,
        "patched": type(engine.state.dataloader.batch_sampler).__name__,
        "state": (engine.state.epoch, engine.state.iteration, engine.state.epoch_length),
    }


@LOOPS
@pytest.mark.parametrize(
    "batch_size,drop_last,epoch_length", [(4, False, None), (6, False, None), (6, True, None), (4, False, 7)]
)
def test_shuffled_dataloader_batches_per_epoch(
    batch_size: int, drop_last: bool, epoch_length: int | None, legacy: bool
) -> None:
    ref, got = run_both(
        _shuffled_run, batch_size=batch_size, drop_last=drop_last, epoch_length=epoch_length, legacy=legacy
    )
    assert ref["patched"] == "ReproducibleBatchSampler"
    epochs = [[b for e, _, b, *_ in ref["log"] if e == n] for n in (1, 2, 3)]
    assert epochs[0] != epochs[1] != epochs[2]  # it does shuffle, differently per epoch
    if epoch_length is None:
        seen = [i for batch in epochs[0] for i in batch]
        expected = 40 // batch_size * batch_size if drop_last else 40
        assert len(seen) == len(set(seen)) == expected  # one epoch: each sample at most once
    assert got == ref


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    ref, got = run_both(_shuffled_run, batch_size=4, drop_last=False, epoch_length=None, legacy=False)
    manual_seed(SEED + 1)
    log: list = []
    HotloopDeterministic(recording_step(log)).run(shuffled_loader(), max_epochs=3)
    assert [b for _, _, b, *_ in got["log"]] == [b for _, _, b, *_ in ref["log"]]
    assert [b for _, _, b in log] != [b for _, _, b, *_ in ref["log"]]


def _docs_scenario(engine_cls: type) -> tuple[list, list]:
    # Ignite's "Deterministic training" docs: run 2 epochs, then resume the 2nd epoch from a bare state dict.
    log: list = []
    trainer = engine_cls(recording_step(log))
    manual_seed(SEED)
    run(trainer, shuffled_loader(40), max_epochs=2, epoch_length=5)
    original = list(log)
    log.clear()
    trainer.load_state_dict({"epoch": 1, "epoch_length": 5, "max_epochs": 2, "rng_states": None})
    manual_seed(SEED)
    run(trainer, shuffled_loader(40))
    return original, list(log)


def test_docs_resume_from_epoch() -> None:
    (ref_original, ref_resumed), (got_original, got_resumed) = run_both(_docs_scenario)
    assert [(e, i) for e, i, _ in ref_original] == [(1, i) for i in range(1, 6)] + [(2, i) for i in range(6, 11)]
    assert ref_resumed == ref_original[5:]
    assert got_original == ref_original
    assert got_resumed == ref_resumed


def _resume_run(
    save_cls: type, load_cls: type, data_fn: Callable, at: int, keep_rng: bool, epoch_length: int | None = None
) -> dict[str, Any]:
    """An uninterrupted run that snapshots ``state_dict()`` at iteration ``at``; a fresh engine resumed from it."""
    log: list = []
    engine = save_cls(recording_step(log, draw=True))
    saved: dict = {}
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=at), lambda e: saved.update(state_dict=copy.deepcopy(e.state_dict()))
    )
    manual_seed(SEED)
    run(engine, data_fn(), max_epochs=3, epoch_length=epoch_length)
    full = list(log)

    state_dict = saved["state_dict"]
    if not keep_rng:
        state_dict["rng_states"] = None
    log.clear()
    resumed_engine = load_cls(recording_step(log, draw=True))
    resumed_engine.load_state_dict(state_dict)
    loaded = (resumed_engine.state.epoch, resumed_engine.state.iteration, resumed_engine.state.epoch_length)
    manual_seed(SEED)
    run(resumed_engine, data_fn())
    return {"full": full, "resumed": list(log), "loaded": loaded, "state_dict": state_dict}


@pytest.mark.parametrize("load_cls", ENGINES, ids=["load_ignite", "load_hotloop"])
@pytest.mark.parametrize("save_cls", ENGINES, ids=["save_ignite", "save_hotloop"])
@pytest.mark.parametrize("at", [3, 7, 10, 13])
def test_resume_dataloader_mid_epoch(at: int, save_cls: type, load_cls: type) -> None:
    ref = _resume_run(IgniteDeterministic, IgniteDeterministic, shuffled_loader, at, keep_rng=False)
    got = _resume_run(save_cls, load_cls, shuffled_loader, at, keep_rng=False)
    assert ref["loaded"] == (at // 10, at, 10)
    # the remaining batches are those of the uninterrupted run (random draws in the step are not restored)
    assert [b[:3] for b in ref["resumed"]] == [b[:3] for b in ref["full"][at:]]
    assert got["full"] == ref["full"]
    assert got["loaded"] == ref["loaded"]
    assert got["resumed"] == ref["resumed"]


@pytest.mark.parametrize("load_cls", ENGINES, ids=["load_ignite", "load_hotloop"])
@pytest.mark.parametrize("at", [3, 10, 13])
def test_resume_dataloader_with_saved_rng_states(at: int, load_cls: type) -> None:
    # With rng_states kept, a hotloop engine resumed in the middle of an epoch replays the uninterrupted run exactly,
    # batches and random draws. Ignite 0.5.5 draws the resumed epoch's permutation after restoring the saved random
    # state, so its resumed epoch differs (docs/differences.md); at an epoch end both replay the uninterrupted run.
    ref = _resume_run(IgniteDeterministic, IgniteDeterministic, shuffled_loader, at, keep_rng=True)
    got = _resume_run(HotloopDeterministic, load_cls, shuffled_loader, at, keep_rng=True)
    assert same_rng_states(ref["state_dict"]["rng_states"], got["state_dict"]["rng_states"])
    assert {k: v for k, v in got["state_dict"].items() if k != "rng_states"} == {
        k: v for k, v in ref["state_dict"].items() if k != "rng_states"
    }
    assert got["full"] == ref["full"]
    if at % 10 == 0:
        assert ref["resumed"] == ref["full"][at:]
    if load_cls is HotloopDeterministic:
        assert got["resumed"] == got["full"][at:]
    else:
        assert got["resumed"] == ref["resumed"]


def workers_loader(num_workers: int) -> DataLoader:
    """17 shuffled batches of 4, as in Ignite's ``test_resume_random_dataloader_from_iter``."""
    return DataLoader(torch.arange(0, 68), batch_size=4, shuffle=True, num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 2], ids=["no_workers", "2_workers"])
@pytest.mark.parametrize(
    "at,epoch_length,keep_rng",
    [(2, None, False), (60, 60, False), (9, None, True)],
    ids=["iteration_2", "epoch_1_of_60_iterations", "iteration_9_rng_states"],
)
def test_resume_with_worker_processes(num_workers: int, at: int, epoch_length: int | None, keep_rng: bool) -> None:
    # Ignite's own resume cases (tests/ignite/engine/test_deterministic.py, from iteration 2 and from epoch 1 with an
    # epoch_length of 60 over 17 batches): a DataLoader with worker processes draws the epoch's indices inside iter()
    # (its workers prefetch), one without them at the first next(). Both must give Ignite's batches, which are those
    # of the uninterrupted run; the mid-epoch early draw (ReproducibleBatchSampler.prime) is for the second kind only.
    def data_fn() -> DataLoader:
        return workers_loader(num_workers)

    ref = _resume_run(IgniteDeterministic, IgniteDeterministic, data_fn, at, keep_rng, epoch_length)
    got = _resume_run(HotloopDeterministic, HotloopDeterministic, data_fn, at, keep_rng, epoch_length)
    assert len(got["full"]) == 3 * (epoch_length or 17)
    assert got["full"] == ref["full"]
    assert [b[:3] for b in got["resumed"]] == [b[:3] for b in got["full"][at:]]
    if keep_rng:  # the saved random state is restored: the step's own draws replay the uninterrupted run's too
        assert got["resumed"] == got["full"][at:]
    if not (keep_rng and num_workers == 0):  # there Ignite 0.5.5 reorders the resumed epoch (docs/differences.md)
        assert got["resumed"] == ref["resumed"]


def test_indices_primed_for_a_run_that_never_iterated_are_not_reused() -> None:
    # A run resumed mid-epoch and terminated before its first batch leaves no stale indices behind: the next run of
    # the same engine and DataLoader, from an epoch start, gets the epoch a fresh engine gets (the uninterrupted
    # run's). Ignite 0.5.5 keeps the aborted run's start_iteration and drops that epoch's first 3 batches.
    def resume_from_epoch_1(engine: Any, loader: DataLoader) -> list:
        log: list = []
        engine._process_function = recording_step(log)
        engine.load_state_dict({"epoch": 1, "epoch_length": 17, "max_epochs": 2, "rng_states": None})
        manual_seed(SEED)
        run(engine, loader)
        return log

    engine = HotloopDeterministic(lambda e, b: None)
    stop = engine.add_event_handler(Events.GET_BATCH_STARTED, lambda e: e.terminate())
    engine.load_state_dict({"iteration": 3, "epoch_length": 17, "max_epochs": 1, "rng_states": None})
    manual_seed(SEED)
    run(engine, workers_loader(0))
    assert engine.state.iteration == 3
    stop.remove()
    got = resume_from_epoch_1(engine, engine.state.dataloader)
    fresh = resume_from_epoch_1(IgniteDeterministic(lambda e, b: None), workers_loader(0))
    assert [i for _, i, _ in fresh] == list(range(18, 35))
    assert got == fresh


@pytest.mark.parametrize("keep_rng", [True, False], ids=["rng_states", "no_rng_states"])
@pytest.mark.parametrize("at", [2, 7, 10])
def test_resume_plain_iterable(at: int, keep_rng: bool) -> None:
    def data_fn() -> RandomIterable:
        return RandomIterable(5)

    ref = _resume_run(IgniteDeterministic, IgniteDeterministic, data_fn, at, keep_rng)
    got = _resume_run(HotloopDeterministic, HotloopDeterministic, data_fn, at, keep_rng)
    cross = _resume_run(IgniteDeterministic, HotloopDeterministic, data_fn, at, keep_rng)
    assert len(ref["resumed"]) == 15 - at
    epochs = [[b for e, _, b, *_ in ref["full"] if e == n] for n in (1, 2, 3)]
    assert epochs[0] != epochs[1] != epochs[2]
    if keep_rng and at % 5:  # mid-epoch with the saved random state: the uninterrupted run, draws included
        assert ref["resumed"] == ref["full"][at:]
    assert got["full"] == ref["full"]
    assert got["resumed"] == ref["resumed"]
    assert cross["resumed"] == ref["resumed"]


def _iterable_dataset_run(engine_cls: type, at: int) -> dict[str, Any]:
    return _resume_run(engine_cls, engine_cls, lambda: DataLoader(RandomStream(8), batch_size=2), at, keep_rng=False)


@pytest.mark.parametrize("at", [2, 4, 9])
def test_iterable_dataset_dataloader(at: int) -> None:
    ref, got = run_both(_iterable_dataset_run, at=at)
    assert len(ref["full"]) == 12 and len(ref["resumed"]) == 12 - at
    assert got == ref


def test_unsized_iterable_dataset_fails_like_ignite() -> None:
    # Ignite's DeterministicEngine calls len() on such a DataLoader and fails; hotloop must fail the same way.
    errors = []
    for cls in ENGINES:
        engine = cls(lambda e, b: None)
        with pytest.raises(TypeError) as info:
            engine.run(DataLoader(RandomStream(None), batch_size=2), max_epochs=2, epoch_length=3)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def _reseeding_handler_run(engine_cls: type, legacy: bool) -> list:
    # Ignite's docs: a handler that calls torch.manual_seed breaks the dataflow synchronisation in a known way.
    log: list = []
    trainer = engine_cls(recording_step(log))

    @trainer.on(Events.ITERATION_COMPLETED(every=3))
    def user_handler() -> None:
        torch.manual_seed(12)
        torch.rand(1)

    manual_seed(SEED)
    run(trainer, random_generator(), legacy, max_epochs=3, epoch_length=5)
    return log


@LOOPS
def test_reseeding_handler_as_in_docs(legacy: bool) -> None:
    ref, got = run_both(_reseeding_handler_run, legacy=legacy)
    batches = [b for _, _, b in ref]
    # the batch right after each reseed repeats, except where an epoch start reseeded first
    assert batches[3] == batches[6] == batches[9] == batches[12]
    assert len(ref) == 15
    assert got == ref


# -- terminate_epoch, interrupt, repeated runs ----------------------------------------------------------------------


def _terminate_epoch_run(engine_cls: type, legacy: bool) -> dict[str, Any]:
    log: list = []
    engine = engine_cls(recording_step(log, draw=True))
    events: list = []
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter: events.append(iter_counter))

    @engine.on(Events.ITERATION_COMPLETED)
    def stop_epoch(e: Any) -> None:
        if e.state.iteration in (3, 14):
            e.terminate_epoch()

    manual_seed(SEED)
    run(engine, shuffled_loader(), legacy, max_epochs=3)
    return {"log": log, "events": events, "state": (engine.state.epoch, engine.state.iteration)}


@LOOPS
def test_terminate_epoch_reseeds_like_ignite(legacy: bool) -> None:
    ref, got = run_both(_terminate_epoch_run, legacy=legacy)
    assert ref["events"] == [3, 1]  # iteration 14 is the first of epoch 3
    assert [i for e, i, *_ in ref["log"] if e == 2] == list(range(4, 14))
    assert ref["state"] == (3, 14)
    assert got == ref


def _interrupt_run(engine_cls: type, interrupt_at: tuple[int, ...]) -> dict[str, Any]:
    log: list = []
    engine = engine_cls(recording_step(log, draw=True))

    @engine.on(Events.ITERATION_COMPLETED)
    def maybe_interrupt(e: Any) -> None:
        if e.state.iteration in interrupt_at:
            e.interrupt()

    manual_seed(SEED)
    data = shuffled_loader()
    pauses = []
    state = run(engine, data, max_epochs=3)
    while state.iteration < 30:
        pauses.append((state.epoch, state.iteration))
        state = run(engine, data)
    return {
        "log": log,
        "pauses": pauses,
        "state_dict": {k: v for k, v in engine.state_dict().items() if k != "rng_states"},
    }


@pytest.mark.parametrize("interrupt_at", [(), (4,), (10, 11, 25)])
def test_interrupt_and_resume(interrupt_at: tuple[int, ...]) -> None:
    ref, got = run_both(_interrupt_run, interrupt_at=interrupt_at)
    uninterrupted = _interrupt_run(IgniteDeterministic, ())
    assert [(e, i) for e, i in ref["pauses"]] == [(i // 10 + (i % 10 > 0), i) for i in interrupt_at]
    assert [b[:3] for b in ref["log"]] == [b[:3] for b in uninterrupted["log"]]
    assert got == ref


def _repeated_runs(engine_cls: type) -> dict[str, Any]:
    log: list = []
    engine = engine_cls(recording_step(log))
    seeds = []
    state_dicts = []
    for seed in (1, 2, 1):
        manual_seed(seed)
        run(engine, shuffled_loader(12, 4), max_epochs=2)
        seeds.append(engine.state.seed)
        state_dicts.append(engine.state_dict())
    return {"log": log, "seeds": seeds, "state_dicts": state_dicts}


def test_repeated_runs_and_state_dict() -> None:
    ref, got = run_both(_repeated_runs)
    assert ref["seeds"][0] == ref["seeds"][2] != ref["seeds"][1]
    assert ref["log"][:6] == ref["log"][12:]
    assert got["log"] == ref["log"]
    assert got["seeds"] == ref["seeds"]
    for r, g in zip(ref["state_dicts"], got["state_dicts"]):
        assert list(r) == list(g)
        assert {k: v for k, v in r.items() if k != "rng_states"} == {k: v for k, v in g.items() if k != "rng_states"}
        assert same_rng_states(r["rng_states"], g["rng_states"])


def test_keep_random_state_and_update_dataloader() -> None:
    # Re-exported helpers work on a hotloop engine's dataloader exactly as on Ignite's.
    @hotloop.keep_random_state
    def draw() -> float:
        return torch.rand(1).item()

    manual_seed(SEED)
    first = draw()
    assert draw() == first  # the global state was kept

    loaders = []
    for cls in ENGINES:
        engine = cls(lambda e, b: None)
        manual_seed(SEED)
        engine.run(shuffled_loader(), max_epochs=1)
        sampler = engine.state.dataloader.batch_sampler
        assert isinstance(sampler, ignite.engine.deterministic.ReproducibleBatchSampler)
        replaced = hotloop.update_dataloader(
            engine.state.dataloader, hotloop.ReproducibleBatchSampler(sampler.batch_sampler)
        )
        manual_seed(SEED)
        loaders.append([b.tolist() for b in replaced])
    assert loaders[0] == loaders[1]
