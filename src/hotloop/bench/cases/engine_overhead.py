"""Engine overhead: what the loop itself costs per iteration, around a no-op process function.

Scenarios:

- ``no_handlers``: ``list(range(N))`` through a step that returns ``None``, no handlers. ``raw`` is
  ``for batch in data: step(None, batch)``. Target: hotloop's overhead over ``raw`` at most 1/15 of Ignite's.
  ``lightning`` (when installed): Lightning's ``Trainer.fit`` around a no-op ``training_step`` with manual optimization,
  logger, checkpointing, progress bar and model summary off, its epoch timed from a callback (the set-up of each
  ``fit`` is not a per-iteration cost) over at most 2,000 iterations; hotloop's overhead is also stated against it.
- ``handlers``: the same with four handlers whose own work is nil — one on every ``ITERATION_COMPLETED``, one on
  ``ITERATION_COMPLETED(every=100)``, one on ``ITERATION_STARTED(once=50)``, one on ``EPOCH_COMPLETED``. ``raw`` is the
  hand-written loop calling the same no-ops inline; ``bare`` is the loop of ``no_handlers``, without them. The target
  (hotloop's overhead at most 1/5 of Ignite's) is taken over ``bare``, as the issue states it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from ignite.engine import Engine as IgniteEngine
from ignite.engine import Events

import hotloop

from . import Provider, Scenario
from ._training import LIGHTNING_UNAVAILABLE, lightning_noop

__all__ = ["SCENARIOS"]

_ITERATIONS = 100_000
_QUICK_ITERATIONS = 10_000
_EVERY = 100
_ONCE = 50


def _step(engine: object, batch: int) -> None:
    return None


def _on_iteration_completed(engine: object) -> None:
    return None


def _on_every_100(engine: object) -> None:
    return None


def _on_started_once_50(engine: object) -> None:
    return None


def _on_epoch_completed(engine: object) -> None:
    return None


def _bare_loop(iterations: int) -> Callable[[], None]:
    data = list(range(iterations))
    step = _step

    def run() -> None:
        for batch in data:
            step(None, batch)

    return run


def _hand_written_loop(iterations: int) -> Callable[[], None]:
    data = list(range(iterations))
    step = _step

    def run() -> None:
        for i, batch in enumerate(data, 1):
            if i == _ONCE:
                _on_started_once_50(None)
            step(None, batch)
            _on_iteration_completed(None)
            if i % _EVERY == 0:
                _on_every_100(None)
        _on_epoch_completed(None)

    return run


def _attach_handlers(engine: IgniteEngine) -> None:
    engine.add_event_handler(Events.ITERATION_COMPLETED, _on_iteration_completed)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=_EVERY), _on_every_100)
    engine.add_event_handler(Events.ITERATION_STARTED(once=_ONCE), _on_started_once_50)
    engine.add_event_handler(Events.EPOCH_COMPLETED, _on_epoch_completed)


def _engine_loop(engine_cls: type[IgniteEngine], with_handlers: bool) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        engine = engine_cls(_step)
        if with_handlers:
            _attach_handlers(engine)
        # A finished engine restarts from iteration 0 on the next ``run``, so one engine serves every round.
        return partial(engine.run, list(range(iterations)), max_epochs=1)

    return build


def _without_handlers() -> dict[str, Provider]:
    providers = {
        "raw": _bare_loop,
        "ignite": _engine_loop(IgniteEngine, with_handlers=False),
        "hotloop": _engine_loop(hotloop.Engine, with_handlers=False),
    }
    if not LIGHTNING_UNAVAILABLE:
        providers["lightning"] = lightning_noop(torch.device("cpu"))
    return providers


_NO_HANDLERS = _without_handlers()

SCENARIOS: list[Scenario] = [
    Scenario(
        name="no_handlers",
        description="no-op step over list(range(N)), no handlers"
        + ("; Lightning: not installed" if LIGHTNING_UNAVAILABLE else ""),
        iterations=_ITERATIONS,
        quick_iterations=_QUICK_ITERATIONS,
        providers=_NO_HANDLERS,
        target=15.0,
        also=tuple(name for name in _NO_HANDLERS if name == "lightning"),
    ),
    Scenario(
        name="handlers",
        description="no-op step, no-op handlers on ITERATION_COMPLETED, (every=100), ITERATION_STARTED(once=50), "
        "EPOCH_COMPLETED",
        iterations=_ITERATIONS,
        quick_iterations=_QUICK_ITERATIONS,
        providers={
            "bare": _bare_loop,
            "raw": _hand_written_loop,
            "ignite": _engine_loop(IgniteEngine, with_handlers=True),
            "hotloop": _engine_loop(hotloop.Engine, with_handlers=True),
        },
        baseline="bare",
        target=5.0,
    ),
]
