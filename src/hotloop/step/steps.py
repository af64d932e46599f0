"""Step builders: the supervised train/eval step split into host logic and a device ``compute`` body that can be
run eagerly, through ``torch.compile``, or replayed from a CUDA graph."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from ignite.engine import _prepare_batch as _ignite_prepare_batch
from torch.nn.parallel import DistributedDataParallel

from hotloop.step.compiled import CompiledStep, resolve_compile

__all__ = ["build_eval_step", "build_train_step"]

_logger = logging.getLogger(__name__)

# Eager iterations per input shape before a CUDA-graph capture. DDP needs at least 11 (PyTorch CUDA notes, "Usage
# with DistributedDataParallel": its reducer rebuilds buckets and registers hooks during the first iterations).
_GRAPH_WARMUP_ITERS = 3
_DDP_GRAPH_WARMUP_ITERS = 11


def _graph_warmup_iters(model: torch.nn.Module) -> int:
    return _DDP_GRAPH_WARMUP_ITERS if isinstance(model, DistributedDataParallel) else _GRAPH_WARMUP_ITERS


def _load_autocast(amp: bool) -> Any:
    """``torch.amp.autocast`` for an amp step, imported when the step is built (as Ignite's amp steps do, so a missing
    ``torch.amp`` fails at creation with Ignite's error); ``None`` without amp."""
    if not amp:
        return None
    try:
        from torch.amp import autocast
    except ImportError as error:
        raise ImportError("Please install torch>=1.12.0 to use amp_mode='amp'.") from error
    return autocast


def _autocast(autocast: Any, cache_enabled: bool = True) -> Any:
    if autocast is None:
        return nullcontext()
    # Inside a CUDA graph capture the autocast weight-cast cache must be off (PyTorch CUDA-graph notes): a cached
    # cast made during capture would be freed memory at replay.
    return autocast("cuda", enabled=True, cache_enabled=cache_enabled)


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


def _graphs_module() -> Any:
    from hotloop.step import graphed

    return graphed


def _resolve_graphs(option: Any, device: Any) -> bool:
    if option is False:
        return False
    return bool(_graphs_module().resolve_cuda_graphs(option, device))


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
    compile: Any = False,
    cuda_graphs: Any = False,
    max_compiled_shapes: int = 4,
    nonfinite: Any = None,
) -> Callable[[Any, Any], Any]:
    """A training step with Ignite's semantics whose device work may be compiled or CUDA-graphed.

    Host logic (zeroing gradients every ``gradient_accumulation_steps`` iterations, ``model.train()``,
    ``prepare_batch``, ``output_transform``) stays in Python; ``compute`` — forward, ``model_transform``, loss,
    division by the accumulation steps, backward and, on the iterations where Ignite steps, the optimizer (or the
    scaler's step and update) — is what ``compile`` and ``cuda_graphs`` act on.

    Returns:
        ``update(engine, batch)``, the process function of a trainer.
    """
    autocast = _load_autocast(amp)  # before the accumulation check, in Ignite's order
    prepare_batch = _check_prepare_batch(prepare_batch)
    gas = gradient_accumulation_steps
    if gas <= 0:
        raise ValueError(
            "Gradient_accumulation_steps must be strictly positive. "
            "No gradient accumulation if the value set to one (default)."
        )

    def forward_backward(x: Any, y: Any, m: Any = model, cache_enabled: bool = True) -> tuple[Any, torch.Tensor]:
        with _autocast(autocast, cache_enabled):
            output = model_fn(m, x)
            y_pred = model_transform(output)
            loss = loss_fn(y_pred, y)
            if gas > 1:
                loss = loss / gas
        if scaler:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        return y_pred, loss

    def optimizer_step() -> None:
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def compute_and_step(x: Any, y: Any, m: Any = model, cache_enabled: bool = True) -> tuple[Any, torch.Tensor]:
        y_pred, loss = forward_backward(x, y, m, cache_enabled)
        optimizer_step()
        return y_pred, loss

    # The optimizer step belongs to the compiled/captured body only when it runs every iteration and needs no
    # host-side logic (GradScaler's inf check syncs and must stay outside a CUDA graph, per PyTorch's notes).
    whole = gas == 1 and not scaler
    body: Callable[..., tuple[Any, torch.Tensor]] = compute_and_step if whole else forward_backward
    eager_body = body

    graphed = _resolve_graphs(cuda_graphs, device)
    if graphed and not whole:
        # A graph replays the optimizer step too; with accumulation or a GradScaler the step is host logic.
        warnings.warn(
            "hotloop: cuda_graphs is ignored with gradient_accumulation_steps > 1 or a GradScaler "
            "(the optimizer step cannot be part of the graph); running eagerly",
            stacklevel=3,
        )
        graphed = False
    if graphed:
        # Gradients live in graph memory: the graph's backward overwrites them, so the update must not zero them
        # between replays (zero_grad(set_to_none=True) would detach .grad from that memory). Eager warm-up and
        # fallback steps zero them as Ignite's step does.
        body = _graphs_module().GraphedStep(
            partial(compute_and_step, cache_enabled=False),
            pre_capture=lambda: optimizer.zero_grad(set_to_none=True),
            eager_step=lambda x, y: (optimizer.zero_grad(), eager_body(x, y))[1],
            warmup_iters=_graph_warmup_iters(model),
            optimizer=optimizer,
            device=device,
            name="train step",
        )
    else:
        compile_kwargs = resolve_compile(compile, device)
        if compile_kwargs is not None:
            body = CompiledStep(
                body,
                compile_kwargs,
                fallback=eager_body,
                # Used when the whole step does not compile: the same body around the compiled model.
                fallback_fn=partial(body, m=torch.compile(model, **compile_kwargs)),
                state=(model, optimizer),
                max_shapes=max_compiled_shapes,
                name="train step",
            )

    def update(engine: Any, batch: Any) -> Any:
        if not graphed and (engine.state.iteration - 1) % gas == 0:
            optimizer.zero_grad()
        model.train()
        x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
        y_pred, loss = body(x, y)
        if not whole and engine.state.iteration % gas == 0:
            optimizer_step()
        return output_transform(x, y, y_pred, loss * gas)

    if nonfinite is None:
        return update
    nonfinite.bind(model, optimizer)

    def guarded_update(engine: Any, batch: Any) -> Any:
        iteration = engine.state.iteration
        window_start = (iteration - 1) % gas == 0
        steps = iteration % gas == 0
        if not graphed and window_start:
            optimizer.zero_grad()
        if window_start and nonfinite.skips:
            # Before the window's first forward pass, which updates BatchNorm statistics a skip must undo too.
            nonfinite.snapshot()
        model.train()
        x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
        y_pred, loss = body(x, y)
        nonfinite.observe(loss, iteration, window_start)
        if not whole and steps:
            optimizer_step()
        if steps and nonfinite.skips:
            nonfinite.restore()
        return output_transform(x, y, y_pred, loss * gas)

    return guarded_update


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
    compile: Any = False,
    cuda_graphs: Any = False,
    max_compiled_shapes: int = 4,
) -> Callable[[Any, Any], Any]:
    """An evaluation step with Ignite's semantics whose forward may be compiled or CUDA-graphed.

    Returns:
        ``evaluate_step(engine, batch)``, the process function of an evaluator.
    """
    autocast = _load_autocast(amp)
    prepare_batch = _check_prepare_batch(prepare_batch)

    def forward(x: Any, cache_enabled: bool = True) -> Any:
        with torch.no_grad(), _autocast(autocast, cache_enabled):
            return model_transform(model_fn(model, x))

    body: Callable[..., Any] = forward
    if _resolve_graphs(cuda_graphs, device):
        graphed = _graphs_module().GraphedStep(
            lambda x, y: (forward(x, cache_enabled=False), None),
            pre_capture=None,
            eager_step=lambda x, y: (forward(x), None),
            warmup_iters=_graph_warmup_iters(model),
            optimizer=None,
            device=device,
            name="evaluation step",
        )
        body = lambda x: graphed(x, None)[0]  # noqa: E731 - the graphed step takes (x, y)

    else:
        compile_kwargs = resolve_compile(compile, device)
        if compile_kwargs is not None:
            body = CompiledStep(
                forward,
                compile_kwargs,
                fallback=forward,
                state=(model,),
                max_shapes=max_compiled_shapes,
                name="eval step",
            )

    def evaluate_step(engine: Any, batch: Any) -> Any:
        model.eval()
        with torch.no_grad():
            x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
            y_pred = body(x)
            return output_transform(x, y, y_pred)

    return evaluate_step
