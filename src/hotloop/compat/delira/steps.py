"""The steps of the delira trainer: the network's ``closure`` as delira calls it, and the pieces of hotloop's step."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from hotloop.compat.delira.data import _StepBatch
from hotloop.step import build_eval_step, build_train_step
from hotloop.step.steps import call_model, identity, loss_item, train_output

__all__: list[str] = []


class _SummedCriterions:
    """The training loss: the sum of ``criterion(preds, *labels)`` over all criterions (delira's default closure)."""

    def __init__(self, criterions: Mapping[str, Callable]) -> None:
        self.criterions = criterions

    def __call__(self, y_pred: Any, y: tuple) -> torch.Tensor:
        total: Any = 0
        for fn in self.criterions.values():
            total = total + fn(y_pred, *y)
        return total


class _EvalValues:
    """Output of hotloop's evaluation step, as delira's closure returns it without optimizers:
    ``({"val_<metric>": value}, {"val_<criterion>": value}, [preds])``."""

    def __init__(self, criterions: Mapping[str, Callable], metrics: Mapping[str, Callable]) -> None:
        self.criterions = criterions
        self.metrics = metrics

    def __call__(self, x: Any, y: tuple, y_pred: Any) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        preds = list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]
        if not y:  # no labels: predictions only, as delira's closure skips losses and metrics
            return {}, {}, preds
        metric_vals = {f"val_{k}": fn(y_pred, *y) for k, fn in self.metrics.items()}
        loss_vals = {f"val_{k}": fn(y_pred, *y).detach() for k, fn in self.criterions.items()}
        return metric_vals, loss_vals, preds


class _StepCounter:
    """delira's ``batch_nr``: the index of the iteration within its epoch (an integer test per iteration)."""

    __slots__ = ("epoch", "first")

    def __init__(self) -> None:
        self.epoch = -1
        self.first = 0

    def __call__(self, state: Any) -> int:
        if state.epoch != self.epoch:
            self.epoch, self.first = state.epoch, state.iteration
        return state.iteration - self.first


class _ClosureTrainStep:
    """The training step of a network with delira's ``closure``, called as delira's trainer calls it.

    ``closure(module, network.prepare_batch(batch, ...), optimizers=trainer.optimizers,
    criterions=trainer.criterions, metrics=trainer.metrics, fold=trainer.fold, batch_nr=...)``, under
    ``torch.autocast`` with mixed precision; its return value is the iteration's output. The trainer is held weakly
    (the engine is the trainer's attribute).
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = weakref.ref(trainer)
        self.batch_nr = _StepCounter()

    def __call__(self, engine: Any, batch: Any) -> Any:
        trainer: Any = self.trainer()
        data_dict = trainer._prepare(batch)
        with trainer._autocast():
            return trainer._closure(
                trainer.module,
                data_dict,
                optimizers=trainer.optimizers,
                criterions=trainer.criterions,
                metrics=trainer.metrics,
                fold=trainer.fold,
                batch_nr=self.batch_nr(engine.state),
            )


class _ClosureEvalStep:
    """The prediction step with delira's ``closure``: ``closure(module, batch, optimizers={}, criterions=...,
    metrics=..., fold=...)`` on a prepared (and possibly stacked) batch; returns ``(metrics, losses, preds)``."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = weakref.ref(trainer)

    def __call__(self, engine: Any, batch: Any) -> Any:
        trainer: Any = self.trainer()
        with trainer._autocast():
            return trainer._closure(
                trainer.module,
                batch,
                optimizers={},
                criterions=trainer.criterions,
                metrics=trainer.metrics,
                fold=trainer.fold,
            )


def hotloop_steps(trainer: Any) -> tuple[Callable, Callable]:
    """The training and prediction steps of hotloop's step builder for ``trainer``: delira's default closure
    (``network(batch["data"])``, the summed criterions, ``optimizers["default"]``) with its step options."""
    common: dict[str, Any] = {
        "device": trainer.input_device,
        "non_blocking": trainer.use_gpu,
        "model_transform": identity,
        "model_fn": call_model,
        "amp": trainer.mixed_precision,
        "options": trainer._options,
    }
    train_step = build_train_step(
        trainer.module,
        _step_optimizer(trainer.optimizers),
        _SummedCriterions(trainer.criterions),
        prepare_batch=_StepBatch(trainer._prepare),
        output_transform=train_output(loss_item, trainer._options),
        gradient_accumulation_steps=1,
        scaler=trainer.scaler,
        **common,
    )
    eval_step = build_eval_step(
        trainer.module,
        prepare_batch=_StepBatch(None),  # predict prepares (and stacks) the batches before the step
        output_transform=_EvalValues(trainer.criterions, trainer.metrics),
        **common,
    )
    return train_step, eval_step


def _step_optimizer(optimizers: Mapping[str, Any]) -> torch.optim.Optimizer:
    if "default" in optimizers:
        return optimizers["default"]._optimizer
    if len(optimizers) > 1:
        raise ValueError(
            f"optim_fn returned optimizers {sorted(optimizers)} without a 'default' one; hotloop's step "
            "(delira's default closure) steps optimizers['default']"
        )
    return next(iter(optimizers.values()))._optimizer
