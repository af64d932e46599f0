"""Pieces shared by the workflows' iterations: batch unpacking, MONAI's MetaTensor unwrapping under ``compile``, model
modes, autocast, the optionally compiled network forward, and the optionally CUDA-graphed step."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from hotloop.step.compiled import CompiledStep, resolve_compile
from hotloop.step.graphed import CudaGraphWarning, GraphedStep, resolve_cuda_graphs
from hotloop.workflows.utils import CommonKeys

__all__: list[str] = []

_NO_ARGS: tuple = ()
_IMAGE, _LABEL, _PRED = CommonKeys.IMAGE, CommonKeys.LABEL, CommonKeys.PRED


def prepared(engine: Any, batchdata: Any) -> tuple[Any, Any, tuple, dict]:
    """``engine.prepare_batch``'s result as ``(inputs, targets, args, kwargs)``.

    Raises:
        ValueError: ``batchdata`` is None.
    """
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
    if len(batch) == 2:
        inputs, targets = batch
        return inputs, targets, _NO_ARGS, {}
    inputs, targets, args, kwargs = batch
    return inputs, targets, args, kwargs


def plain(value: Any, meta_type: type | None) -> Any:
    """``value`` as a plain tensor when it is a ``MetaTensor``: what a CUDA-graphed step's static input buffers take."""
    if meta_type is not None and type(value) is not torch.Tensor and isinstance(value, meta_type):
        return value.as_tensor()  # type: ignore[attr-defined]
    return value


#: MONAI's warning when it unwraps a MetaTensor input under ``compile`` (``monai.engines``, 1.6.1), word for word.
COMPILE_UNWRAP_WARNING = (
    "Will convert to PyTorch Tensor if using compile, and casting back to MetaTensor after the forward pass."
)

_Meta = tuple[Any, Any]  # a MetaTensor's (meta, applied_operations)


def unwrap_for_compile(
    inputs: Any, targets: Any, meta_type: type | None
) -> tuple[Any, Any, _Meta | None, _Meta | None]:
    """MONAI's workaround for torch.compile (pytorch/pytorch#117026): MetaTensor inputs and targets as plain tensors.

    Returns ``(inputs, targets, inputs_meta, targets_meta)``; a ``*_meta`` is ``(meta, applied_operations)`` of a
    MetaTensor that was unwrapped, else None. Warns (MONAI's text) when ``inputs`` is a MetaTensor, as MONAI does on
    every such iteration.
    """
    if meta_type is None:
        return inputs, targets, None, None
    inputs_meta = targets_meta = None
    if isinstance(inputs, meta_type):
        warnings.warn(COMPILE_UNWRAP_WARNING, stacklevel=2)  # reported at the workflow's _iteration
        inputs, inputs_meta = inputs.as_tensor(), (inputs.meta, inputs.applied_operations)  # type: ignore[attr-defined]
    if isinstance(targets, meta_type):
        targets, targets_meta = targets.as_tensor(), (targets.meta, targets.applied_operations)  # type: ignore[attr-defined]
    return inputs, targets, inputs_meta, targets_meta


def rewrap(value: Any, saved: _Meta, meta_type: Any) -> Any:
    """``MetaTensor(value, meta=..., applied_operations=...)``: how MONAI casts back after the compiled forward."""
    meta, applied_operations = saved
    return meta_type(value, meta=meta, applied_operations=applied_operations)


def restore_after_compile(
    output: dict, inputs: Any, targets: Any, inputs_meta: _Meta | None, targets_meta: _Meta | None, meta_type: Any
) -> None:
    """Put the metadata back into ``output`` as MONAI does after its compiled forward.

    ``image`` and ``pred`` get the image's metadata, ``label`` the label's; ``loss`` stays a plain tensor.
    """
    if inputs_meta is not None:
        output[_IMAGE] = rewrap(inputs, inputs_meta, meta_type)
        output[_PRED] = rewrap(output[_PRED], inputs_meta, meta_type)
    if targets_meta is not None:
        output[_LABEL] = rewrap(targets, targets_meta, meta_type)


class eval_mode:  # noqa: N801 - MONAI's name, used as ``with engine.mode(network):``
    """Put networks in eval mode under ``torch.no_grad()``; restore the ones that were training on exit.

    Args:
        *nets: the networks.
    """

    __slots__ = ("_nets", "_training", "_grad")

    def __init__(self, *nets: Any) -> None:
        self._nets = nets
        self._training: list[Any] = []
        self._grad: Any = None

    def __enter__(self) -> list[Any]:
        self._training = [n for n in self._nets if getattr(n, "training", False)]
        self._grad = torch.no_grad()
        self._grad.__enter__()
        return [n.eval() if hasattr(n, "eval") else n for n in self._nets]

    def __exit__(self, *exc: Any) -> None:
        self._grad.__exit__(*exc)
        for n in self._training:
            if hasattr(n, "train"):
                n.train()


class train_mode:  # noqa: N801 - MONAI's name
    """Put networks in train mode with gradients enabled; restore the ones that were in eval mode on exit.

    Args:
        *nets: the networks.
    """

    __slots__ = ("_nets", "_eval", "_grad")

    def __init__(self, *nets: Any) -> None:
        self._nets = nets
        self._eval: list[Any] = []
        self._grad: Any = None

    def __enter__(self) -> list[Any]:
        self._eval = [n for n in self._nets if hasattr(n, "training") and not n.training]
        self._grad = torch.set_grad_enabled(True)
        self._grad.__enter__()
        return [n.train() if hasattr(n, "train") else n for n in self._nets]

    def __exit__(self, *exc: Any) -> None:
        self._grad.__exit__(*exc)
        for n in self._eval:
            if hasattr(n, "eval"):
                n.eval()


def autocast(amp: bool, amp_kwargs: dict) -> Any:
    """``torch.autocast("cuda", **amp_kwargs)`` when ``amp``, else a no-op context (MONAI's choice of device)."""
    return torch.autocast("cuda", **amp_kwargs) if amp else nullcontext()


class CompiledForward:
    """A network's forward run through hotloop's :class:`~hotloop.step.CompiledStep`.

    One compiled graph per input shape (``dynamic=False`` unless ``compile_kwargs`` says otherwise), up to
    ``max_shapes``, then eager with one warning; if compiling fails the network runs eagerly. Calls with keyword
    arguments run eagerly.

    Args:
        network: the module.
        compile_kwargs: ``torch.compile`` keyword arguments.
        max_shapes: how many input shapes get compiled code.
    """

    def __init__(self, network: torch.nn.Module, compile_kwargs: dict[str, Any], max_shapes: int = 4) -> None:
        self.network = network
        self._step = CompiledStep(
            network.__call__,
            compile_kwargs,
            fallback=network.__call__,
            state=(network,),
            max_shapes=max_shapes,
            name="network forward",
        )

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the network on ``inputs``."""
        if kwargs:
            return self.network(inputs, *args, **kwargs)
        return self._step(inputs, *args)


def network_forward(
    network: torch.nn.Module, compile: Any, compile_kwargs: dict | None, device: Any
) -> Callable[..., Any]:
    """What the inferer calls: the network itself, or its :class:`CompiledForward` when ``compile`` asks for it.

    Raises:
        ValueError: ``compile`` is not False, True, ``"auto"`` or a dict.
    """
    option = compile
    if option is True and compile_kwargs:
        option = dict(compile_kwargs)
    kwargs = resolve_compile(option, device)
    if kwargs is None:
        return network
    return CompiledForward(network, kwargs)


def graphs_wanted(cuda_graphs: Any, device: Any, name: str, unsupported: str | None) -> bool:
    """Whether ``cuda_graphs`` turns the graphed step on for ``device``; False with one warning if ``unsupported``.

    Args:
        cuda_graphs: the user's option: False, True or ``"auto"``.
        device: the workflow's device.
        name: the workflow, for the warning.
        unsupported: why this workflow's configuration cannot be graphed (e.g. ``"amp=True"``), or None.

    Raises:
        ValueError: ``cuda_graphs`` is not False, True or ``"auto"``.
        RuntimeError: ``cuda_graphs=True`` without a usable CUDA device.
    """
    if not resolve_cuda_graphs(cuda_graphs, device):
        return False
    if unsupported is not None:
        warnings.warn(
            f"{name}: cuda_graphs is not supported with {unsupported}; every iteration runs eagerly.",
            CudaGraphWarning,
            stacklevel=3,
        )
        return False
    return True


class GraphedIteration:
    """A workflow iteration's compute run through :class:`~hotloop.step.GraphedStep`, and when it may be.

    The graph holds the compute of the whole iteration, so an ``IterationEvents`` member that fires inside it
    (``split_events``) cannot run in between: an iteration where one of them has handlers, or where every event
    must be fired (an overridden ``fire_event``), runs eagerly, with one warning per cause. So does an iteration
    with extra ``prepare_batch`` arguments, or after the network, optimizer, loss or inferer was replaced (the
    graph holds the old ones). Outputs are clones: ``state.output`` keeps them beyond the next replay.

    Args:
        compute: ``compute(x, y)``, the iteration's graphed work on plain tensors.
        eager_step: ``eager_step(x, y)``, the same work eagerly, including ``zero_grad`` for a trainer.
        pre_capture: called before each capture (a trainer's ``zero_grad(set_to_none=True)``), or None.
        optimizer: the optimizer ``compute`` steps, or None.
        parts: the objects ``compute`` closes over; a replaced one sends the iteration to eager.
        split_events: the events that would fire inside the graph.
        name: names the step in warnings.
    """

    __slots__ = ("step", "parts", "split_events", "name", "_warned")

    def __init__(
        self,
        compute: Callable[[Any, Any], Any],
        eager_step: Callable[[Any, Any], Any],
        pre_capture: Callable[[], Any] | None,
        optimizer: torch.optim.Optimizer | None,
        parts: tuple[Any, ...],
        split_events: tuple[Any, ...],
        name: str,
    ) -> None:
        self.step = GraphedStep(
            compute, pre_capture=pre_capture, eager_step=eager_step, optimizer=optimizer, clone_outputs=True, name=name
        )
        self.parts = parts
        self.split_events = split_events
        self.name = name
        self._warned: set[str] = set()

    def usable(self, engine: Any, parts: tuple[Any, ...], args: tuple, kwargs: dict) -> bool:
        """True when this iteration may run the graphed step (host-side checks only, no device sync)."""
        if engine._hl_faithful:
            return self._eager("every event is fired (fire_event or _fire_event is overridden)")
        handlers = engine._event_handlers
        for event in self.split_events:
            if handlers.get(event):
                name = getattr(event, "name", event)
                return self._eager(f"IterationEvents.{name} has handlers, and it fires inside the graphed step")
        if args or kwargs:
            return self._eager("prepare_batch returns extra arguments for the network")
        for now, captured in zip(parts, self.parts):
            if now is not captured:
                return self._eager("the network, optimizer, loss function or inferer was replaced")
        return True

    def _eager(self, cause: str) -> bool:
        if cause not in self._warned:
            self._warned.add(cause)
            warnings.warn(
                f"{self.name}: {cause}; such iterations run eagerly, without the CUDA graph (warned once).",
                CudaGraphWarning,
                stacklevel=4,
            )
        return False
