"""Pieces shared by the workflows' iterations: batch unpacking, MetaTensor stripping, model modes, autocast,
and the optionally compiled network forward."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from hotloop.step.compiled import CompiledStep, resolve_compile

__all__: list[str] = []

_NO_ARGS: tuple = ()


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
    """``value`` as a plain tensor when it is a ``MetaTensor`` (no metadata bookkeeping per operation)."""
    if meta_type is not None and type(value) is not torch.Tensor and isinstance(value, meta_type):
        return value.as_tensor()  # type: ignore[attr-defined]
    return value


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
