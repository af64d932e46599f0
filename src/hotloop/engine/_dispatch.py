"""Firing events: the handler call loop, and the run loop's view of the handler table.

Two pieces, both private to the engine package:

* :func:`_dispatch` calls the handlers of one event (the body of ``Engine._fire_event``), deciding filtered
  handlers with an integer test.
* :class:`_HotEvents` is what the run loop consults per iteration: it owns the handler table it read, that table's
  version and the handler lists of the four per-iteration events, fires one of those events, checks the termination
  flags after it, and re-reads the table when it is stale. It lives for one loop (a local of the loop function), so
  it makes no reference cycle through the engine.

The rule "an event without handlers is not dispatched" is the truth test of a hot list in the loop; outside the loop
(``IterationEvents`` fired from a workflow's iteration) it is ``Engine._fire_if_handled``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ignite.engine.events import Events, State

from hotloop.engine._handlers import _EVERY, _FilteredHandler, _HandlerTable

if TYPE_CHECKING:
    from hotloop.engine.engine import Engine

__all__: list[str] = []

GBS = Events.GET_BATCH_STARTED
GBC = Events.GET_BATCH_COMPLETED
ITS = Events.ITERATION_STARTED
ITC = Events.ITERATION_COMPLETED
DSI = Events.DATALOADER_STOP_ITERATION

# Stands in for the handler list of a hot event that has no key in ``_event_handlers`` yet, or that must go
# through ``_fire_event`` for another reason (see ``_HotEvents.reload``). It is truthy, so the loop dispatches
# the event and then checks the termination flags, as Ignite's loop does after every event; the firing itself
# is ``engine._fire_event(event)``, which creates the key exactly when Ignite's loop would.
NOT_YET_FIRED = (None,)
_ALL_THROUGH_FIRE_EVENT = (NOT_YET_FIRED,) * 4
_WEAKREF = weakref.ref


class _SlowTable:
    """Stands in for a handler table that the loop cannot watch; its version never moves."""

    version = 0


_SLOW_TABLE = _SlowTable()


def _dispatch(
    engine: Engine, event_name: Any, handlers: Any, event_args: tuple = (), event_kwargs: dict | None = None
) -> None:
    """Call ``handlers``, the handler list of ``event_name``, as Ignite's ``_fire_event`` does.

    ``last_event_name`` is set, event keyword arguments are merged into each handler's stored keyword arguments,
    handlers receive the engine through a weak reference; a filtered handler is decided inline.
    """
    if handlers is NOT_YET_FIRED:
        engine._fire_event(event_name)
        return
    engine.last_event_name = event_name
    for func, args, kwargs in handlers:
        if event_kwargs:
            kwargs.update(event_kwargs)
        if type(func) is _FilteredHandler:
            if func._hl_kind == _EVERY and func._hl_attr is not None:
                if getattr(engine.state, func._hl_attr) % func._hl_every:
                    continue
            elif not func._hl_accepts(engine):
                continue
            func = func._hl_handler
        if args and isinstance(args[0], _WEAKREF):
            resolved_engine = args[0]()
            if resolved_engine is None:
                raise RuntimeError("Engine reference not resolved. Cannot execute event handler.")
            if len(args) == 1 and not event_args and not kwargs:
                func(resolved_engine)  # the common ``handler(engine)``: no argument tuples to build
            else:
                func(resolved_engine, *event_args, *args[1:], **kwargs)
        else:
            func(*event_args, *args, **kwargs)


class _HotEvents:
    """The handler table as one run loop sees it: its version, the per-iteration handler lists, the flag checks.

    ``lists`` holds the handler lists of ``GET_BATCH_STARTED``, ``GET_BATCH_COMPLETED``, ``ITERATION_STARTED`` and
    ``ITERATION_COMPLETED``, in that order; the loop keeps them in locals and tests their truth to decide whether an
    event is dispatched (a list held directly sees handlers appended to it; a list replaced moves the version).

    Args:
        engine: the engine whose loop this is.
        legacy: the loop is Ignite's legacy (non-generator) mode: an interrupt is not supported there.
    """

    __slots__ = ("engine", "legacy", "table", "version", "lists")

    def __init__(self, engine: Engine, legacy: bool) -> None:
        self.engine = engine
        self.legacy = legacy
        self.table: Any = _SLOW_TABLE
        self.version = 0
        self.lists: tuple[Any, Any, Any, Any] = _ALL_THROUGH_FIRE_EVENT

    def reload(self, resumed: bool = False) -> tuple[Any, Any, Any, Any]:
        """Read the handler table and its four per-iteration lists again; returns the lists.

        An event whose list stands as ``NOT_YET_FIRED`` is fired through ``_fire_event`` and followed by the
        termination check. All four are when the table cannot be watched (it is not a ``_HandlerTable``), when
        debug logging is on (Ignite logs every event), or when ``_fire_event``/``fire_event`` has been overridden
        since the run started. ``resumed`` (the run was interrupted and resumed, or a flag is already set) sends
        ``GET_BATCH_STARTED`` and ``ITERATION_STARTED`` that way, so that Ignite's next termination check is made
        even if the event has no handler; version -1 then makes the loop re-read the table at its next test.
        """
        engine = self.engine
        table = engine._event_handlers
        if (
            isinstance(table, _HandlerTable)
            and not engine.logger.isEnabledFor(logging.DEBUG)
            and not engine._hl_uses_ignite_loop()
        ):
            get = table.get
            self.table, self.version = table, table.version
            lists = (get(GBS, NOT_YET_FIRED), get(GBC, NOT_YET_FIRED), get(ITS, NOT_YET_FIRED), get(ITC, NOT_YET_FIRED))
        else:
            self.table, self.version = _SLOW_TABLE, 0
            lists = _ALL_THROUGH_FIRE_EVENT
        if resumed:
            lists = (NOT_YET_FIRED, lists[1], NOT_YET_FIRED, lists[3])
            self.version = -1
        self.lists = lists
        return lists

    def fire(self, event: Any, handlers: Any) -> bool:
        """Dispatch ``event`` to ``handlers``; True when the loop must :meth:`settle` (a flag set, the table moved)."""
        _dispatch(self.engine, event, handlers)
        return self.engine._hl_flag_set or self.table.version != self.version

    def settle(self) -> Generator[State, None, tuple[Any, Any, Any, Any]]:
        """Ignite's termination check if a flag is set, then the handler lists as they now are."""
        if self.engine._hl_flag_set and (yield from self.check()):
            return self.reload(resumed=True)
        if self.table.version != self.version:
            return self.reload()
        return self.lists

    def check(self) -> Generator[State, None, bool]:
        """Ignite's ``_maybe_terminate_or_interrupt`` (or its legacy twin); call it when a flag is set.

        Returns:
            True when the run was interrupted here and has now been resumed: the user may have set a flag or
            edited the handlers in between, so the loop must re-read the handler table and make Ignite's next
            termination check even if the event there has no handler.
        """
        engine = self.engine
        if self.legacy:
            engine._maybe_terminate_legacy()
            return False
        interrupting = bool(engine.should_interrupt)
        yield from engine._maybe_terminate_or_interrupt()
        return interrupting
