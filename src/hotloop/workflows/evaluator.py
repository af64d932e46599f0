"""MONAI's evaluators (``monai.engines.evaluator``): ``Evaluator``, ``SupervisedEvaluator``, ``EnsembleEvaluator``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import EventEnum
from ignite.metrics import Metric
from torch.utils.data import DataLoader

from hotloop.engine import Engine
from hotloop.workflows import _monai
from hotloop.workflows._iteration import autocast, eval_mode, network_forward, plain, prepared, train_mode
from hotloop.workflows.utils import (
    CommonKeys,
    EngineStatsKeys,
    ForwardMode,
    _ensure_tuple,
    default_metric_cmp_fn,
    default_prepare_batch,
)
from hotloop.workflows.workflow import Workflow

__all__ = ["EnsembleEvaluator", "Evaluator", "SupervisedEvaluator"]

_IMAGE, _LABEL, _PRED = CommonKeys.IMAGE, CommonKeys.LABEL, CommonKeys.PRED


def _mode_context(mode: Any) -> Callable[..., Any]:
    """``eval_mode`` or ``train_mode`` for ``mode`` (``"eval"``, ``"train"`` or a ``ForwardMode``).

    Raises:
        ValueError: ``mode`` is neither.
    """
    if mode == ForwardMode.EVAL:
        return eval_mode
    if mode == ForwardMode.TRAIN:
        return train_mode
    raise ValueError(f"Unsupported option '{mode}', available options are [{ForwardMode.TRAIN}, {ForwardMode.EVAL}].")


class Evaluator(Workflow):
    """The base of the evaluators: one epoch per ``run``, numbered after the trainer's epoch when given.

    MONAI's ``monai.engines.Evaluator``: the arguments are :class:`~hotloop.workflows.Workflow`'s with
    ``val_data_loader``, ``key_val_metric`` and ``val_handlers`` for ``data_loader``, ``key_metric`` and
    ``handlers``, and ``max_epochs`` fixed to 1.

    Args:
        device: the device to run on.
        val_data_loader: an iterable or ``DataLoader``.
        epoch_length: iterations per run; ``len(val_data_loader)`` when it has a length.
        non_blocking: passed to ``prepare_batch``.
        prepare_batch: see :class:`~hotloop.workflows.Workflow`.
        iteration_update: replaces ``_iteration`` as the process function.
        postprocessing: a transform applied to the output on ``MODEL_COMPLETED``.
        key_val_metric: ``{name: Metric}`` whose best value is tracked.
        additional_metrics: more metrics.
        metric_cmp_fn: ``(current, best) -> bool``.
        val_handlers: objects with ``attach(engine)``.
        amp: autocast the forward pass.
        mode: ``"eval"`` (``network.eval()`` and no gradients) or ``"train"``.
        event_names: more events to register.
        event_to_attr: maps events to state attributes.
        decollate: per-sample lists after the model work.
        to_kwargs: further ``Tensor.to`` arguments.
        amp_kwargs: arguments for ``torch.autocast``.

    Raises:
        ValueError: ``mode`` is not ``"eval"`` or ``"train"``.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable | DataLoader,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_val_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        mode: ForwardMode | str = ForwardMode.EVAL,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=1,
            data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_val_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=val_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.mode = _mode_context(mode)

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        """Run one evaluation, numbered as epoch ``global_epoch`` (the trainer's epoch when called from one).

        Args:
            global_epoch: the overall epoch; the evaluator's state is set to end at it.
        """
        self.state.max_epochs = max(global_epoch, 1)  # at least one epoch of validation
        self.state.epoch = global_epoch - 1
        self.state.iteration = 0
        super().run()

    def get_stats(self, *vars: str) -> dict[str, Any]:
        """``rank``, ``best_validation_epoch``, ``best_validation_metric``, and each state attribute in ``vars``."""
        stats: dict[str, Any] = {
            EngineStatsKeys.RANK: self.state.rank,
            EngineStatsKeys.BEST_VALIDATION_EPOCH: self.state.best_metric_epoch,
            EngineStatsKeys.BEST_VALIDATION_METRIC: self.state.best_metric,
        }
        for k in vars:
            stats[k] = getattr(self.state, k, None)
        return stats


class SupervisedEvaluator(Evaluator):
    """Evaluates a network on images (and labels): MONAI's ``monai.engines.SupervisedEvaluator``.

    Each iteration: ``prepare_batch``, ``state.output = {"image", "label"}``, ``pred = inferer(image, network)``
    under ``mode``, then ``FORWARD_COMPLETED`` and ``MODEL_COMPLETED`` (where decollation and postprocessing run).
    The network and inferer see plain tensors: ``MetaTensor`` inputs are unwrapped for the compute, and ``pred``
    is given the image's metadata afterwards, as MONAI's ``MetaTensor`` propagation would.

    Args:
        device: the device to run on.
        val_data_loader: an iterable or ``DataLoader``.
        network: the model.
        epoch_length: iterations per run.
        non_blocking: passed to ``prepare_batch``.
        prepare_batch: see :class:`~hotloop.workflows.Workflow`.
        iteration_update: replaces ``_iteration``.
        inferer: ``inferer(inputs, network, *args, **kwargs)``; ``SimpleInferer()`` by default.
        postprocessing: a transform applied to the output on ``MODEL_COMPLETED``.
        key_val_metric: ``{name: Metric}`` whose best value is tracked.
        additional_metrics: more metrics.
        metric_cmp_fn: ``(current, best) -> bool``.
        val_handlers: objects with ``attach(engine)``.
        amp: autocast the forward pass.
        mode: ``"eval"`` or ``"train"``.
        event_names: more events to register.
        event_to_attr: maps events to state attributes.
        decollate: per-sample lists after the model work.
        to_kwargs: further ``Tensor.to`` arguments.
        amp_kwargs: arguments for ``torch.autocast``.
        compile: compile the network's forward with ``torch.compile`` through hotloop's compiled-step machinery
            (one graph per input shape, eager fallback): False, True, ``"auto"`` or a dict of ``torch.compile``
            arguments.
        compile_kwargs: ``torch.compile`` arguments when ``compile`` is True.

    Examples:
        >>> import torch
        >>> from hotloop.workflows import SupervisedEvaluator
        >>> data = [{"image": torch.rand(2, 1, 8, 8), "label": torch.rand(2, 1, 8, 8)}]
        >>> evaluator = SupervisedEvaluator("cpu", data, torch.nn.Conv2d(1, 1, 3, padding=1), decollate=False)
        >>> evaluator.run()
        >>> evaluator.state.output["pred"].shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Callable | None = None,
        postprocessing: Callable | None = None,
        key_val_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        mode: ForwardMode | str = ForwardMode.EVAL,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        compile: bool | str | dict = False,
        compile_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            val_handlers=val_handlers,
            amp=amp,
            mode=mode,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.network = network
        self.compile = compile
        self._hl_forward = network_forward(network, compile, compile_kwargs, self.state.device)
        self._hl_forward_net = network  # a network assigned later to ``self.network`` runs as it is
        self.inferer = _monai.default_inferer() if inferer is None else inferer

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:
        """One evaluation iteration; returns ``state.output`` (``image``, ``label``, ``pred``).

        Raises:
            ValueError: ``batchdata`` is None.
        """
        inputs, targets, args, kwargs = prepared(engine, batchdata)
        engine.state.output = output = {_IMAGE: inputs, _LABEL: targets}
        x = plain(inputs, engine._hl_meta_type)
        forward = engine._hl_forward if engine.network is engine._hl_forward_net else engine.network
        with engine.mode(engine.network), autocast(engine.amp, engine.amp_kwargs):
            pred = engine.inferer(x, forward, *args, **kwargs)  # pred: [B, C, *spatial]
        output[_PRED] = pred if x is inputs else _monai.like(pred, inputs)
        engine._hl_fire(engine._hl_events.FORWARD_COMPLETED)
        engine._hl_fire(engine._hl_events.MODEL_COMPLETED)
        return engine.state.output


class EnsembleEvaluator(Evaluator):
    """Evaluates several networks on the same batches: MONAI's ``monai.engines.EnsembleEvaluator``.

    ``state.output`` holds ``image``, ``label`` and one prediction per network under ``pred_keys``.

    Args:
        device: the device to run on.
        val_data_loader: an iterable or ``DataLoader``.
        networks: the models, run in order.
        pred_keys: the output key of each network's prediction; ``pred_0``, ``pred_1``, ... by default.
        epoch_length: iterations per run.
        non_blocking: passed to ``prepare_batch``.
        prepare_batch: see :class:`~hotloop.workflows.Workflow`.
        iteration_update: replaces ``_iteration``.
        inferer: ``inferer(inputs, network, *args, **kwargs)``; ``SimpleInferer()`` by default.
        postprocessing: a transform applied to the output on ``MODEL_COMPLETED``.
        key_val_metric: ``{name: Metric}`` whose best value is tracked.
        additional_metrics: more metrics.
        metric_cmp_fn: ``(current, best) -> bool``.
        val_handlers: objects with ``attach(engine)``.
        amp: autocast the forward passes.
        mode: ``"eval"`` or ``"train"``.
        event_names: more events to register.
        event_to_attr: maps events to state attributes.
        decollate: per-sample lists after the model work.
        to_kwargs: further ``Tensor.to`` arguments.
        amp_kwargs: arguments for ``torch.autocast``.

    Raises:
        ValueError: ``pred_keys`` and ``networks`` differ in length.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable | DataLoader,
        networks: Sequence[torch.nn.Module],
        pred_keys: Sequence[str] | str | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Callable | None = None,
        postprocessing: Callable | None = None,
        key_val_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        mode: ForwardMode | str = ForwardMode.EVAL,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            val_handlers=val_handlers,
            amp=amp,
            mode=mode,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.networks = _ensure_tuple(networks)
        self.pred_keys = (
            [f"{_PRED}_{i}" for i in range(len(self.networks))] if pred_keys is None else _ensure_tuple(pred_keys)
        )
        if len(self.pred_keys) != len(self.networks):
            raise ValueError("length of `pred_keys` must be same as the length of `networks`.")
        self.inferer = _monai.default_inferer() if inferer is None else inferer

    def _iteration(self, engine: EnsembleEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:
        """One ensemble iteration; returns ``state.output`` (``image``, ``label`` and each ``pred_keys`` entry).

        Raises:
            ValueError: ``batchdata`` is None.
        """
        inputs, targets, args, kwargs = prepared(engine, batchdata)
        engine.state.output = {_IMAGE: inputs, _LABEL: targets}
        x = plain(inputs, engine._hl_meta_type)
        for key, network in zip(engine.pred_keys, engine.networks):
            with engine.mode(network), autocast(engine.amp, engine.amp_kwargs):
                pred = engine.inferer(x, network, *args, **kwargs)
            if isinstance(engine.state.output, dict):
                engine.state.output[key] = pred if x is inputs else _monai.like(pred, inputs)
        engine._hl_fire(engine._hl_events.FORWARD_COMPLETED)
        engine._hl_fire(engine._hl_events.MODEL_COMPLETED)
        return engine.state.output
