"""An optimizer step through torch's fused implementation, for one step at a time: the ``"fused"`` candidates.

torch's Adam, AdamW, SGD and Adagrad have a ``fused`` implementation (one kernel per parameter tensor instead of a
Python loop of element-wise ops): on this project's 2-core CPU it trains issue 18's workloads 1.03-1.25× faster than
the default for-loop implementation (MLP with Adam 1.17-1.25×, transformer with AdamW 1.05-1.15×, digits CNN with SGD
1.03-1.04×; ``foreach=True`` ≈ 1.00×). Its results are not bitwise the for-loop's: after ~150 AdamW steps of the
transformer the loss is 0.02930 instead of 0.02915 (float32 rounding, in the order of the operations).

:func:`fused_step` switches the optimizer's param groups to ``fused=True`` for the duration of one ``step()`` and
puts back what they held: the optimizer's ``state_dict()``, its ``defaults`` and everything a program reads between
steps stay as the user made them, and the optimizer state it updates is the same tensors, laid out alike (on a CPU
``state["step"]`` is a CPU float32 scalar either way), so that steps with and without it mix freely.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.optimizer import _get_fused_kernels_supported_devices

__all__ = ["fused_blocker", "fused_step"]


def fused_blocker(optimizer: Any, device: str | torch.device | None) -> str | None:
    """Why ``optimizer`` cannot step through its fused implementation on ``device`` (one step at a time), or None.

    Args:
        optimizer: the step's optimizer.
        device: the step's device.

    Returns:
        None when :func:`fused_step` applies: a ``torch.optim`` optimizer of its own class (not a subclass, whose
        ``step`` may not read ``fused``) that has a fused implementation, ``foreach`` and ``fused`` left unset
        (``None``) in every param group, not ``differentiable``, every parameter a floating-point tensor on the CPU.
        Else the reason, for the log and for an error that names it.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        return f"an optimizer of type {type(optimizer).__name__} (not a torch.optim.Optimizer)"
    kind = type(optimizer)
    if "fused" not in optimizer.defaults or not kind.__module__.startswith("torch.optim."):
        return f"{kind.__name__} has no fused implementation (torch's Adam, AdamW, SGD and Adagrad have)"
    # On CUDA the fused kernels keep ``state["step"]`` on the device and the default implementation on the host:
    # steps with and without it cannot alternate there (and CUDA's default, foreach, is already multi-tensor).
    where = "cpu" if device is None else torch.device(device).type
    if where != "cpu" or "cpu" not in _get_fused_kernels_supported_devices():
        return f"device {where} (the fused candidate is for CPU steps)"
    for group in optimizer.param_groups:
        if group.get("foreach") is not None or group.get("fused") is not None:
            return "foreach or fused set on the optimizer (the user's choice is kept)"
        if group.get("differentiable"):
            return "differentiable=True"
        if any(p.device.type != "cpu" or not torch.is_floating_point(p) for p in group["params"]):
            return "parameters that are not floating-point CPU tensors"
    return None


def fused_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` through the fused implementation, the param groups' ``fused`` put back afterwards.

    Only for an optimizer that :func:`fused_blocker` accepts.
    """
    groups = optimizer.param_groups
    before = [group["fused"] for group in groups]
    for group in groups:
        group["fused"] = True
    try:
        optimizer.step()
    finally:
        for group, value in zip(groups, before):
            group["fused"] = value
