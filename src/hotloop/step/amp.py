"""The autocast context of a step: one helper for every API (Ignite's amp steps, MONAI's ``amp``, delira's mixed
precision)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

__all__ = ["NO_AUTOCAST", "Autocast"]


class Autocast:
    """``autocast("cuda", **kwargs)`` around a step's forward pass and loss, or no context at all.

    Inside a CUDA-graph capture the step asks for ``cache_enabled=False`` (PyTorch's CUDA-graph notes: a weight cast
    cached during the capture would be freed memory at replay).

    Args:
        autocast: the autocast class (``torch.autocast``), or None for no autocast.
        **kwargs: its keyword arguments after the device type (``dtype``, ``enabled``, ``cache_enabled`` ...).

    Examples:
        .. code-block:: python

            amp = Autocast(torch.autocast, dtype=torch.float16)
            with amp():
                loss = loss_fn(model(x), y)
    """

    __slots__ = ("_autocast", "kwargs")

    def __init__(self, autocast: Callable[..., AbstractContextManager[Any]] | None, **kwargs: Any) -> None:
        self._autocast = autocast
        self.kwargs = kwargs

    @classmethod
    def ignite(cls, amp: bool) -> Autocast:
        """Ignite's amp steps: ``torch.amp.autocast("cuda", enabled=True)``, imported now (when the step is built)
        so that a missing ``torch.amp`` fails at creation with Ignite's error, and a patched ``torch.amp.autocast``
        is the one called; no autocast without ``amp``.

        Raises:
            ImportError: ``amp`` and ``torch.amp`` cannot be imported (Ignite's message).
        """
        if not amp:
            return NO_AUTOCAST
        try:
            from torch.amp import autocast
        except ImportError as error:
            raise ImportError("Please install torch>=1.12.0 to use amp_mode='amp'.") from error
        return cls(autocast, enabled=True, cache_enabled=True)

    @classmethod
    def cuda(cls, enabled: bool, **kwargs: Any) -> Autocast:
        """``torch.autocast("cuda", **kwargs)`` when ``enabled`` (MONAI's ``amp`` with its ``amp_kwargs``, delira's
        mixed precision), else no autocast."""
        return cls(torch.autocast, **kwargs) if enabled else NO_AUTOCAST

    @property
    def enabled(self) -> bool:
        """Whether this is an autocast context at all."""
        return self._autocast is not None

    def __call__(self, cache_enabled: bool | None = None) -> AbstractContextManager[Any]:
        """The context for one call of the step; ``cache_enabled`` overrides the weight-cast cache setting."""
        if self._autocast is None:
            return nullcontext()
        kwargs = self.kwargs if cache_enabled is None else {**self.kwargs, "cache_enabled": cache_enabled}
        return self._autocast("cuda", **kwargs)


#: No autocast.
NO_AUTOCAST = Autocast(None)
