"""torch.compile'd steps with a bounded number of compiled shapes and a safe fallback."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from hotloop.step.tree import tree_key

__all__ = ["COMPILED", "PINNED", "CompiledModel", "CompiledStep", "resolve_compile"]

_logger = logging.getLogger(__name__)


#: The candidate builds of a step that ``compile`` can pin by name (``docs/hot-path.md``): the step as the original
#: runs it; the same with the optimizer stepping through torch's fused implementation; the whole step compiled (what
#: ``compile=True`` builds); forward and backward compiled with the fused optimizer step after them.
PINNED = ("eager", "fused", "compiled", "compiled_fused")
#: Those of them that run compiled code.
COMPILED = ("compiled", "compiled_fused")


def resolve_compile(option: Any, device: str | torch.device | None) -> dict[str, Any] | None:
    """Turn the ``compile`` option into the ``torch.compile`` keyword arguments of the step's compiled builds.

    Args:
        option: ``False`` or ``"eager"`` or ``"fused"`` (nothing compiled), ``True`` or ``"compiled"`` or
            ``"compiled_fused"`` (compiled), ``"auto"`` (the arguments of the compiled candidates that the step's
            measurement may try, see :class:`~hotloop.step.StepChoice`), or a dict of ``torch.compile`` keyword
            arguments (compile with them).
        device: the step's device (the arguments do not depend on it).

    Returns:
        keyword arguments for ``torch.compile`` (``dynamic=False`` unless given), or None when nothing is compiled.

    Raises:
        ValueError: ``option`` is none of the above.
    """
    if option is False or option is None or option == "eager" or option == "fused":
        return None
    if option is True or option == "auto" or option in COMPILED:
        return {"dynamic": False}
    if isinstance(option, dict):
        return {"dynamic": False, **option}
    raise ValueError(
        "compile should be False, True, 'auto', one of the pinned builds "
        f"{', '.join(repr(name) for name in PINNED)} or a dict of torch.compile kwargs, got {option!r}"
    )


def _snapshot(objs: Sequence[Any]) -> list[Any]:
    states = []
    for o in objs:
        if isinstance(o, torch.nn.Module):
            grads = [None if p.grad is None else p.grad.detach().clone() for p in o.parameters()]
            states.append((copy.deepcopy(o.state_dict()), grads))
        else:
            states.append(copy.deepcopy(o.state_dict()))
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return [states, rng, cuda_rng]


def _restore(objs: Sequence[Any], snap: list[Any]) -> None:
    states, rng, cuda_rng = snap
    for o, st in zip(objs, states):
        if isinstance(o, torch.nn.Module):
            sd, grads = st
            o.load_state_dict(sd)
            for p, g in zip(o.parameters(), grads):
                p.grad = g
        else:
            o.load_state_dict(st)
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)


class CompiledStep:
    """A step function run through ``torch.compile``, one compiled graph per input shape, up to a limit.

    ``fn(*args)`` is compiled with ``compile_kwargs`` (``dynamic=False`` by default, so each input shape gets
    specialised code). Each distinct structure/shape/dtype of the arguments is compiled once — a training run
    typically sees two, the full batch and the short last one, and never recompiles after its first epoch. A shape
    beyond ``max_shapes`` runs ``fallback`` (the eager step) with one warning.

    If compiling fails on the first call, the objects in ``state`` (model, optimizer) and the RNG states are restored
    to what they were before the call (a graph break may have run part of the step), the reason is logged once, and
    the step continues with ``fallback_fn`` — e.g. the same step with only the model compiled — or eagerly.

    Args:
        fn: the step body; its arguments are what the shape key is computed from.
        compile_kwargs: keyword arguments for ``torch.compile``.
        fallback: the eager step with the same signature as ``fn``.
        fallback_fn: what to use if compiling ``fn`` fails (None: ``fallback``).
        state: modules and optimizers that ``fn`` mutates, restored if the first compiled call fails.
        max_shapes: how many distinct input shapes get compiled code.
        name: used in messages.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        compile_kwargs: dict[str, Any],
        fallback: Callable[..., Any],
        fallback_fn: Callable[..., Any] | None = None,
        state: Sequence[Any] = (),
        max_shapes: int = 4,
        name: str = "step",
    ) -> None:
        if max_shapes < 1:
            raise ValueError(f"max_shapes should be a positive integer, got {max_shapes}")
        self._compiled: Callable[..., Any] = torch.compile(fn, **compile_kwargs)
        self._fallback = fallback
        self._fallback_fn = fallback_fn
        self._state = tuple(state)
        self._max_shapes = max_shapes
        self._shapes: set[tuple] = set()
        self._verified = False
        self._warned_shapes = False
        self.name = name
        #: ``"whole"`` while the compiled step is in use, ``"fallback"`` after a compile failure.
        self.mode = "whole"

    def __call__(self, *args: Any) -> Any:
        key = tree_key(args)
        if key not in self._shapes:
            if len(self._shapes) >= self._max_shapes:
                if not self._warned_shapes:
                    warnings.warn(
                        f"hotloop: the compiled {self.name} has code for {self._max_shapes} input shapes already; "
                        "further shapes run eagerly (raise max_compiled_shapes, or pad batches to a fixed shape)",
                        stacklevel=2,
                    )
                    self._warned_shapes = True
                return self._fallback(*args)
            self._shapes.add(key)
        if self._verified:
            return self._compiled(*args)
        return self._first_call(args)

    def _first_call(self, args: tuple) -> Any:
        snap = _snapshot(self._state)
        try:
            out = self._compiled(*args)
        except Exception as e:  # torch._dynamo / inductor raise many types; any failure means "not compilable"
            _restore(self._state, snap)
            _logger.warning(
                "hotloop: compiling the whole %s failed (%s: %s); falling back", self.name, type(e).__name__, e
            )
            self.mode = "fallback"
            self._compiled = self._fallback_fn or self._fallback
            self._verified = True
            return self._compiled(*args)
        self._verified = True
        return out


def _call_model(model: torch.nn.Module, inputs: Any, *args: Any) -> Any:
    return model(inputs, *args)


class CompiledModel:
    """A model whose forward runs through :class:`CompiledStep`: one compiled graph per input shape, up to a limit.

    What a step calls in place of the model when only the model is compiled (MONAI's ``compile``, and the fallback
    of a whole step that does not compile). Calls with keyword arguments run eagerly; if compiling fails the model
    runs eagerly. Attributes are the model's (``compiled.weight`` is ``model.weight``), as with ``torch.compile``.

    Args:
        model: the module.
        compile_kwargs: ``torch.compile`` keyword arguments.
        max_shapes: how many input shapes get compiled code.
    """

    def __init__(self, model: torch.nn.Module, compile_kwargs: dict[str, Any], max_shapes: int = 4) -> None:
        self.model = model
        self.step = CompiledStep(
            # A function of ours that calls the model: dynamo does not trace a frame of torch's own files, so
            # ``model.__call__`` itself would run eagerly; called from here, ``Module.__call__`` is inlined.
            partial(_call_model, model),
            compile_kwargs,
            fallback=model.__call__,
            state=(model,),
            max_shapes=max_shapes,
            name="model forward",
        )

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the model on ``inputs``."""
        if kwargs:
            return self.model(inputs, *args, **kwargs)
        return self.step(inputs, *args)

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "step"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)
