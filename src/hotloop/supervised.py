"""Ignite-parity factories: ``create_supervised_trainer`` / ``create_supervised_evaluator`` and their steps.

With their Ignite arguments alone they build exactly Ignite 0.5.5's steps (same code path, same results) on a
:class:`hotloop.Engine`. Keyword-only options that Ignite does not have turn on hotloop's hot path:

- ``compile``: ``False`` (default) | ``True`` | ``"auto"`` | dict of ``torch.compile`` kwargs;
- ``cuda_graphs``: ``False`` (default) | ``True`` | ``"auto"`` — whole-step CUDA-graph capture;
- ``no_sync``: ``True`` makes the default ``output_transform`` return the loss as a detached device tensor instead
  of ``loss.item()``, so an iteration makes no host sync;
- ``prefetch``: ``True`` copies the next batch to the GPU on a side stream while the current step runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from ignite import engine as _ignite_engine
from ignite.engine import _prepare_batch
from ignite.metrics import Metric

from hotloop.engine import DeterministicEngine, Engine
from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step import build_eval_step, build_train_step, prefetch_enabled
from hotloop.step.compiled import resolve_compile

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


def _identity(output: Any) -> Any:
    return output


def _call_model(model: torch.nn.Module, x: Any) -> Any:
    return model(x)


def _loss_item(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> Any:
    return loss.item()


def _loss_detached(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> Any:
    return loss.detach()


def _pred_and_target(x: Any, y: Any, y_pred: Any) -> tuple[Any, Any]:
    return y_pred, y


def supervised_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
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
    )


def supervised_training_step_amp(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    scaler: GradScaler | None = None,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
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
    )


def supervised_evaluation_step(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any], Any] = _pred_and_target,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
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
    )


def supervised_evaluation_step_amp(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any], Any] = _pred_and_target,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
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
    )


def _device_kind(device: str | torch.device | None) -> tuple[bool, bool]:
    device_type = device.type if isinstance(device, torch.device) else device
    on_tpu = "xla" in device_type if device_type is not None else False
    on_mps = "mps" in device_type if device_type is not None else False
    return on_tpu, on_mps


def _check_options(compile: Any, cuda_graphs: Any, no_sync: Any, prefetch: Any, max_compiled_shapes: Any) -> None:
    if not isinstance(no_sync, bool):
        raise TypeError(f"no_sync should be True or False, got {no_sync!r}")
    if not isinstance(prefetch, bool):
        raise TypeError(f"prefetch should be True or False, got {prefetch!r}")
    if cuda_graphs not in (False, True, "auto"):
        raise ValueError(f"cuda_graphs should be False, True or 'auto', got {cuda_graphs!r}")
    resolve_compile(compile, None) if compile != "auto" else None  # validates the value
    if not isinstance(max_compiled_shapes, int) or isinstance(max_compiled_shapes, bool) or max_compiled_shapes < 1:
        raise ValueError(f"max_compiled_shapes should be a positive integer, got {max_compiled_shapes!r}")


def _attach_prefetch(engine: Engine, prefetch: bool, device: str | torch.device | None, non_blocking: bool) -> None:
    if prefetch_enabled(prefetch, device):
        from hotloop.step.prefetch import DevicePrefetcher

        engine._hl_data_wrapper = lambda it: DevicePrefetcher(it, cast(torch.device, device))


def create_supervised_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any, torch.Tensor], Any] = _loss_item,
    deterministic: bool = False,
    amp_mode: str | None = None,
    scaler: bool | GradScaler = False,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
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
    _check_options(compile, cuda_graphs, no_sync, prefetch, max_compiled_shapes)
    on_tpu, on_mps = _device_kind(device)
    # Looked up at call time in ignite.engine, where Ignite's tests (and users) patch it.
    mode, _scaler = _ignite_engine._check_arg(on_tpu, on_mps, amp_mode, scaler)
    if no_sync and output_transform is _loss_item:
        output_transform = _loss_detached
    guard = _nonfinite_guard(on_nonfinite, mode)
    hot = compile is not False or cuda_graphs is not False or guard is not None
    if hot and mode in (None, "amp"):
        _update = build_train_step(
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
            amp=mode == "amp",
            scaler=_scaler,
            compile=compile,
            cuda_graphs=cuda_graphs,
            max_compiled_shapes=max_compiled_shapes,
            nonfinite=guard,
        )
    elif mode == "amp":
        _update = supervised_training_step_amp(
            model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
            _scaler, gradient_accumulation_steps, model_fn,
        )  # fmt: skip
    elif mode in ("apex", "tpu"):
        make = (
            _ignite_engine.supervised_training_step_apex
            if mode == "apex"
            else _ignite_engine.supervised_training_step_tpu
        )
        _update = make(
            model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
            gradient_accumulation_steps, model_fn,
        )  # fmt: skip
    else:
        _update = supervised_training_step(
            model, optimizer, loss_fn, device, non_blocking, prepare_batch, model_transform, output_transform,
            gradient_accumulation_steps, model_fn,
        )  # fmt: skip

    trainer = Engine(_update) if not deterministic else DeterministicEngine(_update)
    if _scaler and scaler and isinstance(scaler, bool):
        trainer.state.scaler = _scaler  # type: ignore[attr-defined]
    _attach_prefetch(trainer, prefetch, device, non_blocking)
    if guard is not None:
        guard.attach(trainer)
    return trainer


def _nonfinite_guard(on_nonfinite: Any, mode: str | None) -> NonFiniteGuard | None:
    if on_nonfinite is None:
        return None
    if mode not in (None, "amp"):
        raise ValueError(f"on_nonfinite is not available with amp_mode={mode!r}; use amp_mode='amp' or None")
    if isinstance(on_nonfinite, NonFiniteGuard):
        return on_nonfinite
    if isinstance(on_nonfinite, str):
        return NonFiniteGuard(on_nonfinite)
    raise TypeError(
        f"on_nonfinite should be None, 'terminate', 'skip', 'raise' or a NonFiniteGuard, got {on_nonfinite!r}"
    )


def create_supervised_evaluator(
    model: torch.nn.Module,
    metrics: dict[str, Metric] | None = None,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    model_transform: Callable[[Any], Any] = _identity,
    output_transform: Callable[[Any, Any, Any], Any] = _pred_and_target,
    amp_mode: str | None = None,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
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
    _check_options(compile, cuda_graphs, False, prefetch, max_compiled_shapes)
    on_tpu, on_mps = _device_kind(device)
    mode, _ = _ignite_engine._check_arg(on_tpu, on_mps, amp_mode, None)
    metrics = metrics or {}
    hot = compile is not False or cuda_graphs is not False
    if hot:
        evaluate_step = build_eval_step(
            model,
            device=device,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            model_transform=model_transform,
            output_transform=output_transform,
            model_fn=model_fn,
            amp=mode == "amp",
            compile=compile,
            cuda_graphs=cuda_graphs,
            max_compiled_shapes=max_compiled_shapes,
        )
    elif mode == "amp":
        evaluate_step = supervised_evaluation_step_amp(
            model, device, non_blocking=non_blocking, prepare_batch=prepare_batch,
            model_transform=model_transform, output_transform=output_transform, model_fn=model_fn,
        )  # fmt: skip
    else:
        evaluate_step = supervised_evaluation_step(
            model, device, non_blocking=non_blocking, prepare_batch=prepare_batch,
            model_transform=model_transform, output_transform=output_transform, model_fn=model_fn,
        )  # fmt: skip
    evaluator = Engine(evaluate_step)
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    _attach_prefetch(evaluator, prefetch, device, non_blocking)
    return evaluator
