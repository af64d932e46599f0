"""hotloop's :class:`Engine`: Ignite's ``Engine`` with a loop that costs what a bare loop costs."""

from __future__ import annotations

import inspect
import logging
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Generator
from typing import Any

from ignite.engine import Engine as _IgniteEngine
from ignite.engine.engine import _EngineTerminateException, _EngineTerminateSingleEpochException
from ignite.engine.events import Events, State
from ignite.engine.utils import _to_hours_mins_secs

from hotloop.engine._dispatch import DSI, GBC, GBS, ITC, ITS, _dispatch, _HotEvents
from hotloop.engine._handlers import _FilteredHandler, _HandlerTable

__all__ = ["Engine"]

_STOP_FLAGS = ("should_terminate", "should_terminate_single_epoch", "should_interrupt")


class _Flag:
    """One of Ignite's three termination flags, stored as set; setting any of them also sets ``_hl_flag_set``.

    The loop reads ``_hl_flag_set`` (one attribute) after each piece of user code instead of the three flags.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_hl_" + name

    def __get__(self, engine: Any, owner: type | None = None) -> Any:
        if engine is None:
            return self
        return getattr(engine, self.slot, False)

    def __set__(self, engine: Any, value: Any) -> None:
        setattr(engine, self.slot, value)
        engine._hl_flag_set = any(getattr(engine, "_hl_" + name, False) for name in _STOP_FLAGS)


_NO_DATA_ITERATOR = "Internal error, self._dataloader_iter is None. Please, file an issue if you encounter this error."


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

    #: What the engine's step runs (``hotloop.step.StepChoice``: the build, and under ``compile="auto"`` what it
    #: measured), set by the APIs that build the step (``create_supervised_trainer`` ...); absent on an engine whose
    #: process function is the user's own.
    step_choice: Any

    should_terminate = _Flag()
    should_terminate_single_epoch = _Flag()
    should_interrupt = _Flag()
    _hl_flag_set = False

    #: A function applied to every data iterator the engine makes (see :meth:`_set_data_wrapper`).
    _hl_data_wrapper: Callable[[Any], Any] | None = None

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
        _dispatch(self, event_name, self._event_handlers[event_name], event_args, event_kwargs)

    def _has_handlers(self, event_name: Any) -> bool:
        """Whether firing ``event_name`` now would call anything.

        True when the event has handlers, or when every event must reach an overridden ``_fire_event`` /
        ``fire_event`` (the run then uses Ignite's loop). Reads the table without creating a key for the event.
        """
        if self._hl_faithful:
            return True
        handlers = self._event_handlers.get(event_name)
        return bool(handlers)

    def _every_event_fired(self) -> bool:
        """Whether this run fires every event through an overridden ``_fire_event`` / ``fire_event`` (Ignite's loop):
        then no event may be skipped, even one without handlers."""
        return self._hl_faithful

    def _fire_if_handled(self, event_name: Any) -> None:
        """``fire_event(event_name)`` when it has handlers (:meth:`_has_handlers`): the rule the loop follows for
        its own events, for events fired from inside an iteration (a workflow's ``IterationEvents``)."""
        if self._hl_faithful or self._event_handlers.get(event_name):
            self.fire_event(event_name)

    # -- data ----------------------------------------------------------------------------------------------------

    def _set_data_wrapper(self, wrapper: Callable[[Any], Any] | None) -> None:
        """Apply ``wrapper`` to every data iterator the engine makes from now on (``None``: none).

        ``prefetch=True`` installs a :class:`hotloop.step.DevicePrefetcher` this way. The wrapper should not hold
        the engine (it is stored on it).
        """
        self._hl_data_wrapper = wrapper

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

    def _hl_run_as_gen(self, legacy: bool) -> Generator[State, None, Any]:
        # Mirrors ignite.engine.Engine._internal_run_as_gen / _internal_run_legacy (0.5.5) statement by statement;
        # the changes: flag checks that find nothing set skip the generator round trip, and in legacy mode a
        # StopIteration leaving the loop is carried out to ``_drive`` instead of becoming a RuntimeError.
        hot = _HotEvents(self, legacy)
        try:
            self.should_terminate = self.should_terminate_single_epoch = self.should_interrupt = False
            self._init_timers(self.state)
            start_time = time.time()
            try:
                try:
                    self._fire_event(Events.STARTED)
                    if self._hl_flag_set:
                        yield from hot.check()
                    while not self._is_done(self.state) and not self.should_terminate:
                        self.state.epoch += 1
                        handlers_start_time = time.time()
                        self._fire_event(Events.EPOCH_STARTED)
                        epoch_time_taken = time.time() - handlers_start_time
                        if self._hl_flag_set:
                            # A resume from here is seen by the flag test at the start of the epoch's loop.
                            yield from hot.check()
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
                        if self._hl_flag_set:
                            yield from hot.check()
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

    def _hl_data_ended(self, iter_counter: int, should_exit: bool) -> bool:
        """What Ignite's loop does when the data iterator is exhausted; True when the epoch ends here.

        The first exhaustion of a run without ``epoch_length`` sets it (and ``max_epochs`` from ``max_iters``); an
        iterator exhausted again right after being restarted ends the epoch with Ignite's warning if the run is not
        done. Otherwise the loop restarts the iterator.
        """
        state: Any = self.state
        if state.epoch_length is None:
            state.epoch_length = iter_counter
            if state.max_iters is not None:
                state.max_epochs = math.ceil(state.max_iters / state.epoch_length)
            return True
        if not should_exit:
            return False
        if not self._is_done(state):
            total_iters = state.epoch_length * state.max_epochs if state.max_epochs is not None else state.max_iters
            warnings.warn(  # noqa: B028 - Ignite's call, default stacklevel
                "Data iterator can not provide data anymore but required total number of iterations to run is not "
                f"reached. Current iteration: {state.iteration} vs Total iterations to run : {total_iters}"
            )
        return True

    def _hl_run_once_on_dataset(self, legacy: bool) -> Generator[State, None, Any]:  # noqa: C901
        # Mirrors ignite.engine.Engine._run_once_on_dataset_as_gen (0.5.5): state.batch, state.output and
        # last_event_name are written at the same moments; an event without handlers is not dispatched, and the
        # termination flags are read after each piece of user code (the data iterator, the process function, any
        # handler) instead of after each event. ``hot`` fires the events and re-reads the handler lists when stale.
        try:
            start_time = time.time()
            iter_counter = 0 if self._init_iter is None else self._init_iter
            self._init_iter = None
            should_exit = False
            hot = _HotEvents(self, legacy)
            # A flag set before the epoch (by a resume after an interrupt on EPOCH_STARTED, or by user code in
            # iter(data)) is seen at Ignite's first check of the epoch, whether or not its event has handlers.
            gbs, gbc, its, itc = hot.reload(resumed=self._hl_flag_set)
            try:
                if self._dataloader_iter is None:
                    raise RuntimeError(_NO_DATA_ITERATOR)
                while True:
                    state = self.state
                    state.batch = None
                    try:
                        last = self.last_event_name  # DATALOADER_STOP_ITERATION: the iterator was just restarted
                        if last is not DSI and (type(last) is Events or last != DSI) and state.dataloader is not None:
                            if not gbs:  # else set by the dispatch, after Ignite's debug line (as Ignite does)
                                self.last_event_name = GBS
                            elif hot.fire(GBS, gbs):
                                gbs, gbc, its, itc = yield from hot.settle()
                            state = self.state
                        state.batch = next(self._dataloader_iter)
                        state.output = None
                        if state.dataloader is not None:  # the data iterator is user code (without data: ours)
                            if hot.table.version != hot.version:
                                gbs, gbc, its, itc = hot.reload()
                            if not gbc:
                                self.last_event_name = GBC
                            if (gbc and hot.fire(GBC, gbc)) or self._hl_flag_set:
                                gbs, gbc, its, itc = yield from hot.settle()
                            state = self.state
                        iter_counter += 1
                        should_exit = False
                    except StopIteration:
                        if self._hl_data_ended(iter_counter, should_exit):
                            break
                        if self.state.dataloader is not None:
                            self._fire_event(DSI)
                            if self._hl_flag_set:
                                yield from hot.check()
                        self._setup_dataloader_iter()
                        gbs, gbc, its, itc = hot.reload()
                        should_exit = True
                        continue
                    state.iteration += 1
                    if not its:
                        self.last_event_name = ITS
                    elif hot.fire(ITS, its):
                        gbs, gbc, its, itc = yield from hot.settle()
                    state = self.state
                    state.output = self._process_function(self, state.batch)
                    if hot.table.version != hot.version:  # handlers of ITERATION_STARTED or the process function
                        gbs, gbc, its, itc = hot.reload()
                    if not itc:
                        self.last_event_name = ITC
                    if (itc and hot.fire(ITC, itc)) or self._hl_flag_set:
                        gbs, gbc, its, itc = yield from hot.settle()
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
