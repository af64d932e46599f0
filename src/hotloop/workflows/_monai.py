"""MONAI, optional: a guarded import, the pieces of MONAI the workflows use when it is there, and hotloop's stand-ins.

Nothing here imports MONAI at module import time. ``HAS_MONAI`` only asks the import system whether the package can
be found; the first workflow built (or the first read of ``hotloop.workflows.IterationEvents``) imports
``monai.engines.utils`` when it can, so that MONAI's handlers, which attach to MONAI's own ``IterationEvents``, find
the very events the workflow fires; at that moment MONAI's ``ValidationHandler`` is also taught to accept hotloop's
evaluators (see :func:`_accept_hotloop_evaluators`).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["HAS_MONAI"]


def _monai_findable() -> bool:
    try:
        return importlib.util.find_spec("monai") is not None
    except (ImportError, ValueError):  # a blocked or half-installed package
        return False


#: Whether MONAI can be imported (the workflows then use its ``IterationEvents``, inferers and ``apply_transform``).
HAS_MONAI: bool = _monai_findable()


@functools.cache
def monai_engines_utils() -> Any:
    """``monai.engines.utils`` imported on first use, or None without MONAI."""
    if not HAS_MONAI:
        return None
    try:
        import monai.engines.utils as utils
    except ImportError:
        return None
    _accept_hotloop_evaluators()
    return utils


class _EvaluatorCheck(type):
    """A metaclass whose classes test ``isinstance`` / ``issubclass`` against several classes at once."""

    _accepted: tuple[type, ...]

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._accepted)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls._accepted)


def _accept_hotloop_evaluators() -> None:
    """Make MONAI's ``ValidationHandler`` accept hotloop's evaluators.

    ``ValidationHandler`` rejects a validator that is not ``isinstance(validator, monai.engines.Evaluator)``, and
    hotloop's ``Evaluator`` cannot subclass MONAI's without importing MONAI with hotloop. The module global it tests
    against is replaced by a class that accepts both MONAI's and hotloop's evaluators (nothing else changes). It can
    go when MONAI checks for a protocol instead of its class.
    """
    try:
        import monai.handlers.validation_handler as validation_handler
    except ImportError:
        return
    current = validation_handler.Evaluator
    if isinstance(current, _EvaluatorCheck):
        return
    from hotloop.workflows.evaluator import Evaluator

    validation_handler.Evaluator = _EvaluatorCheck(  # type: ignore[misc, assignment]
        "Evaluator", (), {"_accepted": (current, Evaluator), "__module__": current.__module__}
    )


@functools.cache
def meta_tensor_type() -> type | None:
    """``monai.data.MetaTensor``, or None without MONAI (then no batch can hold one)."""
    if monai_engines_utils() is None:
        return None
    from monai.data import MetaTensor

    return MetaTensor


class SimpleInferer:
    """hotloop's stand-in for ``monai.inferers.SimpleInferer`` when MONAI is not installed: calls the network."""

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``network(inputs, *args, **kwargs)``.

        Args:
            inputs: the model input, a tensor.
            network: the model (or any callable).
            *args: extra positional arguments for ``network``.
            **kwargs: extra keyword arguments for ``network``.

        Returns:
            what ``network`` returns.
        """
        return network(inputs, *args, **kwargs)


def default_inferer() -> Any:
    """MONAI's ``SimpleInferer()`` when MONAI is installed (same type as in MONAI's engines), hotloop's otherwise."""
    if monai_engines_utils() is not None:
        from monai.inferers import SimpleInferer as MonaiSimpleInferer

        return MonaiSimpleInferer()
    return SimpleInferer()


def _apply_without_monai(transform: Callable[..., Any], data: Any) -> Any:
    # MONAI's ``apply_transform`` with its defaults (``map_items=True``): a list or tuple is transformed item by item.
    if isinstance(data, (list, tuple)):
        return [transform(item) for item in data]
    return transform(data)


def apply_transform(transform: Callable[..., Any], data: Any) -> Any:
    """``monai.transforms.apply_transform(transform, data)`` when MONAI is installed, a plain call otherwise."""
    if monai_engines_utils() is not None:
        from monai.transforms import apply_transform as monai_apply_transform

        return monai_apply_transform(transform, data)
    return _apply_without_monai(transform, data)


def like(value: Any, template: Any) -> Any:
    """``value``, a plain tensor computed from ``template``'s data, as a ``MetaTensor`` with ``template``'s metadata.

    It reproduces what MONAI's ``MetaTensor.__torch_function__`` gives the output of an operation whose first
    ``MetaTensor`` argument is ``template``: the same ``is_batch``, and for a batch the same metadata objects
    (shallow), for a single item copies of them.
    """
    ret = value.as_subclass(type(template))
    is_batch = template.is_batch
    ret.is_batch = is_batch
    ret.copy_meta_from(template, copy_attr=not is_batch)
    return ret
