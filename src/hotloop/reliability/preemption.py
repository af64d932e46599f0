"""Preemption-safe stop: finish the current iteration, fire the terminate events, return from ``run()``.

SLURM and Kubernetes send ``SIGTERM`` and, after a grace period, ``SIGKILL``. Python's default ``SIGTERM`` action
kills the process mid-step; :class:`PreemptionHandler` turns the signal into ``engine.terminate()`` at the end of
the current iteration, so handlers on ``Events.TERMINATE`` / ``Events.COMPLETED`` (a ``Checkpoint``) save a
consistent state and ``run()`` returns normally.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["PreemptionHandler"]

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def _check_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            f"PreemptionHandler {what} in thread {threading.current_thread().name!r}: Python installs signal handlers "
            "only in the main thread. Run the engine in the main thread, or call engine.terminate() yourself "
            "from a handler that watches your own stop flag."
        )


class PreemptionHandler:
    """Stop an engine cleanly when the process receives a signal (``SIGTERM`` by default).

    While a run is in progress the handler replaces the signals' handlers with one that only sets a flag; at the
    next ``ITERATION_COMPLETED`` the flag calls ``engine.terminate()``, so the iteration in flight finishes, then
    ``Events.TERMINATE`` and ``Events.COMPLETED`` fire and ``run()`` returns. ``state.iteration`` then counts
    exactly the iterations whose step has run, which is what a checkpoint must record to resume bit-exactly.
    The previous handlers are restored when the run completes, and by :meth:`restore` (also on leaving a ``with``
    block, for runs that end with an exception). A second signal while stopping goes to the previous handler
    (for ``SIGTERM`` by default: the process ends at once).

    Args:
        signals: the signals to catch.

    Raises:
        TypeError: if ``signals`` is empty or holds something that is not a signal number.

    Examples:
        .. code-block:: python

            checkpoint = Checkpoint(to_save, DiskSaver("ckpt", require_empty=False))
            trainer.add_event_handler(Events.ITERATION_COMPLETED(every=100) | Events.TERMINATE, checkpoint)
            preemption = PreemptionHandler().attach(trainer)
            trainer.run(loader, max_epochs=10)
            sys.exit(143 if preemption.stopped else 0)   # 128 + SIGTERM: the scheduler requeues
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)) -> None:
        self.signals = tuple(signals)
        valid = set(signal.Signals)
        if not self.signals or not all(isinstance(s, int) and s in valid for s in self.signals):
            raise TypeError(f"signals should be a non-empty sequence of signal numbers, got {signals!r}")
        self.received: int | None = None
        self._previous: dict[int, _SignalHandler] = {}

    @property
    def stopped(self) -> bool:
        """True when a caught signal has stopped (or is stopping) the run."""
        return self.received is not None

    def attach(self, engine: Engine) -> PreemptionHandler:
        """Attach to ``engine``: install at ``STARTED``, check after each iteration, restore at ``COMPLETED``.

        Args:
            engine: the engine to stop.

        Returns:
            self, for ``handler = PreemptionHandler().attach(trainer)``.

        Raises:
            TypeError: if ``engine`` is not an Ignite (or hotloop) ``Engine``.
            RuntimeError: if called outside the main thread.
        """
        if not isinstance(engine, Engine):
            raise TypeError(f"PreemptionHandler.attach expects an ignite/hotloop Engine, got {type(engine).__name__}")
        _check_main_thread("attached")
        engine.add_event_handler(Events.STARTED, self._install)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_terminate)
        engine.add_event_handler(Events.COMPLETED, self._on_completed)
        return self

    def _install(self, engine: Engine) -> None:
        _check_main_thread("started")
        self.received = None
        for signum in self.signals:
            if signum not in self._previous:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            return
        # A second signal while stopping: the user (or the scheduler) insists; hand it to the previous handler.
        self.restore()
        signal.raise_signal(signum)

    def _maybe_terminate(self, engine: Engine) -> None:
        if self.received is not None and not engine.should_terminate:
            engine.logger.warning(
                f"Received {signal.Signals(self.received).name}: terminating after iteration {engine.state.iteration}"
            )
            engine.terminate()

    def _on_completed(self, engine: Engine) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the signal handlers that were installed before this one (a no-op if none is installed)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def __enter__(self) -> PreemptionHandler:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.restore()
