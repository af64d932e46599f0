"""No leaks: 100,000 iterations with handlers attached and removed, and repeated ``run()`` calls, leave the
number of Python objects and the traced memory flat (in the spirit of Ignite's
``tests/ignite/engine/test_memory_leaks.py``)."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import torch

import hotloop
from hotloop import Events

_OBJECTS_BOUND = 100  # a few caches warm up (logging, weakref callbacks); a leak per iteration would be ~1e5
_BYTES_BOUND = 64 * 1024


def _counts() -> int:
    gc.collect()
    return len(gc.get_objects())


def _churning_engine() -> hotloop.Engine:
    engine = hotloop.Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=7), lambda e: None)

    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: None)

    @engine.on(Events.ITERATION_STARTED(every=10))
    def churn(e):
        # attach and remove handlers, filtered and plain, as handlers that come and go do (10,000 times per 100,000
        # iterations: every iteration would spend most of the test's time in add_event_handler under tracemalloc)
        handle = e.add_event_handler(Events.ITERATION_COMPLETED(once=e.state.iteration + 1), lambda _: None)
        handle.remove()
        e.add_event_handler(Events.GET_BATCH_COMPLETED, _noop)
        e.remove_event_handler(_noop, Events.GET_BATCH_COMPLETED)

    return engine


def _noop(engine):
    pass


def test_100k_iterations_with_handlers_attached_and_removed():
    engine = _churning_engine()
    engine.run(range(100), max_epochs=10)  # warm-up: first-time caches
    before = _counts()
    engine.state.max_epochs = None
    engine.run(range(1000), max_epochs=100)  # 100,000 iterations
    assert engine.state.iteration == 100_000
    assert _counts() - before < _OBJECTS_BOUND
    # tracemalloc slows the loop several times over: trace 10,000 more iterations (1,000 attach/remove rounds)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        engine.state.max_epochs = None
        engine.run(range(1000), max_epochs=10)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < _BYTES_BOUND


def test_repeated_runs_of_a_trainer():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = hotloop.create_supervised_trainer(model, optimizer, torch.nn.MSELoss(), no_sync=True)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: None)
    data = [(torch.randn(2, 4), torch.randn(2, 1)) for _ in range(5)]
    trainer.run(data, max_epochs=2)
    counts = []
    for _ in range(10):
        trainer.run(data, max_epochs=2)
        counts.append(_counts())
    assert max(counts) - min(counts) < _OBJECTS_BOUND // 4, counts


def test_engine_freed_without_collection():
    engine = _churning_engine()
    engine.run(range(10), max_epochs=2)
    ref = weakref.ref(engine)
    gc.disable()
    try:
        del engine
        assert ref() is None
    finally:
        gc.enable()
