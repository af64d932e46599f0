"""Checkpoints: the files delira writes and reads (``checkpoint_epoch_N.pth``, ``checkpoint_best.pth``), and the
resume from the latest one."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Self

import torch

from hotloop.compat.delira.abstract_trainer import AbstractNetworkTrainer

__all__: list[str] = []

_logger = logging.getLogger(__package__)

_BEST_NAME = "checkpoint_best.pth"


class _CheckpointingTrainer(AbstractNetworkTrainer):
    """The checkpoints of ``PyTorchNetworkTrainer``: ``save_path``, the files delira writes, the resume from them."""

    save_path: str
    start_epoch: int
    module: torch.nn.Module
    optimizers: dict[str, Any]
    scaler: torch.amp.GradScaler | None

    @property
    def _network(self) -> torch.nn.Module:
        """The network itself (``self.module`` without its ``DataParallel`` wrapper)."""
        module = self.module
        return module.module if isinstance(module, torch.nn.DataParallel) else module

    def save_state(self, file_name: str | os.PathLike, epoch: int, **kwargs: Any) -> None:
        """Save the current state to ``file_name``, as ``delira.io.torch.save_checkpoint`` did.

        Args:
            file_name: the file (used as it is).
            epoch: the current epoch, saved with the state (None is saved as 0).
            **kwargs: passed to ``torch.save``.
        """
        state: dict[str, Any] = {
            "optimizer": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "model": self._network.state_dict(),
            "epoch": 0 if epoch is None else epoch,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        torch.save(state, os.fspath(file_name), **kwargs)

    @staticmethod
    def load_state(file_name: str | os.PathLike, **kwargs: Any) -> dict:
        """Load a state from ``file_name``, as ``delira.io.torch.load_checkpoint`` did.

        Args:
            file_name: the file.
            **kwargs: passed to ``torch.load``.

        Returns:
            the state, ``{"model", "optimizer", "epoch"}`` (and ``"scaler"``); for a file without those keys, its
            ``"state_dict"`` entry.

        Raises:
            TypeError: the file does not hold a dict.
            KeyError: it holds neither the trainer's keys nor a ``"state_dict"``.
        """
        state = torch.load(os.fspath(file_name), **kwargs)
        if not isinstance(state, dict):
            raise TypeError(f"{file_name} does not hold a trainer state (a dict), got {type(state).__name__}")
        if not all(key in state for key in ("model", "optimizer", "epoch")):
            return state["state_dict"]
        return state

    def update_state(self, file_name: str | os.PathLike, *args: Any, **kwargs: Any) -> Self:
        """Update the internal state from a state loaded from ``file_name`` (loaded onto the CPU by default).

        Args:
            file_name: the checkpoint.
            *args: passed to :meth:`load_state`.
            **kwargs: passed to :meth:`load_state` (``map_location`` defaults to ``"cpu"``: the tensors are copied
                into the trainer's own, wherever they live).

        Returns:
            the trainer, with its state modified.
        """
        kwargs.setdefault("map_location", "cpu")
        return self._update_state(self.load_state(file_name, *args, **kwargs))

    def _update_state(self, new_state: Mapping[str, Any] | None) -> Self:
        """Update the state from a given new state.

        ``"model"`` is loaded into the network, a non-empty ``"optimizer"`` into the optimizers (by key),
        ``"scaler"`` into the GradScaler, ``"epoch"`` becomes ``start_epoch`` (delira's: training resumes with the
        saved epoch); any other key becomes an attribute.

        Args:
            new_state: the new state.

        Returns:
            the trainer, with its state modified.
        """
        if new_state is None:
            return self
        if not isinstance(new_state, Mapping):
            raise TypeError(f"a new state should be a dict, got {new_state!r}")
        rest = dict(new_state)
        if "model" in rest:
            self._network.load_state_dict(rest.pop("model"))
        optim_state = rest.pop("optimizer", None)
        if optim_state:
            for key, optimizer in self.optimizers.items():
                optimizer.load_state_dict(optim_state[key])
        scaler_state = rest.pop("scaler", None)
        if scaler_state and self.scaler is not None:
            self.scaler.load_state_dict(scaler_state)
        if "epoch" in rest:
            self.start_epoch = rest.pop("epoch")
        super()._update_state(rest)
        return self

    def _make_save_path(self) -> None:
        if os.path.isdir(self.save_path):
            _logger.warning("Save Path already exists. Saved Models may be overwritten")
        else:
            os.makedirs(self.save_path)

    def _load_latest_state(self) -> None:
        """delira's resume: load the ``checkpoint_epoch_{N}.pth`` of the highest ``N`` found in ``save_path``.

        The files considered are those whose name starts with ``checkpoint`` and does not end with ``_best.pth``;
        ``N`` is the part after the last ``_`` (a name without a number there is skipped, where delira raised).
        A checkpoint without the trainer's keys is skipped with delira's warning.
        """
        epochs = []
        for name in os.listdir(self.save_path):
            if not name.startswith("checkpoint") or name.endswith("_best.pth"):
                continue
            if not os.path.isfile(os.path.join(self.save_path, name)):
                continue
            try:
                epochs.append(int(name.rsplit("_", 1)[-1].rsplit(".", 1)[0]))
            except ValueError:
                continue
        if not epochs:
            return
        path = os.path.join(self.save_path, f"checkpoint_epoch_{max(epochs)}.pth")
        _logger.info("Attempting to load state from previous training from %s", path)
        try:
            self.update_state(path)
        except KeyError:
            _logger.warning("Previous State could not be loaded, although it exists. Training will be restarted")
