"""Ignite-parity factories: ``create_supervised_trainer`` / ``create_supervised_evaluator`` and their steps.

With their Ignite arguments alone they build exactly Ignite 0.5.5's steps (same code path, same results) on a
:class:`hotloop.Engine`. Keyword-only options that Ignite does not have turn on hotloop's hot path: ``compile``,
``cuda_graphs``, ``no_sync``, ``prefetch``, ``max_compiled_shapes`` and (trainer) ``on_nonfinite``, the
:class:`hotloop.step.StepOptions` that every API of hotloop takes (``docs/hot-path.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from ignite import engine as _ignite_engine
from ignite.engine import _prepare_batch
from ignite.metrics import Metric

from hotloop.engine import DeterministicEngine, Engine
from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step import StepOptions, attach_step, build_eval_step, build_train_step
from hotloop.step.steps import call_model, identity, loss_item, pred_and_target, train_output

if TYPE_CHECKING:
    from torch.amp import GradScaler

__all__ = [
    "create_supervised_evaluator",
    "create_supervised_trainer",
    "supervised_evaluation_step",
    "supervised_evaluation_step_amp",
    "supervised_training_step",
    "supervised_training_step_amp",
]


def supervised_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = loss_item,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = call_model,
    *,
    options: StepOptions | None = None,
) -> Callable:
    """Factory function for supervised training (Ignite's ``supervised_training_step``).

    Args:
        model: the model to train.
        optimizer: the optimizer to use.
        loss_fn: the loss function that receives `y_pred` and `y`, and returns the loss as a tensor.
        device: device type specification (default: None). Applies to batches after starting the engine.
        non_blocking: if True and this copy is between CPU and GPU, the copy may occur asynchronously.
        prepare_batch: function that receives `batch`, `device`, `non_blocking` and outputs tuple `(x, y)`.
        model_transform: function that receives the output from the model and converts it into the form as
            required by the loss function.
        output_transform: function that receives 'x', 'y', 'y_pred', 'loss' and returns value to be assigned to
            engine's state.output after each iteration. Default is returning `loss.item()`.
        gradient_accumulation_steps: Number of steps the gradients should be accumulated across.
        model_fn: the model function that receives `model` and `x`, and returns `y_pred`.
        options: hotloop only: the step options (:class:`hotloop.step.StepOptions`); None: Ignite's step.

    Returns:
        Callable: update function.

    Examples:
        .. code-block:: python

            from hotloop import Engine, supervised_training_step

            update_fn = supervised_training_step(model, optimizer, loss_fn, "cuda")
            trainer = Engine(update_fn)
    """
    return build_train_step(
        model,
        optimizer,
        loss_fn,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        model_transform=model_transform,
        output_transform=output_transform,
        gradient_accumulation_steps=gradient_accumulation_steps,
        model_fn=model_fn,
        options=options,
    )


def supervised_training_step_amp(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = loss_item,
    scaler: GradScaler | None = None,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = call_model,
    *,
    options: StepOptions | None = None,
) -> Callable:
    """Factory function for supervised training using ``torch.amp`` (Ignite's ``supervised_training_step_amp``).

    Args:
        model: the model to train.
        optimizer: the optimizer to use.
        loss_fn: the loss function that receives `y_pred` and `y`, and returns the loss as a tensor.
        device: device type specification (default: None).
        non_blocking: if True and this copy is between CPU and GPU, the copy may occur asynchronously.
        prepare_batch: function that receives `batch`, `device`, `non_blocking` and outputs tuple `(x, y)`.
        model_transform: function that converts the model output into what the loss function expects.
        output_transform: function that receives 'x', 'y', 'y_pred', 'loss' and returns the engine's output.
        scaler: GradScaler instance for gradient scaling.
        gradient_accumulation_steps: Number of steps the gradients should be accumulated across.
        model_fn: the model function that receives `model` and `x`, and returns `y_pred`.
        options: hotloop only: the step options (:class:`hotloop.step.StepOptions`); None: Ignite's step.

    Returns:
        Callable: update function
    """
    return build_train_step(
        model,
        optimizer,
        loss_fn,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        model_transform=model_transform,
        output_transform=output_transform,
        gradient_accumulation_steps=gradient_accumulation_steps,
        model_fn=model_fn,
        amp=True,
        scaler=scaler,
        options=options,
    )


def supervised_evaluation_step(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = identity,
    output_transform: Callable[[Any, Any, Any], Any] = pred_and_target,
    model_fn: Callable[[torch.nn.Module, Any], Any] = call_model,
    *,
    options: StepOptions | None = None,
) -> Callable:
    """Factory function for supervised evaluation (Ignite's ``supervised_evaluation_step``).

    Args:
        model: neural network.
        device: device type specification (default: None).
        non_blocking: if True and this copy is between CPU and GPU, the copy may occur asynchronously.
        prepare_batch: function that receives `batch`, `device`, `non_blocking` and outputs tuple `(x, y)`.
        model_transform: function that converts the model output into the form expected by the metrics.
        output_transform: function that receives 'x', 'y', 'y_pred' and returns value to be assigned to engine's
            state.output after each iteration. Default is returning `(y_pred, y,)`.
        model_fn: the model function that receives `model` and `x`, and returns `y_pred`.
        options: hotloop only: the step options (:class:`hotloop.step.StepOptions`); None: Ignite's step.

    Returns:
        Inference function.
    """
    return build_eval_step(
        model,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        model_transform=model_transform,
        output_transform=output_transform,
        model_fn=model_fn,
        options=options,
    )


def supervised_evaluation_step_amp(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = identity,
    output_transform: Callable[[Any, Any, Any], Any] = pred_and_target,
    model_fn: Callable[[torch.nn.Module, Any], Any] = call_model,
    *,
    options: StepOptions | None = None,
) -> Callable:
    """Factory function for supervised evaluation using ``torch.amp`` (Ignite's ``supervised_evaluation_step_amp``).

    Args:
        model: neural network.
        device: device type specification (default: None).
        non_blocking: if True and this copy is between CPU and GPU, the copy may occur asynchronously.
        prepare_batch: function that receives `batch`, `device`, `non_blocking` and outputs tuple `(x, y)`.
        model_transform: function that converts the model output into the form expected by the metrics.
        output_transform: function that receives 'x', 'y', 'y_pred' and returns the engine's output.
        model_fn: the model function that receives `model` and `x`, and returns `y_pred`.
        options: hotloop only: the step options (:class:`hotloop.step.StepOptions`); None: Ignite's step.

    Returns:
        Inference function.
    """
    return build_eval_step(
        model,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        model_transform=model_transform,
        output_transform=output_transform,
        model_fn=model_fn,
        amp=True,
        options=options,
    )


def _device_kind(device: str | torch.device | None) -> tuple[bool, bool]:
    device_type = device.type if isinstance(device, torch.device) else device
    on_tpu = "xla" in device_type if device_type is not None else False
    on_mps = "mps" in device_type if device_type is not None else False
    return on_tpu, on_mps


def create_supervised_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = loss_item,
    deterministic: bool = False,
    amp_mode: str | None = None,
    scaler: bool | GradScaler = False,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = call_model,
    *,
    compile: bool | str | dict[str, Any] = False,
    cuda_graphs: bool | str = False,
    no_sync: bool = False,
    prefetch: bool = False,
    max_compiled_shapes: int = 4,
    on_nonfinite: str | NonFiniteGuard | None = None,
) -> Engine:
    """Factory function for creating a trainer for supervised models (Ignite's ``create_supervised_trainer``).

    The positional arguments and their defaults are Ignite 0.5.5's; with them alone the trainer runs Ignite's step
    on a :class:`hotloop.Engine` (or :class:`hotloop.DeterministicEngine`) and gives Ignite's results.

    Args:
        model: the model to train.
        optimizer: the optimizer to use.
        loss_fn: the loss function that receives `y_pred` and `y`, and returns the loss as a tensor.
        device: device type specification (default: None). Applies to batches after starting the engine. Model
            *will not* be moved. Device can be CPU, GPU or TPU.
        non_blocking: if True and this copy is between CPU and GPU, the copy may occur asynchronously.
        prepare_batch: function that receives `batch`, `device`, `non_blocking` and outputs tuple `(x, y)`.
        model_transform: function that converts the model output into the form expected by the loss function.
        output_transform: function that receives 'x', 'y', 'y_pred', 'loss' and returns value to be assigned to
            engine's state.output after each iteration. Default is returning `loss.item()`.
        deterministic: if True, returns deterministic engine of type
            :class:`~hotloop.DeterministicEngine`, otherwise :class:`~hotloop.Engine` (default: False).
        amp_mode: can be ``amp`` or ``apex``, model and optimizer will be casted to float16 using
            `torch.amp <https://pytorch.org/docs/stable/amp.html>`_ for ``amp`` and using
            `apex <https://nvidia.github.io/apex>`_ for ``apex``. (default: None)
        scaler: GradScaler instance for gradient scaling if `torch>=1.6.0` and ``amp_mode`` is ``amp``. If
            ``amp_mode`` is ``apex``, this argument will be ignored. If True, will create default GradScaler. If
            GradScaler instance is passed, it will be used instead. (default: False)
        gradient_accumulation_steps: Number of steps the gradients should be accumulated across.
            (default: 1 (means no gradient accumulation))
        model_fn: the model function that receives `model` and `x`, and returns `y_pred`.
        compile: hotloop only. ``False`` runs eagerly; ``True`` compiles the whole step (forward, loss, backward,
            optimizer step) with ``torch.compile`` — or, if that fails, only the model, logging why once;
            ``"auto"`` compiles on CUDA and stays eager on CPU, where compiled training steps measured slower; a
            dict is passed to ``torch.compile``. Each input shape compiles once (``dynamic=False``), up to
            ``max_compiled_shapes`` shapes; more shapes run eagerly with one warning.
        cuda_graphs: hotloop only. ``True`` captures the whole step in a CUDA graph per input shape and replays it
            (needs a CUDA ``device``; raises otherwise); ``"auto"`` does so when the device is CUDA and is a no-op
            elsewhere. Anything the graph cannot capture runs eagerly with one warning.
        no_sync: hotloop only. With the default ``output_transform``, ``state.output`` becomes ``loss.detach()``
            (a device tensor) instead of ``loss.item()``: no host sync per iteration.
        prefetch: hotloop only. On CUDA, pin each batch and copy the next one to ``device`` on a side stream while
            the current step runs. A no-op on other devices.
        max_compiled_shapes: hotloop only. See ``compile``.
        on_nonfinite: hotloop only. ``None`` (default) does nothing; ``"terminate"``, ``"skip"`` or ``"raise"``
            watch the loss on the device with a :class:`hotloop.reliability.NonFiniteGuard` (no host sync per
            iteration) and act every 100 iterations and at each epoch's end; pass a ``NonFiniteGuard(action,
            every=N)`` to choose the interval. ``"skip"`` undoes the step of a non-finite loss on the device.
            Not available with ``amp_mode="apex"`` or on TPU.

    Returns:
        a trainer engine with supervised update function.

    Examples:
        .. code-block:: python

            from hotloop import create_supervised_trainer

            trainer = create_supervised_trainer(model, optimizer, loss, device="cuda",
                                                compile=True, cuda_graphs="auto", no_sync=True, prefetch=True)
            trainer.run(train_loader, max_epochs=10)
    """
    options = StepOptions(compile, cuda_graphs, no_sync, prefetch, max_compiled_shapes, on_nonfinite)
    on_tpu, on_mps = _device_kind(device)
    # Looked up at call time in ignite.engine, where Ignite's tests (and users) patch it.
    mode, _scaler = _ignite_engine._check_arg(on_tpu, on_mps, amp_mode, scaler)
    output_transform = train_output(output_transform, options)
    if mode in ("apex", "tpu"):
        _check_ignite_only(options, mode)
        make: Callable[..., Callable] = getattr(_ignite_engine, f"supervised_training_step_{mode}")
        extra: dict[str, Any] = {}
    else:
        # Looked up at call time (Ignite's tests patch them); both build the step with the one builder.
        make = supervised_training_step_amp if mode == "amp" else supervised_training_step
        extra = {"scaler": _scaler, **_hotloop_only(options)} if mode == "amp" else _hotloop_only(options)
    _update = make(
        model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
        gradient_accumulation_steps=gradient_accumulation_steps, model_fn=model_fn, **extra,
    )  # fmt: skip
    trainer = Engine(_update) if not deterministic else DeterministicEngine(_update)
    if _scaler and scaler and isinstance(scaler, bool):
        trainer.state.scaler = _scaler  # type: ignore[attr-defined]
    attach_step(trainer, _update, options, device)
    return trainer


def _hotloop_only(options: StepOptions) -> dict[str, Any]:
    """``{"options": options}`` when a hotloop option is set, else nothing: Ignite's step functions are then called
    with Ignite's arguments alone (a step patched in with Ignite's signature keeps working)."""
    return {} if options.default else {"options": options}


def _check_ignite_only(options: StepOptions, mode: str) -> None:
    """``amp_mode="apex"`` and TPU devices run Ignite's own steps: hotloop's step options do not apply to them."""
    if options.on_nonfinite is not None:
        raise ValueError(f"on_nonfinite is not available with amp_mode={mode!r}; use amp_mode='amp' or None")
    if options.compile is not False or options.cuda_graphs is not False:
        raise ValueError(
            f"compile and cuda_graphs are not available with {mode!r} (Ignite's own {mode} step runs); "
            "use amp_mode='amp' or None"
        )


def create_supervised_evaluator(
    model: torch.nn.Module,
    metrics: dict[str, Metric] | None = None,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = identity,
    output_transform: Callable[[Any, Any, Any], Any] = pred_and_target,
    amp_mode: str | None = None,
    model_fn: Callable[[torch.nn.Module, Any], Any] = call_model,
    *,
    compile: bool | str | dict[str, Any] = False,
    cuda_graphs: bool | str = False,
    prefetch: bool = False,
    max_compiled_shapes: int = 4,
) -> Engine:
    """Factory function for creating an evaluator for supervised models (Ignite's ``create_supervised_evaluator``).

    Args:
        model: the model to train.
        metrics: a map of metric names to Metrics.
        device: device type specification (default: None). Applies to batches after starting the engine. Model
            *will not* be moved.
        non_blocking: if True and this copy is between CPU and GPU, the copy may occur asynchronously.
        prepare_batch: function that receives `batch`, `device`, `non_blocking` and outputs tuple `(x, y)`.
        model_transform: function that converts the model output into the form expected by the metrics.
        output_transform: function that receives 'x', 'y', 'y_pred' and returns value to be assigned to engine's
            state.output after each iteration. Default is returning `(y_pred, y,)` which fits output expected by
            metrics. If you change it you should use `output_transform` in metrics.
        amp_mode: can be ``amp``, model will be casted to float16 using
            `torch.amp <https://pytorch.org/docs/stable/amp.html>`_
        model_fn: the model function that receives `model` and `x`, and returns `y_pred`.
        compile: hotloop only; as in :func:`create_supervised_trainer`, for the forward pass.
        cuda_graphs: hotloop only; as in :func:`create_supervised_trainer`, for the forward pass. The graphed
            ``y_pred`` aliases graph memory until the next iteration; metrics read it within the iteration.
        prefetch: hotloop only; as in :func:`create_supervised_trainer`.
        max_compiled_shapes: hotloop only; as in :func:`create_supervised_trainer`.

    Returns:
        an evaluator engine with supervised inference function.
    """
    options = StepOptions(compile, cuda_graphs, False, prefetch, max_compiled_shapes)
    on_tpu, on_mps = _device_kind(device)
    mode, _ = _ignite_engine._check_arg(on_tpu, on_mps, amp_mode, None)
    metrics = metrics or {}
    make = supervised_evaluation_step_amp if mode == "amp" else supervised_evaluation_step
    evaluate_step = make(
        model, device, non_blocking=non_blocking, prepare_batch=prepare_batch, model_transform=model_transform,
        output_transform=output_transform, model_fn=model_fn, **_hotloop_only(options),
    )  # fmt: skip
    evaluator = Engine(evaluate_step)
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    attach_step(evaluator, evaluate_step, options, device)
    return evaluator
