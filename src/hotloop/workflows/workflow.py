"""``Workflow``: MONAI's base workflow (``monai.engines.Workflow``) on hotloop's :class:`~hotloop.Engine`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import EventEnum, Events, State
from ignite.metrics import Metric
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from hotloop.engine import Engine
from hotloop.workflows import _monai
from hotloop.workflows._postprocess import POSTPROCESSING_MODES, Postprocess
from hotloop.workflows.utils import _ensure_tuple, default_metric_cmp_fn, default_prepare_batch, iteration_events

__all__ = ["Workflow"]


def _call_iteration(engine: Workflow, batchdata: Any) -> Any:
    # The process function. Calling ``engine._iteration`` through the engine, not a bound method stored in the
    # engine, keeps the engine free of a reference cycle (it is freed as soon as the user drops it).
    return engine._iteration(engine, batchdata)


def _is_scalar(val: Any) -> bool:
    """MONAI's ``is_scalar``: a 0-d tensor, or what ``numpy.isscalar`` accepts."""
    if isinstance(val, torch.Tensor):
        return val.ndim == 0
    try:
        import numpy as np
    except ImportError:
        return isinstance(val, (int, float, complex, str, bytes))
    return bool(np.isscalar(val))


class Workflow(Engine):
    """The base of MONAI's trainers and evaluators: an :class:`~hotloop.Engine` with MONAI's workflow state.

    ``monai.engines.Workflow`` with the same arguments, state, events and behaviour; see ``docs/migration-monai.md``
    for the differences. It registers ``IterationEvents`` (MONAI's own class when MONAI is installed), decollates
    each iteration's batch and output on ``MODEL_COMPLETED`` when ``decollate``, applies ``postprocessing`` there,
    attaches ``key_metric`` and ``additional_metrics`` and tracks the best key metric
    (``state.best_metric``, ``state.best_metric_epoch``), and attaches ``handlers``.

    Args:
        device: the device to run on.
        max_epochs: the number of epochs to run.
        data_loader: an iterable or ``torch.utils.data.DataLoader``.
        epoch_length: iterations per epoch; ``len(data_loader)`` when it has a length.
        non_blocking: passed to ``prepare_batch`` for asynchronous host-to-device copies.
        prepare_batch: ``(batchdata, device, non_blocking, **to_kwargs)`` returning ``(inputs, targets)`` or
            ``(inputs, targets, args, kwargs)``.
        iteration_update: replaces the workflow's own ``_iteration`` as the process function.
        postprocessing: a transform applied to each iteration's output on ``MODEL_COMPLETED``.
        key_metric: ``{name: Metric}``, the metric whose best value is tracked.
        additional_metrics: more ``{name: Metric}`` to attach.
        metric_cmp_fn: ``(current, best) -> bool``, True when ``current`` is better.
        handlers: objects with ``attach(engine)``.
        amp: run the forward pass under ``torch.autocast("cuda", **amp_kwargs)``.
        event_names: more events to register: strings, ``EventEnum`` members or ``EventEnum`` classes.
        event_to_attr: maps events to state attributes (``Engine.register_events``).
        decollate: turn the batch and output into per-sample lists after the model work of each iteration.
        to_kwargs: further ``Tensor.to`` arguments for ``prepare_batch``.
        amp_kwargs: arguments for ``torch.autocast``.
        postprocessing_mode: hotloop only (keyword-only): how ``postprocessing`` runs with ``decollate``: ``"fused"``
            (default) once on the batch, fused, within the tolerance stated in ``docs/migration-monai.md``;
            ``"exact"`` once on the batch, MONAI's values bit for bit; ``"per_sample"`` MONAI's own path, on each
            sample after decollation. A transform hotloop cannot translate always runs per sample.

    Raises:
        TypeError: ``key_metric`` or ``additional_metrics`` is not a dict.
        ValueError: ``event_names`` is not a list of strings or ``EventEnum``\\ s, or ``postprocessing_mode`` is
            none of the above.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        data_loader: Iterable | DataLoader,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        *,
        postprocessing_mode: str = "fused",
    ) -> None:
        if postprocessing_mode not in POSTPROCESSING_MODES:
            raise ValueError(
                f"postprocessing_mode should be one of {POSTPROCESSING_MODES}, got {postprocessing_mode!r}"
            )
        process_function: Any = _call_iteration if iteration_update is None else iteration_update
        super().__init__(process_function)
        self._hl_register_sampler_epoch(data_loader)
        if epoch_length is None and isinstance(data_loader, Sized):
            try:
                epoch_length = len(data_loader)
            except TypeError:  # an iterable dataset without a length: epoch_length stays None
                pass
        self.state: Any = State(
            rank=dist.get_rank() if dist.is_available() and dist.is_initialized() else 0,
            seed=0,
            iteration=0,
            epoch=0,
            max_epochs=max_epochs,
            epoch_length=epoch_length,
            output=None,
            batch=None,
            metrics={},
            metric_details={},
            dataloader=None,
            device=device if isinstance(device, torch.device) or device is None else torch.device(device),
            key_metric_name=None,
            best_metric=-1,
            best_metric_epoch=-1,
        )
        self.data_loader = data_loader
        self.non_blocking = non_blocking
        self.prepare_batch = prepare_batch
        self.metric_cmp_fn = metric_cmp_fn
        self.amp = amp
        self.to_kwargs = {} if to_kwargs is None else to_kwargs
        self.amp_kwargs = {} if amp_kwargs is None else amp_kwargs
        self.scaler: Any = None
        self.prefetch = False  # hotloop only: SupervisedTrainer / SupervisedEvaluator take it
        events = iteration_events()
        # Looked up once: the iteration fires these only when they have handlers (``Engine._fire_if_handled``).
        self._hl_events = events
        self._hl_meta_type = _monai.meta_tensor_type()
        self._hl_register_events(event_names, event_to_attr, events)
        self._hl_post: Postprocess | None = None
        self._hl_post_mode = postprocessing_mode
        if decollate:
            self._register_decollate()
        if postprocessing is not None:
            self._register_postprocessing(postprocessing)
        if key_metric is not None:
            self._register_metrics(key_metric, additional_metrics)
        if handlers is not None:
            self._register_handlers(handlers)

    # -- construction ----------------------------------------------------------------------------------------------

    def _hl_register_sampler_epoch(self, data_loader: Any) -> None:
        sampler = getattr(data_loader, "sampler", None) if isinstance(data_loader, DataLoader) else None
        if isinstance(sampler, DistributedSampler):

            @self.on(Events.EPOCH_STARTED)
            def set_sampler_epoch(engine: Engine) -> None:
                sampler.set_epoch(engine.state.epoch)

    def _hl_register_events(self, event_names: Any, event_to_attr: dict | None, events: type[EventEnum]) -> None:
        if event_names is None:
            names: list[Any] = [events]
        elif not isinstance(event_names, list):
            raise ValueError("`event_names` must be a list of strings or EventEnums.")
        else:
            names = [*event_names, events]  # MONAI appends to the caller's list; hotloop leaves it alone
        for name in names:
            if isinstance(name, (str, EventEnum)):
                self.register_events(name, event_to_attr=event_to_attr)
            elif isinstance(name, type) and issubclass(name, EventEnum):
                self.register_events(*name, event_to_attr=event_to_attr)
            else:
                raise ValueError("`event_names` must be a list of strings or EventEnums.")

    def _hl_postprocess(self) -> Postprocess:
        """The one ``MODEL_COMPLETED`` handler that decollates and postprocesses, attached on first use."""
        handler = self._hl_post
        if handler is None:
            handler = self._hl_post = Postprocess(self._hl_post_mode, self._hl_meta_type)
            self.add_event_handler(self._hl_events.MODEL_COMPLETED, handler)
        return handler

    def _register_decollate(self) -> None:
        """Decollate ``state.batch`` and ``state.output`` on ``MODEL_COMPLETED`` (MONAI's ``Decollated``)."""
        self._hl_postprocess().decollate = True

    def _register_postprocessing(self, posttrans: Callable) -> None:
        """Apply ``posttrans`` on ``MODEL_COMPLETED``: on the batch where it translates, else per sample."""
        self._hl_postprocess().transform = posttrans

    def _register_metrics(self, k_metric: dict, add_metrics: dict | None = None) -> None:
        """Attach the key metric and the additional metrics, and track the best key metric every epoch."""
        if not isinstance(k_metric, dict):
            raise TypeError(f"`key_metric` must be None or a dict but is {type(k_metric).__name__}.")
        self.state.key_metric_name = list(k_metric.keys())[0]
        metrics = dict(k_metric)
        if add_metrics is not None and len(add_metrics) > 0:
            if not isinstance(add_metrics, dict):
                raise TypeError(f"Additional metrics must be None or a dict but is {type(add_metrics).__name__}.")
            metrics.update(add_metrics)
        for name, metric in metrics.items():
            metric.attach(self, name)
        self.add_event_handler(Events.EPOCH_COMPLETED, _compare_metrics)

    def _register_handlers(self, handlers: Sequence) -> None:
        """Attach every handler (anything with ``attach(engine)``)."""
        for handler in _ensure_tuple(handlers):
            handler.attach(self)

    # -- running ---------------------------------------------------------------------------------------------------

    def run(self) -> None:  # type: ignore[override]
        """Run the workflow over ``data_loader`` for ``state.max_epochs`` epochs (skipped with a warning if empty)."""
        if self.state.epoch_length == 0:
            warnings.warn(
                "`dataloader` is empty or the specified `epoch_length` is 0, skip the `run`."
                " If running distributed training, the program may hang in `all-gather`, `all-reduce`, etc."
                " because not all the ranks run the same computation logic.",
                stacklevel=2,
            )
            return
        super().run(data=self.data_loader, max_epochs=self.state.max_epochs)

    def _iteration(self, engine: Any, batchdata: dict[str, torch.Tensor]) -> dict:
        """The work of one iteration; subclasses implement it.

        Raises:
            NotImplementedError: always, here.
        """
        raise NotImplementedError(f"Subclass {self.__class__.__name__} must implement this method.")

    def get_stats(self, *vars: str) -> dict[str, Any]:
        """``{name: getattr(state, name, None)}`` for each name in ``vars``."""
        return {k: getattr(self.state, k, None) for k in vars}


def _compare_metrics(engine: Workflow) -> None:
    """Keep ``state.best_metric`` / ``best_metric_epoch`` up to date with the key metric (MONAI's handler)."""
    key_metric_name = engine.state.key_metric_name
    if key_metric_name is None:
        return
    current_val_metric = engine.state.metrics[key_metric_name]
    if not _is_scalar(current_val_metric):
        warnings.warn(
            "Key metric is not a scalar value, skip the metric comparison with the current best metric."
            "Please set other metrics as the key metric, or change the `reduction` mode to 'mean'.",
            stacklevel=2,
        )
        return
    if engine.state.best_metric_epoch == -1 or engine.metric_cmp_fn(current_val_metric, engine.state.best_metric):
        engine.logger.info(f"Got new best metric of {key_metric_name}: {current_val_metric}")
        engine.state.best_metric = current_val_metric
        engine.state.best_metric_epoch = engine.state.epoch
