"""Handler bookkeeping behind :class:`hotloop.Engine`'s fast dispatch.

Two pieces, both private:

* :class:`_HandlerTable` is the ``Engine._event_handlers`` mapping. It is Ignite's ``defaultdict(list)``
  with a version counter that moves whenever a key is added, replaced or removed, so the loop can
  keep direct references to the per-event handler lists and notice when one of them is swapped out
  (``remove_event_handler`` and ``HandlersTimeProfiler`` do that) at the cost of one integer compare.
  In-place edits of a list (``append``, ``insert``, item assignment) need no bookkeeping: the loop
  holds the list itself.
* :class:`_FilteredHandler` replaces the closure Ignite builds for ``Events.X(every=..., once=...)``.
  It is called exactly like Ignite's wrapper, but it exposes the filter's parameters so that the
  engine can decide with an integer test, without a call, whether the handler fires; and it holds
  the engine weakly, so a filtered handler makes no reference cycle through the engine.
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ignite.engine.events import State

if TYPE_CHECKING:
    from ignite.engine import Engine as _IgniteEngine

__all__: list[str] = []

# The names Ignite's ``Engine._handler_wrapper`` gives its wrapper before ``functools.wraps`` copies the handler's.
_IGNITE_WRAPPER_QUALNAME = "Engine._handler_wrapper.<locals>.wrapper"
_IGNITE_WRAPPER_MODULE = "ignite.engine.engine"

# Filter kinds that the dispatcher evaluates inline.
_GENERIC, _EVERY, _ONCE, _RANGE, _EVERY_RANGE = range(5)


class _HandlerTable(defaultdict):
    """``defaultdict(list)`` whose ``version`` changes on every structural change."""

    __slots__ = ("version",)

    # defaultdict's signature: ``copy()``, ``copy.copy``, ``|`` and pickling call ``type(self)(factory, items)``.
    def __init__(self, default_factory: Callable[[], Any] | None = list, /, *args: Any, **kwargs: Any) -> None:
        self.version = 0
        super().__init__(default_factory, *args, **kwargs)

    def __setitem__(self, key: Any, value: list) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        self.version += 1
        return super().pop(*args)

    def popitem(self) -> tuple[Any, list]:
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        self.version += 1
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(key, default)

    # typeshed's dict.__or__ overloads do not accept Any; ``|=`` here takes what ``update`` takes, as dict's does.
    def __ior__(self, other: Any) -> _HandlerTable:  # type: ignore[misc]
        self.update(other)
        return self


def _closure_vars(func: Callable) -> dict[str, Any]:
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None) or ()
    if code is None:
        return {}
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells)}


def _classify_filter(event_filter: Callable) -> tuple[int, Any, Any, Any]:
    """Recognise the filters built by ``CallableEventWithFilter.__call__`` (ignite 0.5.x).

    Returns ``(kind, every, low, high)``; anything unrecognised is ``_GENERIC`` and is called as is.
    """
    qualname = getattr(event_filter, "__qualname__", "")
    if not qualname.startswith("CallableEventWithFilter."):
        return _GENERIC, None, None, None
    cv = _closure_vars(event_filter)
    try:
        if qualname.startswith("CallableEventWithFilter.every_event_filter."):
            return _EVERY, int(cv["every"]), None, None
        if qualname.startswith("CallableEventWithFilter.once_event_filter."):
            # The filter's own sequence, not a copy: ``in`` then compares exactly as the filter does.
            return _ONCE, None, cv["once"], None
        if qualname.startswith("CallableEventWithFilter.before_and_after_event_filter."):
            return _RANGE, None, cv["after_"], cv["before_"]
        if qualname.startswith("CallableEventWithFilter.every_before_and_after_event_filter."):
            return _EVERY_RANGE, int(cv["every"]), cv["after_"], cv["before_"]
    except (KeyError, TypeError, ValueError):
        pass
    return _GENERIC, None, None, None


class _FilteredHandler:
    """A handler attached with an event filter: Ignite's ``_handler_wrapper`` as an inspectable object.

    Calling it behaves like Ignite's wrapper: it reads the event's counter from ``engine.state``, asks the
    filter, and calls the handler when the filter agrees. ``functools.update_wrapper`` gives it the
    handler's name, docstring and ``__wrapped__`` (so ``inspect.signature`` sees the handler's signature),
    and ``_parent`` is a weak reference to the handler, as Ignite's ``has_event_handler`` expects.
    """

    def __init__(self, engine: _IgniteEngine, handler: Callable, event_name: Any, event_filter: Callable) -> None:
        # What Ignite's wrapper function is called when the handler has no name of its own (a callable object, a
        # partial): ``HandlersTimeProfiler`` reports handlers by ``__qualname__``, and errors print the wrapper.
        self.__name__ = "wrapper"
        self.__qualname__ = _IGNITE_WRAPPER_QUALNAME
        self.__module__ = _IGNITE_WRAPPER_MODULE
        self.__doc__ = None
        functools.update_wrapper(self, handler)
        self._parent = weakref.ref(handler)
        self._hl_engine = weakref.ref(engine)
        self._hl_handler = handler
        self._hl_event = event_name
        self._hl_filter = event_filter
        self._hl_attr: str | None = State.event_to_attr.get(event_name)
        self._hl_kind, self._hl_every, self._hl_low, self._hl_high = _classify_filter(event_filter)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        engine = self._hl_engine()
        if engine is None:
            raise RuntimeError("Engine reference not resolved. Cannot execute event handler.")
        event = engine.state.get_event_attrib_value(self._hl_event)
        if self._hl_filter(engine, event):
            return self._hl_handler(*args, **kwargs)
        return None

    def _hl_accepts(self, engine: _IgniteEngine) -> bool:
        """Whether the handler fires now; the same answer as the filter, mostly without calling it."""
        attr = self._hl_attr
        if attr is None:
            # Unknown event attribute: let State raise Ignite's own error.
            value = engine.state.get_event_attrib_value(self._hl_event)
            return bool(self._hl_filter(engine, value))
        value = getattr(engine.state, attr)
        kind = self._hl_kind
        if kind == _EVERY:
            return value % self._hl_every == 0
        if kind == _ONCE:
            return value in self._hl_low
        if kind == _RANGE:
            return self._hl_low < value < self._hl_high
        if kind == _EVERY_RANGE:
            return self._hl_low < value < self._hl_high and (value - self._hl_low - 1) % self._hl_every == 0
        return bool(self._hl_filter(engine, value))

    def __repr__(self) -> str:
        # A function's repr, as Ignite's wrapper has: it appears in Ignite's signature errors and is matched by
        # ``HandlersTimeProfiler._is_internal_handler``.
        return f"<function {self.__qualname__} at {id(self):#x}>"
