"""The registry of benchmark cases run side by side by :mod:`hotloop.bench.compare` (``hotloop bench``).

A case is a module of this package that exposes ``SCENARIOS: list[Scenario]``. Each scenario names its providers —
``raw`` (a bare loop), the original (``ignite``, ``monai``…) and ``hotloop`` — as builders that take the number of
iterations and return a zero-argument callable running one timed round. A case that cannot run on this machine (an
optional package is missing) has no scenario and says why in ``UNAVAILABLE: str | None`` (checked when the module is
imported, before anything is measured: :func:`skipped_cases`).

Adding a case is adding its module here and one line to :data:`CASES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["CASES", "Scenario", "device_sync", "load_cases", "skipped_cases"]

CASES: tuple[str, ...] = (
    "engine_overhead",
    "trainer_digits",
    "decollate",
    "fused_dice",
    "dali_loader",
    "evaluator_monai",
)

#: A provider: ``build(iterations) -> run``, where ``run()`` performs one round of ``iterations`` iterations.
Provider = Callable[[int], Callable[[], object]]


@dataclass(frozen=True)
class Scenario:
    """One workload, run by every provider in the same process, interleaved round by round.

    Args:
        name: Short identifier, used by ``--only`` and as the JSON key.
        description: One line saying what is measured.
        iterations: Iterations per timed round in the full run.
        quick_iterations: Iterations per timed round with ``--quick``.
        providers: Provider name to builder, in the order they run within a round.
        reference: The provider every overhead is first taken against (the hand-written loop).
        baseline: The provider the target ratio's overheads are taken against; ``reference`` unless the issue's
            numbers are relative to another loop (e.g. the bare loop without handlers).
        original: The provider hotloop replaces.
        candidate: The provider under test.
        target: The least ``(original − baseline) / (candidate − baseline)`` that passes; ``None`` for no target.
    """

    name: str
    description: str
    iterations: int
    quick_iterations: int
    providers: Mapping[str, Provider] = field(repr=False)
    reference: str = "raw"
    baseline: str = "raw"
    original: str = "ignite"
    candidate: str = "hotloop"
    target: float | None = None

    def __post_init__(self) -> None:
        for role in ("reference", "baseline", "original", "candidate"):
            provider = getattr(self, role)
            if provider not in self.providers:
                raise ValueError(
                    f"Scenario {self.name!r}: {role}={provider!r} is not one of its providers {list(self.providers)}"
                )
        if self.iterations < 1 or self.quick_iterations < 1:
            raise ValueError(
                f"Scenario {self.name!r}: iterations must be positive, got iterations={self.iterations}, "
                f"quick_iterations={self.quick_iterations}"
            )


def load_cases() -> dict[str, list[Scenario]]:
    """Imports every registered case.

    Returns:
        Case name to its scenarios, in registry order.
    """
    return {name: list(importlib.import_module(f"{__name__}.{name}").SCENARIOS) for name in CASES}


def skipped_cases() -> dict[str, str]:
    """The registered cases that cannot run here, each with the reason (the package to install and its extra).

    Returns:
        Case name to reason, in registry order.
    """
    reasons = {name: getattr(importlib.import_module(f"{__name__}.{name}"), "UNAVAILABLE", None) for name in CASES}
    return {name: reason for name, reason in reasons.items() if reason}


def device_sync() -> None:
    """Waits for queued device work, so that a timed region ends when the work does (a no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
