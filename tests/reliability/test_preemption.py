"""``PreemptionHandler`` in-process: main-thread check, terminate after the iteration, handler restored.

(The end-to-end SIGTERM to a subprocess, saved and resumed, is in test_resume.py.)"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from hotloop import Engine, Events
from hotloop.reliability import PreemptionHandler


def test_signal_terminates_after_the_iteration_and_restores_the_previous_handler():
    previous = signal.getsignal(signal.SIGUSR1)
    events = []
    engine = Engine(lambda e, b: events.append(("step", e.state.iteration)))
    handler = PreemptionHandler(signals=(signal.SIGUSR1,)).attach(engine)
    engine.add_event_handler(Events.ITERATION_STARTED(once=3), lambda e: os.kill(os.getpid(), signal.SIGUSR1))
    engine.add_event_handler(Events.TERMINATE, lambda e: events.append(("terminate", e.state.iteration)))
    engine.run(range(10), max_epochs=2)
    assert events[-2:] == [("step", 3), ("terminate", 3)]  # iteration 3 ran to its end, then TERMINATE
    assert handler.stopped and handler.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_main_thread_only():
    errors = []

    def attach():
        try:
            PreemptionHandler().attach(Engine(lambda e, b: None))
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=attach)
    thread.start()
    thread.join(timeout=30)
    assert errors and "only in the main thread" in errors[0]


def test_arguments_checked():
    with pytest.raises(TypeError, match="signal numbers"):
        PreemptionHandler(signals=())
    with pytest.raises(TypeError, match="expects an ignite/hotloop Engine"):
        PreemptionHandler().attach(object())  # type: ignore[arg-type]


def test_context_manager_restores_after_an_exception():
    previous = signal.getsignal(signal.SIGUSR2)

    def boom(engine, batch):
        raise KeyError("x")

    with pytest.raises(KeyError), PreemptionHandler(signals=(signal.SIGUSR2,)) as handler:
        handler.attach(engine := Engine(boom))
        engine.run([1])
    assert signal.getsignal(signal.SIGUSR2) is previous
