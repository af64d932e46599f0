"""Preemption-safe stop: finish the current iteration, fire the terminate events, return from ``run()``.

SLURM and Kubernetes send ``SIGTERM`` and, after a grace period, ``SIGKILL``. Python's default ``SIGTERM`` action
kills the process mid-step; :class:`PreemptionHandler` turns the signal into ``engine.terminate()`` at the end of
the current iteration, so handlers on ``Events.TERMINATE`` / ``Events.COMPLETED`` (a ``Checkpoint``) save a
consistent state and ``run()`` returns normally.

In a process group the ranks stop at the same iteration (a scheduler signals every process, but not at the same
instant): after each iteration they agree, with one all-reduce of a flag on the CPU, whether any of them was
signalled, and all stop there, so that the checkpoint rank 0 writes is every rank's state.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
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
    block, for runs that end with an exception). A repeated signal while stopping is ignored: launchers and
    schedulers deliver ``SIGTERM`` twice as a matter of course (SLURM signals every process of the job, and
    ``torchrun``'s agent, signalled too, forwards its own ``SIGTERM`` to the workers) and force with ``SIGKILL``
    after their grace period. ``SIGINT`` is the exception: a second Ctrl-C goes to the previous handler.

    In a process group of several ranks, every rank attaches the handler and the ranks agree every
    ``check_every`` iterations whether one of them received a signal (a gloo all-reduce of one integer on the CPU:
    the default group's if it is gloo, else a gloo group created at ``STARTED``; no device synchronization); then
    all of them stop after that same iteration and ``received`` is set on every rank.

    Args:
        signals: the signals to catch.
        check_every: in a process group, agree every this many iterations (a larger value, fewer collectives;
            the stop comes up to ``check_every - 1`` iterations later). Ignored in one process.

    Raises:
        TypeError: if ``signals`` is empty or holds something that is not a signal number, or ``check_every`` is
            not an integer.
        ValueError: if ``check_every`` is smaller than 1.

    Examples:
        .. code-block:: python

            checkpoint = Checkpoint(to_save, DiskSaver("ckpt", require_empty=False))
            trainer.add_event_handler(Events.ITERATION_COMPLETED(every=100) | Events.TERMINATE, checkpoint)
            preemption = PreemptionHandler().attach(trainer)
            trainer.run(loader, max_epochs=10)
            sys.exit(143 if preemption.stopped else 0)   # 128 + SIGTERM: the scheduler requeues
            # (under torchrun, exit with 0 after a preemption too: a non-zero exit makes it restart the group)
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,), *, check_every: int = 1) -> None:
        self.signals = tuple(signals)
        valid = set(signal.Signals)
        if not self.signals or not all(isinstance(s, int) and s in valid for s in self.signals):
            raise TypeError(f"signals should be a non-empty sequence of signal numbers, got {signals!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int):
            raise TypeError(f"check_every should be an integer, got {check_every!r}")
        if check_every < 1:
            raise ValueError(f"check_every should be at least 1, got {check_every}")
        self.check_every = check_every
        self.received: int | None = None  # the signal that stops the run (in a process group: any rank's)
        self._caught: int | None = None  # the signal this process caught
        self._previous: dict[int, _SignalHandler] = {}
        self._group: _Group | None = None

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
        self.received = self._caught = None
        self._group = _Group.of_current_process_group(self._group)
        for signum in self.signals:
            if signum not in self._previous:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._caught is None:
            self._caught = signum
        elif signum == signal.SIGINT:  # a second Ctrl-C: the user insists; hand it to the previous handler
            self.restore()
            signal.raise_signal(signum)

    def _maybe_terminate(self, engine: Engine) -> None:
        if engine.should_terminate:
            return
        if self._group is None:
            self.received = self._caught
        elif engine.state.iteration % self.check_every == 0:
            self.received = self._group.max_signal(self._caught)
        if self.received is not None:
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


class _Group:
    """The ranks of the current process group that agree on a stop, through a gloo (CPU) group."""

    def __init__(self, default: dist.ProcessGroup | None, group: dist.ProcessGroup | None) -> None:
        self.default, self.group = default, group

    @classmethod
    def of_current_process_group(cls, previous: _Group | None) -> _Group | None:
        """``None`` in one process; the previous group while the default process group is the same one."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        default = dist.group.WORLD
        if previous is not None and previous.default is default:
            return previous
        # A CPU flag on an NCCL group would be copied to the GPU and back: a gloo group then ("cpu:gloo,cuda:nccl"
        # routes CPU tensors to gloo already).
        gloo = "gloo" in str(dist.get_backend())
        return cls(default, None if gloo else dist.new_group(backend="gloo"))  # new_group: a collective, every rank

    def max_signal(self, caught: int | None) -> int | None:
        flag = torch.tensor([caught or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag.item()) or None
