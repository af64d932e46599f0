"""MONAI's evaluators (``monai.engines.evaluator``): ``Evaluator``, ``SupervisedEvaluator``, ``EnsembleEvaluator``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import EventEnum
from ignite.metrics import Metric
from torch.utils.data import DataLoader

from hotloop.engine import Engine
from hotloop.step import Autocast, EvalStep, Iteration, StepOptions
from hotloop.workflows import _monai
from hotloop.workflows._iteration import (
    InfererCall,
    compile_option,
    eval_mode,
    plain,
    prepared,
    restore_after_compile,
    train_mode,
    unwrap_for_compile,
)
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
        postprocessing_mode: hotloop only (keyword-only); see :class:`~hotloop.workflows.Workflow`.

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
        *,
        postprocessing_mode: str = "fused",
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
            postprocessing_mode=postprocessing_mode,
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
    The network and inferer get the batch as ``prepare_batch`` gives it (a ``MetaTensor`` batch stays one), as in
    MONAI.

    The step is built by hotloop's step builder, like every API's: ``compile`` and the keyword-only ``cuda_graphs``,
    ``prefetch`` and ``max_compiled_shapes`` are :class:`hotloop.step.StepOptions` and mean what they mean everywhere
    (``docs/hot-path.md``): the compiled or captured step is the inferer's forward, ``inferer(image, network)``;
    ``FORWARD_COMPLETED`` and ``MODEL_COMPLETED`` fire after it, so their handlers cost it nothing. An iteration with
    extra ``prepare_batch`` arguments, or after the network or inferer was replaced, runs MONAI's forward with the
    network compiled alone (``compile``) or eagerly (``cuda_graphs``, one warning). Where MONAI unwraps MetaTensors,
    when compiled, so does hotloop: plain tensors go in, and ``image``, ``label`` and ``pred`` are cast back before
    ``FORWARD_COMPLETED``, with MONAI's warning. A CUDA-graphed forward runs on plain tensors and ``pred`` (a copy)
    gets the image's metadata after it. Not graphed: ``mode="train"``.

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
        postprocessing_mode: hotloop only (keyword-only); see :class:`~hotloop.workflows.Workflow`.
        compile: hotloop's ``compile`` (:class:`~hotloop.step.StepOptions`): False, True, ``"auto"`` or a dict of
            ``torch.compile`` arguments.
        compile_kwargs: ``torch.compile`` arguments when ``compile`` is True.
        cuda_graphs: hotloop only (keyword-only); see :class:`~hotloop.step.StepOptions`.
        prefetch: hotloop only (keyword-only); ``state.batch`` then holds the batch on the device.
        max_compiled_shapes: hotloop only (keyword-only).

    Raises:
        TypeError: ``prefetch`` is not a bool.
        ValueError: ``mode`` is not ``"eval"`` or ``"train"``, or a step option is invalid.
        RuntimeError: ``cuda_graphs=True`` without a usable CUDA device.

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
        *,
        postprocessing_mode: str = "fused",
        cuda_graphs: bool | str = False,
        prefetch: bool = False,
        max_compiled_shapes: int = 4,
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
            postprocessing_mode=postprocessing_mode,
        )
        options = StepOptions(
            compile_option(compile, compile_kwargs),
            cuda_graphs,
            prefetch=prefetch,
            max_compiled_shapes=max_compiled_shapes,
        )
        self.prefetch = prefetch
        self.network = network
        self.compile = compile
        self.inferer = _monai.default_inferer() if inferer is None else inferer
        self.cuda_graphs = cuda_graphs
        self._hl_step = self._hl_build_step(options)
        self._hl_step.attach(self)  # the engine-side options, and self.step_choice

    def _hl_build_step(self, options: StepOptions) -> EvalStep:
        """MONAI's evaluation forward described to hotloop's step builder."""
        iteration = Iteration(
            self.network,
            InfererCall(self.inferer),
            autocast=Autocast.cuda(self.amp, **self.amp_kwargs),
            clone_outputs=True,  # state.output keeps pred past the next replay
            graph_blocker="mode='train'" if self.mode is not eval_mode else None,
            name="SupervisedEvaluator",
        )
        return EvalStep(iteration, options, self.state.device, self._hl_parts())

    def _hl_parts(self) -> tuple[Any, ...]:
        return (self.network, self.inferer, self.mode)

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:
        """One evaluation iteration; returns ``state.output`` (``image``, ``label``, ``pred``).

        Raises:
            ValueError: ``batchdata`` is None.
        """
        inputs, targets, args, kwargs = prepared(engine, batchdata)
        step = engine._hl_step
        fused = step.takes(engine, (), engine._hl_parts(), (args, kwargs))
        if fused and step.variant == "graphed":
            engine._hl_graphed_forward(inputs, targets)
        else:
            engine._hl_forward(inputs, targets, args, kwargs, fused)
        engine._fire_if_handled(engine._hl_events.FORWARD_COMPLETED)
        engine._fire_if_handled(engine._hl_events.MODEL_COMPLETED)
        return engine.state.output

    def _hl_forward(self, inputs: Any, targets: Any, args: tuple, kwargs: dict, fused: bool) -> None:
        """MONAI's forward (or the compiled step): ``state.output = {image, label, pred}``, MetaTensors unwrapped only
        when compiled."""
        step = self._hl_step
        meta_type = self._hl_meta_type
        inputs_meta = targets_meta = None
        if step.compiled:
            inputs, targets, inputs_meta, targets_meta = unwrap_for_compile(inputs, targets, meta_type)
        self.state.output = output = {_IMAGE: inputs, _LABEL: targets}
        with self.mode(self.network):
            if fused:
                output[_PRED] = step(inputs)
            else:
                compiled = step.compiled_model
                forward = compiled if compiled is not None and self.network is step.it.model else self.network
                with step.it.autocast():
                    output[_PRED] = self.inferer(inputs, forward, *args, **kwargs)  # pred: [B, C, *spatial]
        restore_after_compile(output, inputs, targets, inputs_meta, targets_meta, meta_type)

    def _hl_graphed_forward(self, inputs: Any, targets: Any) -> None:
        """The forward through the CUDA graph, on plain tensors; ``pred`` gets the image's metadata after it."""
        self.state.output = output = {_IMAGE: inputs, _LABEL: targets}
        x = plain(inputs, self._hl_meta_type)
        with self.mode(self.network):
            pred = self._hl_step(x)  # a copy: the graph's own output is overwritten by the next replay
        output[_PRED] = pred if x is inputs else _monai.like(pred, inputs)


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
        postprocessing_mode: hotloop only (keyword-only); see :class:`~hotloop.workflows.Workflow`.

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
        *,
        postprocessing_mode: str = "fused",
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
            postprocessing_mode=postprocessing_mode,
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
        for key, network in zip(engine.pred_keys, engine.networks):
            with engine.mode(network), Autocast.cuda(engine.amp, **engine.amp_kwargs)():
                pred = engine.inferer(inputs, network, *args, **kwargs)
            if isinstance(engine.state.output, dict):
                engine.state.output[key] = pred
        engine._fire_if_handled(engine._hl_events.FORWARD_COMPLETED)
        engine._fire_if_handled(engine._hl_events.MODEL_COMPLETED)
        return engine.state.output
