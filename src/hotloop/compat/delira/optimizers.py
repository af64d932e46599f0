"""delira's optimizer factory and wrapper (``delira.utils.context_managers``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["DefaultOptimWrapperTorch", "create_optims_default_pytorch"]


def create_optims_default_pytorch(model: torch.nn.Module, optim_cls: type, **optim_params: Any) -> dict[str, Any]:
    """delira's default ``optim_fn``: one optimizer over all parameters, under the key ``"default"``.

    Args:
        model: the network.
        optim_cls: the optimizer class.
        **optim_params: its keyword arguments.

    Returns:
        ``{"default": optim_cls(model.parameters(), **optim_params)}``
    """
    return {"default": optim_cls(model.parameters(), **optim_params)}


class DefaultOptimWrapperTorch:
    """delira's optimizer wrapper (``delira.utils.context_managers``): the optimizer with apex's ``scale_loss``.

    ``trainer.optimizers`` holds one per optimizer, as in delira, and delira closures use them as they are:
    ``with optimizers["default"].scale_loss(loss) as scaled: scaled.backward()``, then ``optimizers["default"].step()``.
    Every other attribute is the optimizer's (``param_groups``, ``state_dict``, ...); the optimizer itself is
    ``wrapper._optimizer``. Without mixed precision ``scale_loss`` yields the loss unchanged (delira without apex).
    With mixed precision on a GPU (hotloop's ``torch.amp`` in place of apex) it yields ``scaler.scale(loss)`` and
    ``step()`` is ``scaler.step(optimizer)`` followed by ``scaler.update()``.

    Args:
        optimizer: the ``torch.optim.Optimizer`` to wrap.
        *args: ignored (apex's ``num_loss`` and the like).
        **kwargs: ``scaler``, a ``torch.amp.GradScaler`` or None; anything else is ignored.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
        self._optimizer = optimizer
        self._scaler: torch.amp.GradScaler | None = kwargs.get("scaler")

    @contextlib.contextmanager
    def scale_loss(self, loss: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield the loss to call ``backward()`` on: scaled by the GradScaler with mixed precision, else as it is.

        Args:
            loss: the unscaled loss.
        """
        yield loss if self._scaler is None else self._scaler.scale(loss)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """The optimizer's step (through the GradScaler, then its update, with mixed precision).

        Args:
            closure: re-evaluates the model and returns the loss (optional for most optimizers; not with a scaler).
        """
        if self._scaler is None:
            return self._optimizer.step(closure=closure)
        result = self._scaler.step(self._optimizer)
        self._scaler.update()
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The optimizer's ``zero_grad``."""
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's ``state_dict``."""
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The optimizer's ``load_state_dict``."""
        self._optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """The optimizer's ``add_param_group``."""
        self._optimizer.add_param_group(param_group)

    def __getattr__(self, attr: str) -> Any:
        if attr == "_optimizer":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self._optimizer, attr)

    def __repr__(self) -> str:
        return repr(self._optimizer)
