"""The step builder: every API describes its iteration once, and hotloop's options are applied to it in one place.

An API (Ignite's factories, the MONAI workflows, delira's trainer) says what its step is — an :class:`Iteration`:
the model, how the step calls it (``model_fn`` and ``model_transform``, or an inferer), the loss, the optimizer, the
gradient scaler and accumulation, the autocast context — and gets a :class:`TrainStep` or :class:`EvalStep` back.

The builder knows the **candidate builds** of that step, each a :class:`Body` with the same inputs and outputs:

- ``"eager"``: the step as the original runs it;
- ``"fused"`` (training, CPU): the same, the optimizer stepping through torch's fused implementation
  (:mod:`hotloop.step.fused`), where the optimizer has one and the user left ``foreach``/``fused`` unset;
- ``"compiled"``: the whole device body through ``torch.compile`` (:class:`~hotloop.step.CompiledStep`: forward,
  loss, backward, and the optimizer step when it runs every iteration without a scaler), falling back to the same
  body around the model compiled alone (:class:`~hotloop.step.CompiledModel`) if it does not compile;
- ``"compiled_fused"`` (training, where ``"fused"`` applies): forward, loss and backward compiled, then the fused
  optimizer step, eager;
- ``"graphed"``: the whole body captured in a CUDA graph per input shape (:class:`~hotloop.step.GraphedStep`),
  where the device and the iteration allow it.

One selector (:func:`select`) picks the candidate the options pin — graphed, else the build ``compile`` names, else
eager — and warns once when ``cuda_graphs`` cannot apply. Under ``compile="auto"`` the step measures instead
(:class:`~hotloop.step.auto.AutoSelector`): :func:`train_candidates` / :func:`eval_candidates` give it the
candidates by name, each built only when asked for; what was chosen is :attr:`TrainStep.choice`
(``engine.step_choice`` once :meth:`TrainStep.attach` ran).

Host logic stays with the step object, the same for every API: zeroing gradients at the start of an accumulation
window (unless the body does it: a CUDA graph keeps them in its memory), the backward pass of a loss divided by the
accumulation steps and scaled by the GradScaler, the optimizer step outside the body, and the non-finite guard.
An API whose iteration fires events between forward, loss and backward (MONAI's ``IterationEvents``) runs its own
pieces around :attr:`TrainStep.forward`, :meth:`TrainStep.begin`, :meth:`TrainStep.backward` and
:meth:`TrainStep.finish` on the iterations where such an event has handlers, and the chosen body on the others
(:meth:`TrainStep.takes`).
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel

from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step.amp import NO_AUTOCAST, Autocast
from hotloop.step.auto import AutoSelector, StepChoice, iterations_left, ranks_together
from hotloop.step.compiled import COMPILED, CompiledModel, CompiledStep
from hotloop.step.fused import fused_blocker, fused_step
from hotloop.step.graphed import CudaGraphWarning, GraphedStep, cuda_graphs_supported
from hotloop.step.options import StepOptions

__all__ = [
    "Body",
    "Candidates",
    "EvalStep",
    "Iteration",
    "TrainStep",
    "backward",
    "eval_candidates",
    "optimizer_step",
    "select",
    "train_candidates",
]

# Eager iterations per input shape before a CUDA-graph capture. DDP needs at least 11 (PyTorch CUDA notes, "Usage
# with DistributedDataParallel": its reducer rebuilds buckets and registers hooks during the first iterations).
_GRAPH_WARMUP_ITERS = 3
_DDP_GRAPH_WARMUP_ITERS = 11
#: The compile keyword arguments of a candidate that ``compile`` did not ask for (``dynamic=False``: see
#: :func:`~hotloop.step.resolve_compile`).
_DEFAULT_COMPILE_KWARGS: dict[str, Any] = {"dynamic": False}


def _call(model: Any, x: Any) -> Any:
    return model(x)


def _no_engine() -> None:
    return None


@dataclass(frozen=True)
class Iteration:
    """What a step is, as an API describes it to the builder.

    Args:
        model: the module the step calls: compiled alone in the fallback of ``"compiled"``; a
            ``DistributedDataParallel`` model warms up 11 iterations before a CUDA-graph capture.
        forward: ``forward(model, x)`` → ``y_pred``: how the step calls the model (Ignite: ``model_fn`` then
            ``model_transform``; MONAI: ``inferer(x, model)``).
        loss: ``loss(y_pred, y)`` → the loss tensor; None for an evaluation step.
        optimizer: the optimizer a training step steps.
        scaler: ``scaler()`` → the ``GradScaler`` to use now (or None); None when the API has no scaler.
        accumulation: the backward pass divides the loss by it; the optimizer steps outside the body when > 1.
        set_to_none: ``optimizer.zero_grad(set_to_none=...)``; None calls ``zero_grad()`` (Ignite's call).
        autocast: the autocast context of the forward pass and the loss.
        clone_outputs: a graphed step returns copies of its outputs (for an API that keeps them).
        graph_blocker: why this API's configuration cannot be captured in a CUDA graph (``"amp=True"``), or None.
        accumulation_name: the API's name for ``accumulation``, for messages.
        name: names the step in messages.
    """

    model: torch.nn.Module
    forward: Callable[[Any, Any], Any] = _call
    loss: Callable[[Any, Any], torch.Tensor] | None = None
    optimizer: Any = None
    scaler: Callable[[], Any] | None = None
    accumulation: int = 1
    set_to_none: bool | None = None
    autocast: Autocast = NO_AUTOCAST
    clone_outputs: bool = False
    graph_blocker: str | None = None
    accumulation_name: str = "gradient_accumulation_steps"
    name: str = "step"

    def current_scaler(self) -> Any:
        """The GradScaler to use now, or None."""
        return None if self.scaler is None else self.scaler()

    @property
    def whole(self) -> bool:
        """Whether the optimizer step belongs to the body: it runs every iteration and needs no host logic.

        (GradScaler's inf check syncs and must stay outside a CUDA graph, per PyTorch's notes.)
        """
        return self.accumulation == 1 and self.scaler is None


class Body(NamedTuple):
    """One candidate build of a step's device work.

    ``fn(x, y)`` → ``(y_pred, loss)`` for training, ``fn(x)`` → ``y_pred`` for evaluation.
    """

    fn: Callable[..., Any]
    #: The optimizer step is part of ``fn``.
    steps_optimizer: bool = False
    #: ``fn`` zeroes the gradients itself (a CUDA graph keeps them in its own memory).
    zeroes_grad: bool = False
    #: The object behind ``fn`` (a ``CompiledStep``, a ``GraphedStep``), for inspection; None when eager.
    impl: Any = None
    #: Its first iterations that ``compile="auto"`` does not time: compiling, a CUDA graph's warm-up and capture.
    warmup: int = 1


# -- host logic shared by every API --------------------------------------------------------------------------------


def backward(loss: torch.Tensor, accumulation: int = 1, scaler: Any = None) -> None:
    """The backward pass of ``loss`` divided by ``accumulation`` (when > 1), through ``scaler`` when given."""
    scaled = loss / accumulation if accumulation > 1 else loss
    (scaler.scale(scaled) if scaler else scaled).backward()


def optimizer_step(optimizer: Any, scaler: Any = None) -> None:
    """``optimizer.step()``, or ``scaler.step(optimizer)`` then ``scaler.update()``."""
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _zero_grad(optimizer: Any, set_to_none: bool | None) -> None:
    if set_to_none is None:
        optimizer.zero_grad()
    else:
        optimizer.zero_grad(set_to_none=set_to_none)


def _warmup_iters(model: torch.nn.Module) -> int:
    return _DDP_GRAPH_WARMUP_ITERS if isinstance(model, DistributedDataParallel) else _GRAPH_WARMUP_ITERS


# -- candidates ----------------------------------------------------------------------------------------------------


def _forward_backward(it: Iteration, x: Any, y: Any, model: Any = None, cache_enabled: bool | None = None) -> Any:
    """Forward, loss and backward on ``model`` (default: ``it.model``): ``(y_pred, loss)``."""
    scaler = it.current_scaler()
    with it.autocast(cache_enabled):
        y_pred = it.forward(it.model if model is None else model, x)
        loss = it.loss(y_pred, y)  # type: ignore[misc]
    backward(loss, it.accumulation, scaler)
    return y_pred, loss


def _train_body(it: Iteration, x: Any, y: Any, model: Any = None, cache_enabled: bool | None = None) -> Any:
    """Forward, loss, backward (and the optimizer step when ``it.whole``) on ``model`` (default: ``it.model``)."""
    out = _forward_backward(it, x, y, model, cache_enabled)
    if it.whole:
        optimizer_step(it.optimizer)
    return out


class _ThenFusedStep:
    """``fn(x, y)``, then the optimizer step through its fused implementation: the ``"fused"`` bodies."""

    __slots__ = ("fn", "optimizer")

    def __init__(self, fn: Callable[[Any, Any], Any], optimizer: torch.optim.Optimizer) -> None:
        self.fn = fn
        self.optimizer = optimizer

    def __call__(self, x: Any, y: Any) -> Any:
        out = self.fn(x, y)
        fused_step(self.optimizer)
        return out


def _eval_body(it: Iteration, x: Any, model: Any = None, cache_enabled: bool | None = None) -> Any:
    with it.autocast(cache_enabled):
        return it.forward(it.model if model is None else model, x)


def _graphed_train_compute(it: Iteration, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    y_pred, loss = _train_body(it, x, y, cache_enabled=False)
    return y_pred.detach(), loss.detach()  # a replay overwrites them; backward already ran inside the graph


def _graphed_train_eager(it: Iteration, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The warm-up and fallback iterations of a graphed step: the same outputs, detached, as a replay gives."""
    _zero_grad(it.optimizer, it.set_to_none)
    y_pred, loss = _train_body(it, x, y)
    return y_pred.detach(), loss.detach()


def _graph_blocker(it: Iteration) -> str | None:
    if it.loss is not None and not isinstance(it.optimizer, torch.optim.Optimizer):
        return f"an optimizer of type {type(it.optimizer).__name__} (not a torch.optim.Optimizer)"
    if it.accumulation > 1:
        return f"{it.accumulation_name} > 1"
    if it.graph_blocker is not None:
        return it.graph_blocker
    if it.scaler is not None:
        return "a GradScaler"
    return None


class Candidates:
    """The candidate builds of one step, by name, each made when first asked for.

    Args:
        it: the step.
        options: the step options (compile keyword arguments, the compiled-shape cap).
        device: the step's device.

    Attributes:
        builds: ``{"eager": make, "fused": make, "compiled": make, "compiled_fused": make, "graphed": make}``, each
            ``make()`` returning a :class:`Body`; ``"fused"`` and ``"compiled_fused"`` only where the optimizer can
            step through its fused implementation (:meth:`fused_blocker` says why not), ``"graphed"`` only where a
            CUDA graph can apply (:meth:`graph_blocker` says why not).
    """

    def __init__(self, it: Iteration, options: StepOptions, device: Any) -> None:
        self.it = it
        self.options = options
        self.device = device
        self.compile_kwargs = options.compile_kwargs(device) or _DEFAULT_COMPILE_KWARGS
        self.builds: dict[str, Callable[[], Body]] = {}
        self._model: CompiledModel | None = None

    def compiled_model(self) -> CompiledModel:
        """The model compiled alone (made once, shared by the candidates that use it)."""
        if self._model is None:
            self._model = CompiledModel(self.it.model, self.compile_kwargs, self.options.max_compiled_shapes)
        return self._model

    def graph_blocker(self) -> str | None:
        """Why the step cannot be captured in a CUDA graph on this device, or None."""
        if not cuda_graphs_supported(self.device):
            return f"device {self.device}"
        return _graph_blocker(self.it)

    def fused_blocker(self) -> str | None:
        """Why the step's optimizer cannot step through its fused implementation in the body, or None."""
        it = self.it
        if it.loss is None:
            return "an evaluation step (no optimizer)"
        if not it.whole:
            return f"{it.accumulation_name} > 1" if it.accumulation > 1 else "a GradScaler"
        return fused_blocker(it.optimizer, self.device)

    def graphed(self, compute: Callable[..., Any], eager: Callable[..., Any]) -> GraphedStep:
        """A :class:`GraphedStep` of ``compute`` whose warm-up and fallbacks run ``eager``."""
        it = self.it
        optimizer = it.optimizer if it.loss is not None else None
        return GraphedStep(
            compute,
            # The graph's backward must allocate its own gradients: they live in graph memory from then on.
            pre_capture=None if optimizer is None else partial(optimizer.zero_grad, set_to_none=True),
            eager_step=eager,
            warmup_iters=_warmup_iters(it.model),
            optimizer=optimizer,
            # Under compile="auto" the user did not ask for graphs: their outputs must not alias graph memory.
            clone_outputs=it.clone_outputs or self.options.variant == "auto",
            device=self.device,
            name=it.name,
        )

    def compiled(self, body: Callable[..., Any], state: tuple[Any, ...]) -> CompiledStep:
        """A :class:`CompiledStep` of ``body(it, ...)``, falling back to it around the model compiled alone."""
        return CompiledStep(
            partial(body, self.it),
            self.compile_kwargs,
            fallback=partial(body, self.it),
            # Used when the whole step does not compile: the same body around the model compiled alone.
            fallback_fn=partial(body, self.it, model=self.compiled_model()),
            state=state,
            max_shapes=self.options.max_compiled_shapes,
            name=self.it.name,
        )


def train_candidates(it: Iteration, options: StepOptions, device: Any) -> Candidates:
    """The candidate builds of a training step: ``fn(x, y)`` → ``(y_pred, loss)``."""
    made = Candidates(it, options, device)
    whole = it.whole
    graph_warmup = _warmup_iters(it.model) + 2  # warm-up, capture (+ its replay), one replay

    def eager() -> Body:
        return Body(partial(_train_body, it), steps_optimizer=whole)

    def fused() -> Body:
        return Body(_ThenFusedStep(partial(_forward_backward, it), it.optimizer), steps_optimizer=True)

    def compiled() -> Body:
        step = made.compiled(_train_body, (it.model, it.optimizer))
        return Body(step, steps_optimizer=whole, impl=step, warmup=2)

    def compiled_fused() -> Body:
        step = made.compiled(_forward_backward, (it.model, it.optimizer))
        return Body(_ThenFusedStep(step, it.optimizer), steps_optimizer=True, impl=step, warmup=2)

    def graphed() -> Body:
        step = made.graphed(partial(_graphed_train_compute, it), partial(_graphed_train_eager, it))
        return Body(step, steps_optimizer=True, zeroes_grad=True, impl=step, warmup=graph_warmup)

    made.builds["eager"] = eager
    if made.fused_blocker() is None:
        made.builds["fused"] = fused
    made.builds["compiled"] = compiled
    if made.fused_blocker() is None:
        made.builds["compiled_fused"] = compiled_fused
    if made.graph_blocker() is None:
        made.builds["graphed"] = graphed
    return made


def eval_candidates(it: Iteration, options: StepOptions, device: Any) -> Candidates:
    """The candidate builds of an evaluation step (an :class:`Iteration` without a loss): ``fn(x)`` → ``y_pred``."""
    made = Candidates(it, options, device)
    graph_warmup = _warmup_iters(it.model) + 2

    def eager() -> Body:
        return Body(partial(_eval_body, it))

    def compiled() -> Body:
        step = made.compiled(_eval_body, (it.model,))
        return Body(step, impl=step, warmup=2)

    def graphed() -> Body:
        step = made.graphed(partial(_graphed_eval_compute, it), partial(_graphed_eval_eager, it))
        return Body(partial(_graphed_eval, step), impl=step, warmup=graph_warmup)

    made.builds.update(eager=eager, compiled=compiled)
    if made.graph_blocker() is None:
        made.builds["graphed"] = graphed
    return made


def _graphed_eval_compute(it: Iteration, x: Any, y: Any) -> Any:
    return _eval_body(it, x, cache_enabled=False)


def _graphed_eval_eager(it: Iteration, x: Any, y: Any) -> Any:
    return _eval_body(it, x)


def _graphed_eval(step: GraphedStep, x: Any) -> Any:
    return step(x, None)  # the labels stay outside the graph


# -- the selector --------------------------------------------------------------------------------------------------


def select(candidates: Candidates, options: StepOptions, device: Any) -> str:
    """The candidate the options ask for: ``"graphed"`` with ``cuda_graphs``, else the build ``compile`` pins
    (``True`` and a dict: ``"compiled"``), else ``"auto"`` for ``compile="auto"`` (:class:`AutoSelector` measures),
    else ``"eager"``. ``cuda_graphs`` where the step cannot be graphed warns once (:class:`CudaGraphWarning`). An
    evaluation step runs ``"fused"`` as ``"eager"`` and ``"compiled_fused"`` as ``"compiled"`` (it has no optimizer).

    Raises:
        RuntimeError: ``cuda_graphs=True`` without a usable CUDA device.
        ValueError: ``compile`` pins ``"fused"`` or ``"compiled_fused"`` on a training step whose optimizer cannot
            step through its fused implementation.
    """
    if options.graphs(device):
        if "graphed" in candidates.builds:
            return "graphed"
        warnings.warn(
            f"{candidates.it.name}: cuda_graphs is not supported with {candidates.graph_blocker()}; every iteration "
            "runs eagerly.",
            CudaGraphWarning,
            stacklevel=5,
        )
    variant = options.variant
    if variant == "auto" or variant in candidates.builds:
        return variant
    if candidates.it.loss is None:
        return "compiled" if variant == "compiled_fused" else "eager"
    raise ValueError(
        f"{candidates.it.name}: compile={variant!r} steps the optimizer through its fused implementation, which "
        f"does not apply with {candidates.fused_blocker()}; pin 'eager' or 'compiled' instead, or use 'auto'"
    )


# -- the steps -----------------------------------------------------------------------------------------------------


class _Step:
    """What training and evaluation steps share: the chosen body, the compiled model, the measurement of
    ``compile="auto"``, the usability checks."""

    def __init__(self, candidates: Candidates, options: StepOptions, device: Any, parts: tuple[Any, ...]) -> None:
        self.it = candidates.it
        self.name = candidates.it.name
        self.options = options
        self.device = device
        self.parts = parts
        self._candidates = candidates
        self._warned: set[str] = set()
        self._engine: Callable[[], Any] = _no_engine
        variant = select(candidates, options, device)
        #: What the step runs (``engine.step_choice``): pinned, or measured under ``compile="auto"``.
        self.choice = StepChoice(requested="graphed" if variant == "graphed" else options.variant)
        #: The name of the candidate in use: ``"eager"``, ``"fused"``, ``"compiled"``, ``"compiled_fused"`` or
        #: ``"graphed"`` (under ``compile="auto"``, while measuring: the one being timed).
        self.variant = variant
        self.body: Body
        #: The model as the API's own pieces call it: compiled alone when ``compile`` is on, else None.
        self.compiled_model: CompiledModel | None = None
        #: The measurement under ``compile="auto"``, until it has chosen; else None.
        self.auto: AutoSelector | None = None
        if variant == "auto":
            self.auto = self._measure(candidates)
        else:
            self.choice.variant = variant
            self._use(variant, candidates.builds[variant]())
            if options.variant in COMPILED:  # compiled pieces beside a graphed body too
                self.compiled_model = candidates.compiled_model()

    def _measure(self, candidates: Candidates) -> AutoSelector:
        names = list(candidates.builds)
        return AutoSelector(
            [name for name in names if name not in COMPILED],
            [name for name in names if name in COMPILED],
            make=lambda name: candidates.builds[name](),
            switch=self._switched,
            iterations_left=self._iterations_left,
            choice=self.choice,
            device=self.device,
            training=self.it.loss is not None,
            name=self.name,
            group=ranks_together(self.it.model) if self.it.loss is not None else None,
        )

    def _use(self, variant: str, body: Body) -> None:
        self.variant = variant
        self.body = body

    def _switched(self, variant: str, body: Body) -> None:
        """The measurement's switch: ``body`` from the next iteration on, the model compiled alone with it."""
        self._use(variant, body)
        self.compiled_model = self._candidates.compiled_model() if variant in COMPILED else None
        if self.choice.variant is not None:
            self.auto = None

    def _iterations_left(self) -> int | None:
        engine = self._engine()
        return None if engine is None else iterations_left(engine.state)

    def attach(self, engine: Any) -> None:
        """Apply the engine-side options to ``engine`` (:meth:`StepOptions.attach`), expose :attr:`choice` as
        ``engine.step_choice``, and let ``compile="auto"`` read the run's planned length from its state."""
        self.options.attach(engine, self.device)
        engine.step_choice = self.choice
        self._engine = weakref.ref(engine)

    @property
    def graphed(self) -> GraphedStep | None:
        """The CUDA-graphed step in use, or None."""
        return self.body.impl if self.variant == "graphed" else None

    @property
    def compiled(self) -> bool:
        """Whether ``compile`` is on (the body, or at least the model, runs compiled code)."""
        return self.compiled_model is not None

    def reset(self) -> None:
        """Drop captured CUDA graphs (the optimizer state they point at may have been replaced)."""
        if self.graphed is not None:
            self.graphed.reset()

    def takes(self, engine: Any, split_events: tuple[Any, ...], parts: tuple[Any, ...], now: tuple[Any, ...]) -> bool:
        """Whether this iteration of an API with events inside its step may run the chosen body.

        Not when the body is eager (the API's own pieces are its eager step; but ``compile="auto"`` times the body
        while it measures), when every event must be fired (an
        overridden ``fire_event``), when an event of ``split_events`` has handlers, when the API passes the model
        extra arguments (``now`` holds them: non-empty), or when one of the ``parts`` the body closes over was
        replaced. For a graphed body each cause warns once (:class:`CudaGraphWarning`). Host-side checks only.

        Args:
            engine: the engine running the iteration.
            split_events: the events that fire between the pieces of the step.
            parts: the objects the API's iteration uses now (network, optimizer, loss, inferer ...).
            now: extra arguments for the model this iteration (``(args, kwargs)``).
        """
        if self.variant == "eager" and self.auto is None:
            return False
        if engine._every_event_fired():
            return self._eager("every event is fired (fire_event or _fire_event is overridden)")
        for event in split_events:
            if engine._has_handlers(event):
                name = getattr(event, "name", event)
                return self._eager(f"IterationEvents.{name} has handlers, and it fires inside the {self.variant} step")
        if any(now):
            return self._eager("prepare_batch returns extra arguments for the network")
        for current, built in zip(parts, self.parts):
            if current is not built:
                return self._eager("the network, optimizer, loss function or inferer was replaced")
        return True

    def _eager(self, cause: str) -> bool:
        if self.variant == "graphed" and cause not in self._warned:
            self._warned.add(cause)
            warnings.warn(
                f"{self.name}: {cause}; such iterations run eagerly, without the CUDA graph (warned once).",
                CudaGraphWarning,
                stacklevel=4,
            )
        return False


class TrainStep(_Step):
    """A training step built from an :class:`Iteration`: the chosen body and the host logic around it.

    ``begin`` → the API's ``model.train()`` and ``prepare_batch`` → ``run`` → ``finish`` is one iteration.

    Args:
        it: the step.
        options: hotloop's options (the builder reads ``compile``, ``cuda_graphs``, ``max_compiled_shapes`` and the
            non-finite guard).
        device: the step's device.
        parts: the objects the body closes over, for :meth:`takes`.
    """

    def __init__(self, it: Iteration, options: StepOptions, device: Any, parts: tuple[Any, ...] = ()) -> None:
        super().__init__(train_candidates(it, options, device), options, device, parts)
        self.guard: NonFiniteGuard | None = options.guard
        if self.guard is not None:
            self.guard.bind(it.model, it.optimizer)

    def begin(self, zero: bool, *, fused: bool = True, optimizer: Any = None) -> None:
        """Start an iteration: at an accumulation window's start, zero the gradients (unless the body does) and let
        the guard snapshot what a skipped step must restore.

        Args:
            zero: this iteration starts an accumulation window.
            fused: the chosen body runs this iteration (False: the API's own pieces).
            optimizer: the optimizer to zero (default: the step's).
        """
        if not zero:
            return
        if not (fused and self.body.zeroes_grad):
            _zero_grad(self.it.optimizer if optimizer is None else optimizer, self.it.set_to_none)
        guard = self.guard
        if guard is not None and guard.skips:
            # Before the window's first forward pass, which updates BatchNorm statistics a skip must undo too.
            guard.snapshot()

    def run(self, x: Any, y: Any) -> tuple[Any, torch.Tensor]:
        """The chosen body on ``(x, y)``: ``(y_pred, loss)``."""
        return self.body.fn(x, y)

    def backward(self, loss: torch.Tensor) -> None:
        """The backward pass of the API's own pieces: ``loss`` divided by the accumulation steps, through the
        step's GradScaler."""
        backward(loss, self.it.accumulation, self.it.current_scaler())

    def finish(
        self,
        loss: torch.Tensor,
        iteration: int,
        zero: bool,
        step: bool,
        *,
        fused: bool = True,
        optimizer: Any = None,
    ) -> None:
        """End an iteration: the guard observes the loss; on a window's last iteration the optimizer steps (unless the
        body did) and the guard undoes a step whose window saw a non-finite loss.

        Args:
            loss: the iteration's loss.
            iteration: ``engine.state.iteration``.
            zero: this iteration started an accumulation window.
            step: this iteration ends one: the optimizer steps.
            fused: the chosen body ran this iteration.
            optimizer: the optimizer to step (default: the step's).
        """
        guard = self.guard
        if guard is not None:
            guard.observe(loss, iteration, zero)
        if not step:
            return
        if not (fused and self.body.steps_optimizer):
            optimizer_step(self.it.optimizer if optimizer is None else optimizer, self.it.current_scaler())
        if guard is not None and guard.skips:
            guard.restore()


class EvalStep(_Step):
    """An evaluation step built from an :class:`Iteration` (without a loss): ``step(x)`` → ``y_pred``.

    The API sets the grad mode and the model's mode around it.
    """

    def __init__(self, it: Iteration, options: StepOptions, device: Any, parts: tuple[Any, ...] = ()) -> None:
        if options.on_nonfinite is not None:  # a guard watches a training loss: not attached to an evaluator
            options = dataclasses.replace(options, on_nonfinite=None)
        super().__init__(eval_candidates(it, options, device), options, device, parts)

    def __call__(self, x: Any) -> Any:
        """The chosen body on ``x``."""
        return self.body.fn(x)
