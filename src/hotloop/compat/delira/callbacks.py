"""delira's callbacks: the callback base, its error, and the learning-rate scheduler callback."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["AbstractCallback", "InvalidCallbackError", "PyTorchSchedulerCallback"]


class AbstractCallback:
    """delira's callback base: two hooks whose returned dicts update the trainer's attributes.

    The trainer calls ``at_epoch_begin(trainer, val_metrics=..., val_score_key=..., curr_epoch=...)`` before each
    epoch and ``at_epoch_end`` with the same keywords after it (``val_metrics`` are the latest validation metrics;
    ``{}`` before the first validation). Each returned dict goes to ``trainer._update_state``: e.g. returning
    ``{"stop_training": True}`` ends training after the current epoch (delira's early stopping).

    Examples:
        .. code-block:: python

            class StopAfter(AbstractCallback):
                def __init__(self, epochs):
                    super().__init__()
                    self.epochs = epochs

                def at_epoch_end(self, trainer, **kwargs):
                    return {"stop_training": kwargs["curr_epoch"] >= self.epochs}
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def at_epoch_begin(self, trainer: Any, **kwargs: Any) -> dict:
        """Called before each epoch.

        Args:
            trainer: the trainer.
            **kwargs: ``val_metrics``, ``val_score_key`` and ``curr_epoch``.

        Returns:
            attributes to set on the trainer (empty here).
        """
        return {}

    def at_epoch_end(self, trainer: Any, **kwargs: Any) -> dict:
        """Called after each epoch and its validation.

        Args:
            trainer: the trainer.
            **kwargs: ``val_metrics``, ``val_score_key`` and ``curr_epoch``.

        Returns:
            attributes to set on the trainer (empty here).
        """
        return {}


class InvalidCallbackError(TypeError, AssertionError):
    """Raised by ``register_callback`` for an object that is not a callback.

    It is a ``TypeError`` (hotloop's convention) and an ``AssertionError`` (what delira's ``assert`` raised), so
    code that catches either keeps working.
    """


class PyTorchSchedulerCallback(AbstractCallback):
    """Steps a ``torch.optim.lr_scheduler`` scheduler at the end of every epoch, as delira's scheduler callbacks do.

    ``ReduceLROnPlateau`` is stepped with the epoch's validation score, ``val_metrics[val_score_key]`` (delira's
    ``ReduceLROnPlateauCallbackPyTorch``); if there is none (no validation data, or the key is not a metric) the step
    is skipped with one warning. Other schedulers are stepped so that after epoch ``e`` their ``last_epoch`` is ``e``
    (delira called ``scheduler.step(epoch=curr_epoch)``), which keeps a resumed trainer's schedule in place.

    ``PyTorchNetworkTrainer`` wraps a scheduler class given as ``lr_scheduler_cls`` in this callback itself.

    Args:
        scheduler: a scheduler instance (anything with ``step()``).

    Raises:
        TypeError: ``scheduler`` has no ``step`` method.
    """

    def __init__(self, scheduler: Any) -> None:
        super().__init__()
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"scheduler should be a learning-rate scheduler with a step() method, got {scheduler!r}")
        self.scheduler = scheduler
        self._plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self._warned = False

    def at_epoch_end(self, trainer: Any, **kwargs: Any) -> dict:
        """Step the scheduler (see the class docstring).

        Args:
            trainer: the trainer.
            **kwargs: ``val_metrics``, ``val_score_key`` and ``curr_epoch``.

        Returns:
            an empty dict.
        """
        if self._plateau:
            self._step_plateau(kwargs.get("val_metrics") or {}, kwargs.get("val_score_key"))
            return {}
        epoch = kwargs.get("curr_epoch")
        if epoch is not None and isinstance(getattr(self.scheduler, "last_epoch", None), int):
            self.scheduler.last_epoch = epoch - 1  # the chainable form of step(epoch=...), without its deprecation
        self.scheduler.step()
        return {}

    def _step_plateau(self, val_metrics: Mapping[str, Any], val_score_key: Any) -> None:
        score = val_metrics.get(val_score_key)
        if score is None:
            if not self._warned:
                warnings.warn(
                    f"hotloop: ReduceLROnPlateau is not stepped: no validation score {val_score_key!r} "
                    f"(validation metrics: {sorted(val_metrics)}); pass datamgr_valid and a val_score_key that is "
                    "one of them",
                    stacklevel=2,
                )
                self._warned = True
            return
        self.scheduler.step(score)
