"""``PreemptionHandler`` in-process: main-thread check, terminate after the iteration, handler restored; and on two
gloo ranks, where the ranks agree on the iteration to stop after.

(The end-to-end SIGTERM to a subprocess, saved and resumed, is in test_resume.py; to every worker of a ``torchrun``
job, in tests/distributed/test_elastic.py.)"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from _gloo_ranks import run_on_two_ranks

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


def test_a_repeated_signal_while_stopping_is_ignored():
    # torchrun's agent forwards the SIGTERM it got to workers that SLURM signalled already: not a reason to die.
    previous = signal.getsignal(signal.SIGUSR1)
    engine = Engine(lambda e, b: None)
    handler = PreemptionHandler(signals=(signal.SIGUSR1,)).attach(engine)
    twice = [lambda e: os.kill(os.getpid(), signal.SIGUSR1)] * 2
    for send in twice:
        engine.add_event_handler(Events.ITERATION_STARTED(once=3), send)
    engine.run(range(10))
    assert engine.state.iteration == 3 and handler.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_a_second_sigint_goes_to_the_previous_handler():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own: KeyboardInterrupt
    try:
        engine = Engine(lambda e, b: None)
        PreemptionHandler(signals=(signal.SIGINT,)).attach(engine)
        for _ in range(2):
            engine.add_event_handler(Events.ITERATION_STARTED(once=2), lambda e: os.kill(os.getpid(), signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):
            engine.run(range(10))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("check_every", "error"), [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_check_every_is_checked(check_every, error):
    with pytest.raises(error, match="check_every"):
        PreemptionHandler(check_every=check_every)


_TWO_RANKS = """
import signal
from hotloop import Engine, Events
from hotloop.reliability import PreemptionHandler

result = []
for check_every in (1, 3):
    engine = Engine(lambda e, b: None)
    handler = PreemptionHandler(signals=(signal.SIGUSR1,), check_every=check_every).attach(engine)
    if rank == 1:  # only rank 1 is signalled, during iteration 2
        engine.add_event_handler(Events.ITERATION_STARTED(once=2), lambda e: os.kill(os.getpid(), signal.SIGUSR1))
    engine.run(range(10))
    result.append([check_every, engine.state.iteration, handler.received, handler.stopped])
"""


def test_in_a_process_group_every_rank_stops_after_the_same_iteration(tmp_path):
    ranks = run_on_two_ranks(_TWO_RANKS, tmp_path)
    expected = [[1, 2, signal.SIGUSR1, True], [3, 3, signal.SIGUSR1, True]]  # the first agreement at or after 2
    assert ranks == [expected, expected]  # rank 0, never signalled itself, stops with rank 1
