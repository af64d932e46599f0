"""hotloop's :class:`Engine`: Ignite's ``Engine`` with a loop that costs what a bare loop costs."""

from __future__ import annotations

import inspect
import logging
import math
import time
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Generator
from typing import Any

from ignite.engine import Engine as _IgniteEngine
from ignite.engine.engine import _EngineTerminateException, _EngineTerminateSingleEpochException
from ignite.engine.events import Events, State
from ignite.engine.utils import _to_hours_mins_secs

from hotloop.engine._handlers import _EVERY, _FilteredHandler, _HandlerTable

__all__ = ["Engine"]

_GBS = Events.GET_BATCH_STARTED
_GBC = Events.GET_BATCH_COMPLETED
_ITS = Events.ITERATION_STARTED
_ITC = Events.ITERATION_COMPLETED
_DSI = Events.DATALOADER_STOP_ITERATION
_HOT_EVENTS = (_GBS, _GBC, _ITS, _ITC)

# Stands in for the handler list of a hot event that has no key in ``_event_handlers`` yet, or that must go
# through ``_fire_event`` for another reason (see ``Engine._hl_reload``). It is truthy, so the loop dispatches
# the event and then checks the termination flags, as Ignite's loop does after every event; the firing itself
# is ``self._fire_event(event)``, which creates the key exactly when Ignite's loop would.
_NOT_YET_FIRED = (None,)
_WEAKREF = weakref.ref


class _SlowTable:
    """Stands in for a handler table that the loop cannot watch; its version never moves."""

    version = 0


_SLOW_TABLE = _SlowTable()


class _Raised:
    """An exception carried out of a legacy-mode generator as its return value.

    The legacy loop runs as a generator that never yields; a ``StopIteration`` leaving a generator becomes a
    ``RuntimeError`` (PEP 479), whereas Ignite's legacy loop, plain functions, lets it through unchanged.
    """

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _drive(gen: Generator[Any, None, Any]) -> Any:
    """Run a legacy-mode loop generator to its end; return its value or raise what it carried out."""
    while True:
        try:
            next(gen)
        except StopIteration as out:
            value = out.value
            break
    if type(value) is _Raised:
        raise value.exc
    return value


def _check_not_generator(process_function: Any) -> None:
    """A generator function would store a generator object as ``state.output`` and run none of its body."""
    if inspect.isgeneratorfunction(process_function) or inspect.isasyncgenfunction(process_function):
        raise TypeError(
            f"process_function should return the output, not be a generator function: {process_function!r} "
            "yields; use return instead of yield"
        )


def _is_own_method(obj: Any, name: str) -> bool:
    bound = getattr(obj, name)
    return getattr(bound, "__self__", None) is obj and getattr(bound, "__func__", None) is getattr(Engine, name)


class Engine(_IgniteEngine):
    """Runs a given ``process_function`` over each batch of a dataset, emitting events as it goes.

    A drop-in replacement for :class:`ignite.engine.engine.Engine`: it *is* one (a subclass), with the same
    constructor, events, state, filters, termination, interruption, serialization and error messages, so Ignite's
    and MONAI's handlers and metrics attach unchanged. What differs is the cost of the loop:

    - an event without handlers is not dispatched at all (the loop tests a list reference);
    - a handler attached with ``every``/``once``/``before``/``after`` is filtered with an integer test instead of
      two Python calls;
    - no debug string is formatted per event unless the engine's logger has ``DEBUG`` enabled when the run or
      epoch starts;
    - no generator is created per iteration (Ignite creates four).

    Subclasses that override ``_fire_event`` or ``fire_event`` (to record or intercept every event) get Ignite's
    own loop, so every event still goes through their override, handlers or not.

    Args:
        process_function: A function receiving a handle to the engine and the current batch
            in each iteration, and returns data to be stored in the engine's state.

    Examples:
        .. code-block:: python

            from hotloop import Engine, Events

            def train_step(engine, batch):
                ...
                return loss.item()

            trainer = Engine(train_step)

            @trainer.on(Events.ITERATION_COMPLETED(every=100))
            def log_training(engine):
                print(engine.state.iteration, engine.state.output)

            trainer.run(data_loader, max_epochs=5)
    """

    def __init__(self, process_function: Callable[[_IgniteEngine, Any], Any]) -> None:
        _check_not_generator(process_function)
        self._hl_table: Any = None
        self._hl_faithful = False
        super().__init__(process_function)

    # -- handler table -------------------------------------------------------------------------------------------

    @property  # type: ignore[override]
    def _event_handlers(self) -> Any:
        return self._hl_table

    @_event_handlers.setter
    def _event_handlers(self, value: Any) -> None:
        old = getattr(self, "_hl_table", None)  # None too when a subclass assigns before our __init__
        if old is None and type(value) is defaultdict:
            # Ignite's ``__init__`` assigns a fresh ``defaultdict(list)`` that nobody else holds: watch it instead.
            value = _HandlerTable(value.default_factory, value)
        # Any later value is kept as given (it is the caller's object, as in Ignite); a mapping that is not a
        # ``_HandlerTable`` cannot be watched, and the loop then fires every event through ``_fire_event``.
        self._hl_table = value
        if isinstance(old, _HandlerTable) and old is not value:
            # A loop in progress holds ``old``: moving its version tells it to re-read the table.
            old.version += 1

    def _handler_wrapper(self, handler: Callable, event_name: Any, event_filter: Callable) -> Callable:
        return _FilteredHandler(self, handler, event_name, event_filter)

    # -- dispatch ------------------------------------------------------------------------------------------------

    def _fire_event(self, event_name: Any, *event_args: Any, **event_kwargs: Any) -> None:
        """Execute all the handlers associated with given event.

        Same semantics as Ignite's ``Engine._fire_event`` (``last_event_name`` is set, event keyword arguments are
        merged into each handler's stored keyword arguments, handlers receive the engine through a weak
        reference), with filters evaluated inline and the debug line formatted only when it would be emitted.

        Args:
            event_name: event for which the handlers should be executed.
            *event_args: optional args to be passed to all handlers.
            **event_kwargs: optional keyword args to be passed to all handlers.
        """
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(f"{self.state.epoch} | {self.state.iteration}, Firing handlers for event {event_name}")
        self._hl_dispatch(event_name, self._event_handlers[event_name], event_args, event_kwargs)

    def _hl_dispatch(
        self, event_name: Any, handlers: Any, event_args: tuple = (), event_kwargs: dict | None = None
    ) -> None:
        """The body of ``_fire_event`` for a handler list already looked up; ``_NOT_YET_FIRED`` calls it."""
        if handlers is _NOT_YET_FIRED:
            self._fire_event(event_name)
            return
        self.last_event_name = event_name
        for func, args, kwargs in handlers:
            if event_kwargs:
                kwargs.update(event_kwargs)
            if type(func) is _FilteredHandler:
                if func._hl_kind == _EVERY and func._hl_attr is not None:
                    if getattr(self.state, func._hl_attr) % func._hl_every:
                        continue
                elif not func._hl_accepts(self):
                    continue
                func = func._hl_handler
            if args and isinstance(args[0], _WEAKREF):
                resolved_engine = args[0]()
                if resolved_engine is None:
                    raise RuntimeError("Engine reference not resolved. Cannot execute event handler.")
                func(resolved_engine, *event_args, *args[1:], **kwargs)
            else:
                func(*event_args, *args, **kwargs)

    #: A function applied to every data iterator the engine makes (``prefetch=True`` installs a device prefetcher).
    _hl_data_wrapper: Callable[[Any], Any] | None = None

    def _setup_dataloader_iter(self) -> None:
        super()._setup_dataloader_iter()
        self._hl_wrap_data_iter()

    def _setup_engine(self) -> None:
        super()._setup_engine()
        self._hl_wrap_data_iter()

    def set_data(self, data: Any) -> None:
        super().set_data(data)
        self._hl_wrap_data_iter()

    set_data.__doc__ = _IgniteEngine.set_data.__doc__

    def _hl_wrap_data_iter(self) -> None:
        wrap = self._hl_data_wrapper
        if wrap is not None and self.state.dataloader is not None and self._dataloader_iter is not None:
            self._dataloader_iter = wrap(self._dataloader_iter)

    def _hl_uses_ignite_loop(self) -> bool:
        """True when every event must go through an overridden ``_fire_event`` / ``fire_event``."""
        cls = type(self)
        if cls._fire_event is not Engine._fire_event or cls.fire_event is not Engine.fire_event:
            return True
        # An override set on the instance itself (``engine._fire_event = ...``) counts too. Reading bound methods,
        # not ``vars(self)``: materialising the instance ``__dict__`` makes every attribute access slower.
        return not (_is_own_method(self, "_fire_event") and _is_own_method(self, "fire_event"))

    # -- run loop ------------------------------------------------------------------------------------------------

    def _internal_run_as_gen(self) -> Generator[Any, None, State]:
        self._hl_faithful = self._hl_uses_ignite_loop()
        if self._hl_faithful:
            return (yield from _IgniteEngine._internal_run_as_gen(self))
        return (yield from self._hl_run_as_gen(legacy=False))

    def _internal_run_legacy(self) -> State:
        self._hl_faithful = self._hl_uses_ignite_loop()
        if self._hl_faithful:
            return _IgniteEngine._internal_run_legacy(self)
        return _drive(self._hl_run_as_gen(legacy=True))

    def _run_once_on_dataset_as_gen(self) -> Generator[State, None, float]:
        if self._hl_faithful:
            return (yield from _IgniteEngine._run_once_on_dataset_as_gen(self))
        return (yield from self._hl_run_once_on_dataset(legacy=False))

    def _run_once_on_dataset_legacy(self) -> float:
        if self._hl_faithful:
            return _IgniteEngine._run_once_on_dataset_legacy(self)
        return _drive(self._hl_run_once_on_dataset(legacy=True))

    def _hl_check(self, legacy: bool) -> Generator[State, None, bool]:
        """Ignite's ``_maybe_terminate_or_interrupt`` (or its legacy twin), entered only when a flag is set.

        Returns:
            True when the run was interrupted here and has now been resumed: the user may have set a flag or
            edited the handlers in between, so the loop must re-read the handler table and make Ignite's next
            termination check even if the event there has no handler.
        """
        if legacy:
            self._maybe_terminate_legacy()
            return False
        interrupting = bool(self.should_interrupt)
        yield from self._maybe_terminate_or_interrupt()
        return interrupting

    def _hl_flagged(self) -> bool:
        return bool(self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt)

    def _hl_run_as_gen(self, legacy: bool) -> Generator[State, None, Any]:
        # Mirrors ignite.engine.Engine._internal_run_as_gen / _internal_run_legacy (0.5.5) statement by statement;
        # the changes: flag checks that find nothing set skip the generator round trip, and in legacy mode a
        # StopIteration leaving the loop is carried out to ``_drive`` instead of becoming a RuntimeError.
        try:
            self.should_terminate = self.should_terminate_single_epoch = self.should_interrupt = False
            self._init_timers(self.state)
            start_time = time.time()
            try:
                try:
                    self._fire_event(Events.STARTED)
                    if self._hl_flagged():
                        yield from self._hl_check(legacy)
                    while not self._is_done(self.state) and not self.should_terminate:
                        self.state.epoch += 1
                        handlers_start_time = time.time()
                        self._fire_event(Events.EPOCH_STARTED)
                        epoch_time_taken = time.time() - handlers_start_time
                        if self._hl_flagged():
                            # A resume from here is seen by the flag test at the start of the epoch's loop.
                            yield from self._hl_check(legacy)
                        if self._dataloader_iter is None:
                            self._setup_engine()
                        if legacy:
                            epoch_time_taken += self._run_once_on_dataset_legacy()
                        else:
                            epoch_time_taken += yield from self._run_once_on_dataset_as_gen()
                        self.state.times[Events.EPOCH_COMPLETED.name] = epoch_time_taken
                        if self.should_terminate_single_epoch != "skip_epoch_completed":
                            handlers_start_time = time.time()
                            self._fire_event(Events.EPOCH_COMPLETED)
                            epoch_time_taken += time.time() - handlers_start_time
                            self.state.times[Events.EPOCH_COMPLETED.name] = epoch_time_taken
                        if self.should_terminate_single_epoch:
                            self.should_terminate_single_epoch = False
                        if self._hl_flagged():
                            yield from self._hl_check(legacy)
                        hours, mins, secs = _to_hours_mins_secs(epoch_time_taken)
                        self.logger.info(
                            f"Epoch[{self.state.epoch}] Complete. Time taken: {hours:02d}:{mins:02d}:{secs:06.3f}"
                        )
                except _EngineTerminateException:
                    self._fire_event(Events.TERMINATE)
                except _EngineTerminateSingleEpochException:
                    raise RuntimeError(  # noqa: B904 - Ignite's raise: the terminate exception stays its context
                        "The method terminate_epoch() should not be called on Event.STARTED or Event.EPOCH_STARTED."
                        "If this is a desired behaviour, please open a feature request on"
                        "https://github.com/pytorch/ignite/issues/new/choose"
                    )
                time_taken = time.time() - start_time
                self.state.times[Events.COMPLETED.name] = time_taken
                if self.should_terminate != "skip_completed":
                    handlers_start_time = time.time()
                    self._fire_event(Events.COMPLETED)
                    time_taken += time.time() - handlers_start_time
                    self.state.times[Events.COMPLETED.name] = time_taken
                hours, mins, secs = _to_hours_mins_secs(time_taken)
                self.logger.info(f"Engine run finished. Time taken: {hours:02d}:{mins:02d}:{secs:06.3f}")
            except BaseException as e:
                self._dataloader_iter = None
                self.logger.error(f"Engine run is terminating due to exception: {e}")
                self._handle_exception(e)
            self._dataloader_iter = None
            return self.state
        except StopIteration as e:
            if not legacy:
                raise  # becomes a RuntimeError, as it does leaving Ignite's generator
            return _Raised(e)

    def _hl_reload(self, resumed: bool = False) -> tuple[Any, int, tuple[Any, ...]]:
        """The handler table, its version, and the handler lists of the four per-iteration events.

        An event whose list stands as ``_NOT_YET_FIRED`` is fired through ``_fire_event`` and followed by the
        termination check. All four are when the table cannot be watched (it is not a ``_HandlerTable``), when
        debug logging is on (Ignite logs every event), or when ``_fire_event``/``fire_event`` has been overridden
        since the run started. ``resumed`` (the run was interrupted and resumed, or a flag is already set) sends
        ``GET_BATCH_STARTED`` and ``ITERATION_STARTED`` that way, so that Ignite's next termination check is made
        even if the event has no handler; version -1 then makes the loop re-read the table.
        """
        table = self._event_handlers
        if (
            isinstance(table, _HandlerTable)
            and not self.logger.isEnabledFor(logging.DEBUG)
            and not self._hl_uses_ignite_loop()
        ):
            get = table.get
            version = table.version
            gbs, gbc, its, itc = (get(e, _NOT_YET_FIRED) for e in _HOT_EVENTS)
        else:
            table, version = _SLOW_TABLE, 0
            gbs = gbc = its = itc = _NOT_YET_FIRED
        if resumed:
            gbs = its = _NOT_YET_FIRED
            version = -1
        return table, version, (gbs, gbc, its, itc)

    def _hl_run_once_on_dataset(self, legacy: bool) -> Generator[State, None, Any]:  # noqa: C901
        # Mirrors ignite.engine.Engine._run_once_on_dataset_as_gen (0.5.5). Per iteration the fast path does
        # what Ignite's does minus the dispatch of handler-less events and the per-check generators:
        # state.batch/state.output/last_event_name are written at the same moments, and the termination flags are
        # read after each piece of user code (the data iterator, the process function, any handler).
        try:
            start_time = time.time()
            iter_counter = 0 if self._init_iter is None else self._init_iter
            self._init_iter = None
            should_exit = False
            # A flag already set (by a resume after an interrupt on EPOCH_STARTED, or by user code in iter(data))
            # must be seen at Ignite's first check of the epoch, whether or not its event has handlers.
            table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload(self._hl_flagged())
            try:
                if self._dataloader_iter is None:
                    raise RuntimeError(
                        "Internal error, self._dataloader_iter is None. "
                        "Please, file an issue if you encounter this error."
                    )
                while True:
                    state = self.state
                    state.batch = None
                    try:
                        last = self.last_event_name
                        after_restart = last is _DSI or (type(last) is not Events and last == _DSI)
                        if not after_restart and state.dataloader is not None:
                            if h_gbs:
                                self._hl_dispatch(_GBS, h_gbs)
                                if self._hl_flagged() and (yield from self._hl_check(legacy)):
                                    table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload(True)
                                state = self.state
                                if table.version != version:
                                    table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload()
                            else:
                                self.last_event_name = _GBS
                        state.batch = next(self._dataloader_iter)
                        state.output = None
                        if state.dataloader is not None:
                            # The data iterator is user code. (Without data it is the engine's own, and the re-read
                            # must not end a forced check of ITERATION_STARTED early: see ``_hl_reload``.)
                            if table.version != version:
                                table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload()
                            if h_gbc:
                                self._hl_dispatch(_GBC, h_gbc)
                                state = self.state
                                if table.version != version:
                                    table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload()
                            else:
                                self.last_event_name = _GBC
                            # Checked with or without handlers: the data iterator may have set a flag.
                            if self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt:
                                if (yield from self._hl_check(legacy)):
                                    table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload(True)
                                state = self.state
                        iter_counter += 1
                        should_exit = False
                    except StopIteration:
                        state = self.state
                        if state.epoch_length is None:
                            state.epoch_length = iter_counter
                            if state.max_iters is not None:
                                state.max_epochs = math.ceil(state.max_iters / state.epoch_length)
                            break
                        if should_exit:
                            if not self._is_done(state):
                                total_iters = (
                                    state.epoch_length * state.max_epochs
                                    if state.max_epochs is not None
                                    else state.max_iters
                                )
                                warnings.warn(  # noqa: B028 - Ignite's call, default stacklevel
                                    "Data iterator can not provide data anymore but required total number of "
                                    "iterations to run is not reached. "
                                    f"Current iteration: {state.iteration} vs Total iterations to run : {total_iters}"
                                )
                            break
                        if state.dataloader is not None:
                            self._fire_event(_DSI)
                            if self._hl_flagged():
                                yield from self._hl_check(legacy)
                        self._setup_dataloader_iter()
                        table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload()
                        should_exit = True
                        continue
                    state.iteration += 1
                    if h_its:
                        self._hl_dispatch(_ITS, h_its)
                        if self._hl_flagged() and (yield from self._hl_check(legacy)):
                            table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload(True)
                        state = self.state
                    else:
                        self.last_event_name = _ITS
                    state.output = self._process_function(self, state.batch)
                    if table.version != version:  # handlers of ITERATION_STARTED or the process function changed it
                        table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload()
                    if h_itc:
                        self._hl_dispatch(_ITC, h_itc)
                        if table.version != version:
                            table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload()
                    else:
                        self.last_event_name = _ITC
                    if self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt:
                        if (yield from self._hl_check(legacy)):
                            table, version, (h_gbs, h_gbc, h_its, h_itc) = self._hl_reload(True)
                    state = self.state
                    if state.epoch_length is not None and iter_counter == state.epoch_length:
                        break
                    if state.max_iters is not None and state.iteration == state.max_iters:
                        self.should_terminate = True
                        raise _EngineTerminateException()
            except _EngineTerminateSingleEpochException:
                self._fire_event(Events.TERMINATE_SINGLE_EPOCH, iter_counter=iter_counter)
                self._setup_dataloader_iter()
            except _EngineTerminateException as e:
                raise e
            except Exception as e:
                self.logger.error(f"Current run is terminating due to exception: {e}")
                self._handle_exception(e)
            return time.time() - start_time
        except StopIteration as e:
            if not legacy:
                raise  # becomes a RuntimeError, as it does leaving Ignite's generator
            return _Raised(e)
