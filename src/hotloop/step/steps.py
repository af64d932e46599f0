"""Ignite's supervised steps on the step builder: ``build_train_step`` and ``build_eval_step`` are the process
functions of ``create_supervised_trainer`` / ``create_supervised_evaluator`` (and of delira's ``hotloop_step``).

With default :class:`~hotloop.step.StepOptions` they are Ignite 0.5.5's steps, statement for statement; the options
act on the device body through the builder (:mod:`hotloop.step.builder`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import _prepare_batch as _ignite_prepare_batch

from hotloop.step.amp import Autocast
from hotloop.step.builder import EvalStep, Iteration, TrainStep
from hotloop.step.options import StepOptions

__all__ = [
    "attach_step",
    "build_eval_step",
    "build_train_step",
    "call_model",
    "identity",
    "loss_detached",
    "loss_item",
    "pred_and_target",
    "train_output",
]


# Ignite's defaults, as named functions (Ignite's are lambdas): ``train_output`` recognises ``loss_item``.


def identity(output: Any) -> Any:
    """Ignite's default ``model_transform``: the model's output as it is."""
    return output


def call_model(model: torch.nn.Module, x: Any) -> Any:
    """Ignite's default ``model_fn``: ``model(x)``."""
    return model(x)


def loss_item(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> Any:
    """Ignite's default training ``output_transform``: ``loss.item()`` (a host sync)."""
    return loss.item()


def loss_detached(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> Any:
    """The training output under ``no_sync``: ``loss.detach()``, a device tensor (no host sync)."""
    return loss.detach()


def pred_and_target(x: Any, y: Any, y_pred: Any) -> tuple[Any, Any]:
    """Ignite's default evaluation ``output_transform``: ``(y_pred, y)``."""
    return y_pred, y


def train_output(output_transform: Callable[..., Any], options: StepOptions) -> Callable[..., Any]:
    """The training ``output_transform`` under ``options``: ``no_sync`` turns the default :func:`loss_item` into
    :func:`loss_detached`; any other transform is kept."""
    return loss_detached if options.no_sync and output_transform is loss_item else output_transform


def _checked_prepare_batch(batch: Any, device: Any = None, non_blocking: bool = False) -> tuple[Any, Any]:
    """Ignite's default ``prepare_batch`` (``x, y = batch``) with an error that says what to pass instead."""
    kind = type(batch)
    if (kind is tuple or kind is list) and len(batch) == 2:
        return _ignite_prepare_batch(batch, device=device, non_blocking=non_blocking)  # type: ignore[return-value]
    if isinstance(batch, Mapping):
        # ``x, y = batch`` would unpack the keys, and the model would fail later on a string.
        raise TypeError(
            f"The default prepare_batch expects a batch (x, y), got a {kind.__name__} with keys {list(batch)}. "
            "Pass prepare_batch=lambda batch, device, non_blocking: (batch['image'], batch['label']) "
            "(with your keys; move them to device with ignite.utils.convert_tensor)"
        )
    if isinstance(batch, (tuple, list)):
        raise ValueError(
            f"The default prepare_batch expects a batch (x, y) of 2 items, got a {kind.__name__} of {len(batch)}. "
            "Pass a prepare_batch(batch, device, non_blocking) that returns (x, y)"
        )
    return _ignite_prepare_batch(batch, device=device, non_blocking=non_blocking)  # type: ignore[return-value]


def _check_prepare_batch(prepare_batch: Callable) -> Callable:
    return _checked_prepare_batch if prepare_batch is _ignite_prepare_batch else prepare_batch


class _ModelCall:
    """``model_transform(model_fn(model, x))``: how Ignite's steps call the model."""

    __slots__ = ("model_fn", "model_transform")

    def __init__(self, model_fn: Callable[[Any, Any], Any], model_transform: Callable[[Any], Any]) -> None:
        self.model_fn = model_fn
        self.model_transform = model_transform

    def __call__(self, model: Any, x: Any) -> Any:
        return self.model_transform(self.model_fn(model, x))


def build_train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    device: str | torch.device | None,
    non_blocking: bool,
    prepare_batch: Callable,
    model_transform: Callable[[Any], Any],
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any],
    gradient_accumulation_steps: int,
    model_fn: Callable[[torch.nn.Module, Any], Any],
    amp: bool = False,
    scaler: Any = None,
    options: StepOptions | None = None,
) -> Callable[[Any, Any], Any]:
    """A training step with Ignite's semantics, on the step builder.

    Host logic (zeroing gradients every ``gradient_accumulation_steps`` iterations, ``model.train()``,
    ``prepare_batch``, the optimizer step of an accumulation window, ``output_transform``) stays in Python; forward,
    ``model_transform``, loss, backward (of the loss divided by the accumulation steps, through the scaler) and, when
    it runs every iteration, the optimizer step are the body that ``options`` may compile or capture.

    Returns:
        ``update(engine, batch)``, the process function of a trainer.

    Raises:
        ImportError: ``amp`` and ``torch.amp`` cannot be imported (Ignite's message).
        ValueError: ``gradient_accumulation_steps`` is not positive (Ignite's message).
    """
    autocast = Autocast.ignite(amp)  # before the accumulation check, in Ignite's order
    prepare_batch = _check_prepare_batch(prepare_batch)
    gas = gradient_accumulation_steps
    if gas <= 0:
        raise ValueError(
            "Gradient_accumulation_steps must be strictly positive. "
            "No gradient accumulation if the value set to one (default)."
        )
    iteration = Iteration(
        model,
        _ModelCall(model_fn, model_transform),
        loss=loss_fn,
        optimizer=optimizer,
        scaler=(lambda: scaler) if scaler else None,
        accumulation=gas,
        autocast=autocast,
        name="train step",
    )
    step = TrainStep(iteration, options or StepOptions(), device)

    def update(engine: Any, batch: Any) -> Any:
        index = engine.state.iteration
        zero = (index - 1) % gas == 0
        step.begin(zero)
        model.train()
        x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
        y_pred, loss = step.run(x, y)
        step.finish(loss, index, zero, index % gas == 0)
        return output_transform(x, y, y_pred, (loss / gas if gas > 1 else loss) * gas)

    update.step = step  # type: ignore[attr-defined]  # for attach_step
    return update


def build_eval_step(
    model: torch.nn.Module,
    *,
    device: str | torch.device | None,
    non_blocking: bool,
    prepare_batch: Callable,
    model_transform: Callable[[Any], Any],
    output_transform: Callable[[Any, Any, Any], Any],
    model_fn: Callable[[torch.nn.Module, Any], Any],
    amp: bool = False,
    options: StepOptions | None = None,
) -> Callable[[Any, Any], Any]:
    """An evaluation step with Ignite's semantics, on the step builder: its forward is the body ``options`` act on.

    Returns:
        ``evaluate_step(engine, batch)``, the process function of an evaluator.

    Raises:
        ImportError: ``amp`` and ``torch.amp`` cannot be imported (Ignite's message).
    """
    autocast = Autocast.ignite(amp)
    prepare_batch = _check_prepare_batch(prepare_batch)
    iteration = Iteration(model, _ModelCall(model_fn, model_transform), autocast=autocast, name="evaluation step")
    step = EvalStep(iteration, options or StepOptions(), device)

    def evaluate_step(engine: Any, batch: Any) -> Any:
        model.eval()
        with torch.no_grad():
            x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
            y_pred = step(x)
            return output_transform(x, y, y_pred)

    evaluate_step.step = step  # type: ignore[attr-defined]  # for attach_step
    return evaluate_step


def attach_step(engine: Any, process_function: Callable[..., Any], options: StepOptions, device: Any) -> None:
    """Apply ``options`` to ``engine`` and expose what its step runs as ``engine.step_choice``.

    For a process function of :func:`build_train_step` / :func:`build_eval_step` that is its step's
    :meth:`~hotloop.step.TrainStep.attach`; another one (Ignite's own step, one patched in) gets the engine-side
    options alone (:meth:`StepOptions.attach`) and no ``step_choice``.
    """
    step = getattr(process_function, "step", None)
    if isinstance(step, (TrainStep, EvalStep)):
        step.attach(engine)
    else:
        options.attach(engine, device)
