"""Unit tests of hotloop's handler bookkeeping: ``_HandlerTable`` and ``_FilteredHandler``.

``_FilteredHandler`` stands in for the closure that Ignite's ``Engine._handler_wrapper`` builds, so each test
compares it with that closure, built by Ignite itself on an Ignite engine.
"""

from __future__ import annotations

import copy
import functools
import gc
import inspect
import pickle
import re
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ignite.engine import Engine as IgniteEngine
from ignite.engine import EventEnum, Events

from hotloop import Engine as HotEngine
from hotloop.engine._handlers import _EVERY, _FilteredHandler, _HandlerTable


def _noop() -> None:
    pass


def _other() -> None:
    pass


# -- _HandlerTable -------------------------------------------------------------------------------------------------


def _filled() -> _HandlerTable:
    table = _HandlerTable(list)
    table[Events.STARTED] = [(_noop, (), {})]
    table[Events.COMPLETED] = []
    return table


MUTATIONS: dict[str, Callable[[_HandlerTable], Any]] = {
    "setitem new": lambda t: t.__setitem__(Events.EPOCH_STARTED, []),
    "setitem replace": lambda t: t.__setitem__(Events.STARTED, []),
    "setitem same list": lambda t: t.__setitem__(Events.STARTED, t[Events.STARTED]),
    "missing key": lambda t: t[Events.ITERATION_STARTED],
    "del": lambda t: t.__delitem__(Events.STARTED),
    "pop": lambda t: t.pop(Events.STARTED),
    "pop default": lambda t: t.pop(Events.EPOCH_STARTED, None),
    "popitem": lambda t: t.popitem(),
    "clear": lambda t: t.clear(),
    "update dict": lambda t: t.update({Events.EPOCH_STARTED: []}),
    "update pairs": lambda t: t.update([(Events.EPOCH_STARTED, [])]),
    "update kwargs": lambda t: t.update(custom=[]),
    "setdefault new": lambda t: t.setdefault(Events.EPOCH_STARTED, []),
    "setdefault existing": lambda t: t.setdefault(Events.STARTED, []),
    "ior": lambda t: t.__ior__({Events.EPOCH_STARTED: []}),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_version_moves_on_every_structural_mutation(name: str) -> None:
    table = _filled()
    before = table.version
    MUTATIONS[name](table)
    assert table.version > before


def test_ior_operator_moves_version_and_returns_the_table() -> None:
    table = _filled()
    before = table.version
    same = table
    same |= {Events.EPOCH_STARTED: []}
    assert same is table and table.version > before and Events.EPOCH_STARTED in table


READS: dict[str, Callable[[_HandlerTable], Any]] = {
    "getitem existing": lambda t: t[Events.STARTED],
    "get": lambda t: t.get(Events.EPOCH_STARTED),
    "contains": lambda t: Events.EPOCH_STARTED in t,
    "iterate": lambda t: list(t),
    "items": lambda t: list(t.items()),
    "len": len,
    "append in place": lambda t: t[Events.STARTED].append((_other, (), {})),
    "insert in place": lambda t: t[Events.STARTED].insert(0, (_other, (), {})),
    "assign in place": lambda t: t[Events.STARTED].__setitem__(0, (_other, (), {})),
}


@pytest.mark.parametrize("name", list(READS))
def test_version_stays_on_reads_and_in_place_list_edits(name: str) -> None:
    """The loop holds the lists themselves, so in-place edits need no reload; reads must not force one."""
    table = _filled()
    before = table.version
    READS[name](table)
    assert table.version == before


def test_table_is_a_defaultdict_of_lists() -> None:
    table = _HandlerTable(list)
    assert isinstance(table, defaultdict) and table.default_factory is list
    assert table[Events.STARTED] == [] and Events.STARTED in table


def _copies(table: _HandlerTable) -> dict[str, Any]:
    return {
        "pickle": pickle.loads(pickle.dumps(table)),
        "copy.copy": copy.copy(table),
        "copy.deepcopy": copy.deepcopy(table),
        "copy()": table.copy(),
        "or": table | {},
    }


@pytest.mark.parametrize("how", ["pickle", "copy.copy", "copy.deepcopy", "copy()", "or"])
def test_table_pickles_and_copies(how: str) -> None:
    table = _filled()
    copied = _copies(table)[how]
    assert type(copied) is _HandlerTable
    assert copied is not table and dict(copied) == dict(table)
    assert copied.default_factory is list
    before = copied.version
    copied[Events.EPOCH_STARTED]  # a copy is watched too
    assert copied.version > before
    assert Events.EPOCH_STARTED not in table


def test_table_copies_like_ignites_defaultdict() -> None:
    ignite_table = IgniteEngine(lambda e, b: None)._event_handlers
    ours = HotEngine(lambda e, b: None)._event_handlers
    for table in (ignite_table, ours):
        table[Events.STARTED].append((_noop, (), {}))
    assert dict(copy.copy(ours)) == dict(copy.copy(ignite_table))
    assert dict(ours | {Events.COMPLETED: []}) == dict(ignite_table | {Events.COMPLETED: []})


# -- _FilteredHandler ------------------------------------------------------------------------------------------------


class CountEvents(EventEnum):
    """A custom event counted in ``state.hl_count`` and one with no counter."""

    HL_COUNTED = "hl_counted"
    HL_UNCOUNTED = "hl_uncounted"


def _is_even_plus(rem: int) -> Callable[[Any, int], bool]:
    def custom(engine: Any, event: int) -> bool:
        return event % 2 == rem

    return custom


def _filtered_events(base: Any) -> list[Any]:
    return [
        base(every=1),  # no filter at all: Ignite drops it
        base(every=2),
        base(every=5),
        base(once=3),
        base(once=[1, 4, 9]),
        base(once=(2, 2, 7)),
        base(before=5),
        base(after=3),
        base(before=9, after=2),
        base(before=0),
        base(every=3, after=2),
        base(every=2, before=8),
        base(every=4, before=20, after=1),
        base(event_filter=_is_even_plus(1)),
        base(event_filter=lambda engine, event: event in (0, 6)),
    ]


def _pair(event: Any, handler: Callable) -> tuple[Any, Any, Any, Any]:
    """Ignite's wrapper (on an Ignite engine) and hotloop's (on a hotloop engine) for the same filtered event."""
    ignite_engine = IgniteEngine(lambda e, b: None)
    hot_engine = HotEngine(lambda e, b: None)
    for engine in (ignite_engine, hot_engine):
        engine.register_events(*CountEvents, event_to_attr={CountEvents.HL_COUNTED: "hl_count"})
    ignite_wrapper = ignite_engine._handler_wrapper(handler, event, event.filter)
    hot_wrapper = hot_engine._handler_wrapper(handler, event, event.filter)
    return ignite_engine, ignite_wrapper, hot_engine, hot_wrapper


def _dispatch_decision(engine: Any, wrapper: _FilteredHandler) -> bool:
    """What ``Engine._hl_dispatch`` decides for ``wrapper``: its inline ``every`` test or ``_hl_accepts``."""
    if wrapper._hl_kind == _EVERY and wrapper._hl_attr is not None:
        return not getattr(engine.state, wrapper._hl_attr) % wrapper._hl_every
    return wrapper._hl_accepts(engine)


@pytest.mark.parametrize(
    "base, attr",
    [
        (Events.ITERATION_COMPLETED, "iteration"),
        (Events.GET_BATCH_STARTED, "iteration"),
        (Events.EPOCH_STARTED, "epoch"),
        (Events.COMPLETED, "epoch"),
        (CountEvents.HL_COUNTED, "hl_count"),
    ],
)
def test_filtered_handler_agrees_with_ignites_filter(base: Any, attr: str) -> None:
    for event in _filtered_events(base):
        if event.filter is None:
            continue
        calls: list = []

        def handler(*args: Any, calls: list = calls) -> None:
            calls.append(args)

        ignite_engine, ignite_wrapper, hot_engine, hot_wrapper = _pair(event, handler)
        for value in range(0, 31):
            setattr(ignite_engine.state, attr, value)
            setattr(hot_engine.state, attr, value)
            expected = bool(event.filter(ignite_engine, value))
            assert hot_wrapper._hl_accepts(hot_engine) is expected, (event, value)
            assert _dispatch_decision(hot_engine, hot_wrapper) is expected, (event, value)
            calls.clear()
            ignite_wrapper("arg")
            ignite_calls = list(calls)
            calls.clear()
            hot_wrapper("arg")
            assert calls == ignite_calls == ([("arg",)] if expected else []), (event, value)


@settings(max_examples=150, deadline=None)
@given(
    every=st.one_of(st.none(), st.integers(1, 7)),
    before=st.one_of(st.none(), st.integers(0, 25)),
    after=st.one_of(st.none(), st.integers(0, 25)),
    values=st.lists(st.integers(0, 60), min_size=1, max_size=20),
)
def test_every_before_after_filters_agree(every: Any, before: Any, after: Any, values: list[int]) -> None:
    if every is None and before is None and after is None:
        every = 1
    event = Events.ITERATION_STARTED(every=every, before=before, after=after)
    if event.filter is None:
        return
    ignite_engine, _, hot_engine, hot_wrapper = _pair(event, _noop)
    for value in values:
        hot_engine.state.iteration = value
        assert _dispatch_decision(hot_engine, hot_wrapper) is bool(event.filter(ignite_engine, value)), value


@settings(max_examples=100, deadline=None)
@given(once=st.lists(st.integers(1, 30), min_size=1, max_size=6), values=st.lists(st.integers(0, 40), max_size=20))
def test_once_filters_agree(once: list[int], values: list[int]) -> None:
    event = Events.EPOCH_COMPLETED(once=once)
    ignite_engine, _, hot_engine, hot_wrapper = _pair(event, _noop)
    for value in values:
        hot_engine.state.epoch = value
        assert _dispatch_decision(hot_engine, hot_wrapper) is bool(event.filter(ignite_engine, value)), value


def test_once_list_edited_after_attaching_is_seen() -> None:
    """Ignite's filter keeps the caller's list; so does hotloop's inline test."""
    once = [2]
    event = Events.ITERATION_COMPLETED(once=once)
    ignite_engine, _, hot_engine, hot_wrapper = _pair(event, _noop)
    once.append(5)
    hot_engine.state.iteration = ignite_engine.state.iteration = 5
    assert _dispatch_decision(hot_engine, hot_wrapper) is bool(event.filter(ignite_engine, 5)) is True


def test_filter_on_an_event_without_counter_raises_ignites_error() -> None:
    event = CountEvents.HL_UNCOUNTED(every=2)
    ignite_engine, ignite_wrapper, hot_engine, hot_wrapper = _pair(event, _noop)
    with pytest.raises(RuntimeError) as ignite_error:
        ignite_wrapper()
    with pytest.raises(RuntimeError) as hot_call_error:
        hot_wrapper()
    with pytest.raises(RuntimeError) as hot_inline_error:
        _dispatch_decision(hot_engine, hot_wrapper)
    assert str(hot_call_error.value) == str(hot_inline_error.value) == str(ignite_error.value)
    assert "Unknown event name" in str(ignite_error.value)


class _CallableObject:
    """Docstring of a callable object."""

    def __call__(self, engine: Any, extra: int = 1) -> None:
        pass


class _WithMethod:
    def method(self, engine: Any) -> None:
        pass


def documented_handler(engine: Any, *args: Any, flag: bool = False) -> None:
    """Docstring of a function."""


documented_handler.custom_attribute = "kept"  # type: ignore[attr-defined]


HANDLERS: dict[str, Callable[[], Callable]] = {
    "function": lambda: documented_handler,
    "lambda": lambda: lambda engine: None,
    "callable object": _CallableObject,
    "partial": lambda: functools.partial(documented_handler, flag=True),
    "bound method": lambda: _WithMethod().method,
}


def _normalise(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x?", text)


@pytest.mark.parametrize("kind", list(HANDLERS))
def test_filtered_handler_looks_like_ignites_wrapper(kind: str) -> None:
    handler = HANDLERS[kind]()
    event = Events.ITERATION_COMPLETED(every=3)
    _, ignite_wrapper, _, hot_wrapper = _pair(event, handler)
    for attr in ("__name__", "__qualname__", "__module__", "__doc__", "custom_attribute"):
        assert getattr(hot_wrapper, attr, "<absent>") == getattr(ignite_wrapper, attr, "<absent>"), attr
    assert hot_wrapper.__wrapped__ is ignite_wrapper.__wrapped__ is handler
    assert inspect.signature(hot_wrapper) == inspect.signature(ignite_wrapper) == inspect.signature(handler)
    assert hot_wrapper._parent() is ignite_wrapper._parent()  # the handler, or None for a bound method
    assert _normalise(repr(hot_wrapper)) == _normalise(repr(ignite_wrapper))


def test_filtered_handler_keeps_a_weak_parent_and_engine() -> None:
    def handler(engine: Any) -> None:
        pass

    engine = HotEngine(lambda e, b: None)
    wrapper = engine._handler_wrapper(handler, Events.ITERATION_COMPLETED(every=2), Events.ITERATION_COMPLETED.filter)
    assert wrapper._parent() is handler
    assert isinstance(wrapper._parent, weakref.ref)
    engine_ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert engine_ref() is None  # the wrapper does not keep the engine alive
    with pytest.raises(RuntimeError, match="Engine reference not resolved"):
        wrapper(None)


def test_engine_wraps_filtered_handlers_in_filtered_handler() -> None:
    engine = HotEngine(lambda e, b: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), documented_handler)
    engine.add_event_handler(Events.ITERATION_COMPLETED, documented_handler)
    (filtered, _, _), (plain, _, _) = engine._event_handlers[Events.ITERATION_COMPLETED]
    assert type(filtered) is _FilteredHandler and plain is documented_handler
    assert engine.has_event_handler(documented_handler, Events.ITERATION_COMPLETED)
