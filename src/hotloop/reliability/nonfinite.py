"""Non-finite losses detected on the device and acted on at the next sync point.

Ignite's ``TerminateOnNan`` reads ``state.output`` on the host every iteration: with ``no_sync=True`` that is one
device sync per iteration, the thing ``no_sync`` exists to avoid. :class:`NonFiniteGuard` instead copies each loss
into a preallocated device buffer (one ``copy_`` per iteration, no sync) and tests the buffer with ``isfinite`` on
the host every ``every`` iterations and at the end of each epoch (one sync per check).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["NONFINITE_ACTIONS", "NonFiniteGuard"]

NONFINITE_ACTIONS = ("terminate", "skip", "raise")

# (owner, key, value before the step): the owner is a parameter or buffer (key None) or an optimizer state's param.
_Snapshot = list[tuple[Any, Any, torch.Tensor]]


class NonFiniteGuard:
    """Watches the training loss on the device and acts when it is NaN or infinite.

    Pass it (or just the action's name) as ``create_supervised_trainer(..., on_nonfinite=...)``. The step calls
    :meth:`observe` with each loss (no host sync); the guard reads the losses seen since its last check on the host
    every ``every`` iterations and at ``EPOCH_COMPLETED`` and ``COMPLETED``, and then:

    - ``"terminate"``: logs a warning and calls ``engine.terminate()`` (what ``TerminateOnNan`` does, detected
      up to ``every`` iterations later; the steps in between have run with the bad loss);
    - ``"raise"``: raises ``FloatingPointError`` naming the first bad iteration;
    - ``"skip"``: the step of an iteration whose loss is non-finite is undone on the device — parameters, buffers
      (BatchNorm statistics and counters) and optimizer state keep their values from before the step, with
      ``torch.where`` against a copy taken before it — and the check warns how many steps were skipped. With
      gradient accumulation the whole window's step is skipped. The copy costs one extra read and write of the
      parameters, buffers and optimizer state per optimizer step. Optimizer state created by the very first step,
      and state tensors on another device than the loss (Adam's ``step`` on the CPU for a CUDA model, unless
      ``capturable=True`` or ``fused=True``), need the flag on the host: one sync on those steps.

    Args:
        action: ``"terminate"``, ``"skip"`` or ``"raise"``.
        every: check on the host every this many iterations (and at each epoch's end).

    Raises:
        ValueError: if ``action`` or ``every`` is invalid.

    Attributes:
        skipped: steps skipped so far (as of the last check).
        first_bad_iteration: the first iteration with a non-finite loss seen by a check, or None.

    Examples:
        .. code-block:: python

            trainer = create_supervised_trainer(model, optimizer, loss_fn, no_sync=True,
                                                on_nonfinite=NonFiniteGuard("skip", every=500))
    """

    def __init__(self, action: str = "terminate", every: int = 100) -> None:
        if action not in NONFINITE_ACTIONS:
            raise ValueError(f"on_nonfinite should be one of {NONFINITE_ACTIONS} or None, got {action!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every should be a positive integer, got {every!r}")
        self.action = action
        self.every = every
        self.skipped = 0
        self.first_bad_iteration: int | None = None
        self._losses: torch.Tensor | None = None  # [capacity]: the losses since the last check, on the device
        self._n = 0  # how many of them are filled
        self._first_iteration = 0  # the iteration of self._losses[0]
        self._window_slot: int | None = None  # where the open accumulation window starts in self._losses
        self._carried: torch.Tensor | None = None  # bool: a bad loss in the open window before the last check
        self._skips: torch.Tensor | None = None  # int64: windows skipped since the last check
        self._snapshot: _Snapshot = []
        self._model: torch.nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    @property
    def skips(self) -> bool:
        """True when the step must be undone on a non-finite loss."""
        return self.action == "skip"

    def bind(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Tell the guard what a skipped step must leave unchanged (called by the step builder)."""
        self._model, self._optimizer = model, optimizer

    # -- on the device, every iteration ------------------------------------------------------------------------

    def observe(self, loss: torch.Tensor, iteration: int, window_start: bool) -> None:
        """Record ``loss`` (a scalar tensor) for the next check, without a host sync.

        Args:
            loss: the iteration's loss.
            iteration: ``engine.state.iteration``.
            window_start: True on the first iteration of a gradient-accumulation window.
        """
        losses = self._losses
        if losses is None or self._n == losses.numel():
            losses = self._grow(loss)
        if self._n == 0:
            self._first_iteration = iteration
        if window_start:
            self._window_slot, self._carried = self._n, None
        losses[self._n].copy_(loss.detach())  # the one device op per iteration
        self._n += 1

    def _grow(self, loss: torch.Tensor) -> torch.Tensor:
        old = self._losses
        size = self.every if old is None else 2 * old.numel()  # more than ``every`` only if a check was skipped
        self._losses = torch.empty(size, dtype=torch.float32, device=loss.device)
        if old is not None:
            self._losses[: old.numel()].copy_(old)
        return self._losses

    def snapshot(self) -> None:
        """Copy the parameters, buffers and optimizer state that the coming window's step will change."""
        assert self._model is not None and self._optimizer is not None, "bind() was not called"
        snap: _Snapshot = []
        for group in self._optimizer.param_groups:
            for p in group["params"]:
                snap.append((p, None, p.detach().clone()))
        for b in self._model.buffers():  # BatchNorm's running statistics and num_batches_tracked
            snap.append((b, None, b.clone()))
        for p, st in self._optimizer.state.items():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    snap.append((p, key, value.clone()))
        self._snapshot = snap

    def _window_bad(self) -> torch.Tensor:
        assert self._losses is not None and self._window_slot is not None
        bad = ~torch.isfinite(self._losses[self._window_slot : self._n]).all()
        return bad if self._carried is None else bad | self._carried

    def restore(self) -> None:
        """Undo the window's step, on the device, if one of its losses was non-finite."""
        assert self._optimizer is not None
        snap, self._snapshot = self._snapshot, []
        if self._window_slot is None or not snap:  # a run resumed in the middle of a window: nothing to undo to
            self._window_slot = self._carried = None
            return
        bad = self._window_bad()
        self._window_slot, self._carried = None, None
        self._skips = bad.long() if self._skips is None else self._skips + bad
        flags = {bad.device: bad}
        state = self._optimizer.state
        had_state = {id(p) for p, key, _ in snap if key is not None}
        for owner, key, before in snap:
            current = owner if key is None else state[owner][key]
            flag = flags.get(current.device)
            if flag is None:  # a state tensor on another device: the flag must cross over (one sync)
                flag = flags[current.device] = bad.to(current.device)
            kept = torch.where(flag, before, current.detach())
            if key is None:
                current.detach().copy_(kept)
            else:
                state[owner][key] = kept
        new = [p for p in state if id(p) not in had_state and state[p]]
        if new and bool(bad):  # state created by this step: removing it is host logic (first step only)
            for p in new:
                del state[p]

    # -- on the host, at sync points ------------------------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        """Check every ``every`` iterations, at each epoch's end, and when the run completes."""
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.check)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check)
        engine.add_event_handler(Events.COMPLETED, self.check)

    def check(self, engine: Engine) -> None:
        """Read the losses seen since the last check (one host sync) and act on non-finite ones.

        Raises:
            FloatingPointError: with ``action="raise"``, if a loss was non-finite.
        """
        if self._n == 0 or self._losses is None:
            return
        seen = self._losses[: self._n]
        bad = ~torch.isfinite(seen)
        skips = self._skips if self._skips is not None else torch.zeros((), dtype=torch.int64, device=seen.device)
        count, first, skipped = torch.stack([bad.sum(), bad.int().argmax(), skips]).tolist()  # the sync point
        self._forget_checked()
        if count == 0:
            return
        first += self._first_iteration
        if self.first_bad_iteration is None:
            self.first_bad_iteration = first
        self._act(engine, count, first, skipped)

    def _forget_checked(self) -> None:
        if self._window_slot is not None:  # an accumulation window is open: keep what it has seen
            self._carried = self._window_bad()
            self._window_slot = 0
        self._n = 0
        self._skips = None

    def _act(self, engine: Engine, count: int, first: int, skipped: int) -> None:
        where = f"at iteration {first} (detected at iteration {engine.state.iteration})"
        if self.action == "raise":
            raise FloatingPointError(
                f"Non-finite loss {where}, {count} in all since the last check. Lower the learning rate, check the "
                "inputs, or pass on_nonfinite='skip' to skip such steps"
            )
        if self.action == "skip":
            self.skipped += skipped
            warnings.warn(
                f"hotloop: skipped {skipped} step(s) for {count} non-finite loss(es), the first {where}", stacklevel=2
            )
            return
        if not engine.should_terminate:
            engine.logger.warning(f"{type(self).__name__}: Non-finite loss {where}: terminating")
            engine.terminate()
