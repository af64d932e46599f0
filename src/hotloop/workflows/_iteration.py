"""Pieces shared by the workflows' iterations: batch unpacking, MONAI's MetaTensor unwrapping under ``compile``, model
modes, and how a workflow's step is described to hotloop's step builder (:mod:`hotloop.step.builder`)."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch

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


class InfererCall:
    """``inferer(x, model)``: how a workflow's step calls its network (the builder's ``Iteration.forward``)."""

    __slots__ = ("inferer",)

    def __init__(self, inferer: Callable[..., Any]) -> None:
        self.inferer = inferer

    def __call__(self, model: Any, x: Any) -> Any:
        return self.inferer(x, model)  # pred: [B, C, *spatial]


class MeanLoss:
    """``loss_function(pred, y).mean()``: MONAI's trainer loss (the builder's ``Iteration.loss``)."""

    __slots__ = ("loss_function",)

    def __init__(self, loss_function: Callable[..., Any]) -> None:
        self.loss_function = loss_function

    def __call__(self, pred: Any, y: Any) -> Any:
        return self.loss_function(pred, y).mean()


class EngineScaler:
    """``engine.scaler`` read when the step needs it (MONAI's trainer makes a new GradScaler at each ``run``); the
    engine is held weakly, so the step it belongs to makes no reference cycle."""

    __slots__ = ("engine",)

    def __init__(self, engine: Any) -> None:
        self.engine = weakref.ref(engine)

    def __call__(self) -> Any:
        engine = self.engine()
        return None if engine is None else engine.scaler


def compile_option(compile: Any, compile_kwargs: dict | None) -> Any:
    """MONAI's ``compile`` and ``compile_kwargs`` as hotloop's one ``compile`` option."""
    return dict(compile_kwargs) if compile is True and compile_kwargs else compile
