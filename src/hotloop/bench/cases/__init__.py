"""The registry of benchmark cases run side by side by :mod:`hotloop.bench.compare` (``hotloop bench``).

A case is a module of this package that exposes ``SCENARIOS: list[Scenario]``. Each scenario names its providers —
``raw`` (a bare loop), the original (``ignite``, ``monai``…) and ``hotloop`` — as builders that take the number of
iterations and return a zero-argument callable running one timed round. A round may return a :class:`Round`: the
time the provider measured around its own loop (Lightning's ``Trainer.fit`` pays a set-up per call that is not a
per-iteration cost) and the loss of its last step (for the equal-losses check of training scenarios). A case that
cannot run on this machine (an optional package is missing) has no scenario and says why in
``UNAVAILABLE: str | None`` (checked when the module is imported, before anything is measured:
:func:`skipped_cases`).

Adding a case is adding its module here and one line to :data:`CASES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch

__all__ = ["CASES", "METRICS", "Round", "Scenario", "device_sync", "load_cases", "skipped_cases"]

CASES: tuple[str, ...] = (
    "engine_overhead",
    "trainer_digits",
    "training",
    "decollate",
    "fused_dice",
    "dali_loader",
    "evaluator_monai",
)

#: A provider: ``build(iterations) -> run``, where ``run()`` performs one round of ``iterations`` iterations.
Provider = Callable[[int], Callable[[], object]]

#: How a scenario's providers are compared: ``"overhead"``, their cost per iteration over the baseline (a loop's own
#: cost, where the work per iteration is nil); ``"throughput"``, their whole time per iteration (a training step,
#: where the work dominates and an overhead over the bare loop is lost in its noise).
METRICS: tuple[str, ...] = ("overhead", "throughput")


@dataclass(frozen=True)
class Round:
    """What a provider's round may return (anything else counts as nothing).

    Args:
        seconds: The round's time as the provider measured it around its loop alone, device synced; ``None`` to be
            timed from outside, as every other round is. Lightning's ``Trainer.fit`` times its epoch from a callback:
            the trainer's set-up in each ``fit`` is not a per-iteration cost.
        iterations: The iterations ``seconds`` covers, when the provider ran another number than the scenario's.
        loss: The loss of the round's last step, as a float: the scenario checks that providers running the same
            steps on the same data end on the same loss.
        choice: What the provider's step chose to run, where it chooses (``compile="auto"``: ``"fused"`` …; ``None``
            while it measures), shown beside its name.
    """

    seconds: float | None = None
    iterations: int | None = None
    loss: float | None = None
    choice: str | None = None


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
        target: The least ratio that passes (see ``metric``); ``None`` for no target.
        metric: ``"overhead"``: the ratio is ``(original − baseline) / (candidate − baseline)``, of costs per
            iteration; ``"throughput"``: ``original / candidate``, of whole times per iteration (the median of the
            per-round ratios), i.e. the candidate's speed-up.
        also: Further providers the candidate is compared with as with ``original`` (another library: Lightning).
        batch_size: Samples per iteration: times are also shown as samples/s. ``None`` where an iteration has none.
        same_steps: Providers that run the same computation on the same data from the same initial weights: their
            final losses (:attr:`Round.loss`) must agree within ``loss_rtol``, or the scenario fails.
        loss_rtol: The relative tolerance of that check.
        full_only: Providers left out of a ``--quick`` run (and out of ``also`` and ``same_steps`` there): those whose
            first round compiles for seconds, measured in the full run only.
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
    metric: str = "overhead"
    also: tuple[str, ...] = ()
    batch_size: int | None = None
    same_steps: tuple[str, ...] = ()
    loss_rtol: float = 1e-5
    full_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        roles = [(role, getattr(self, role)) for role in ("reference", "baseline", "original", "candidate")]
        roles += [("also", name) for name in self.also] + [("same_steps", name) for name in self.same_steps]
        for role, provider in roles:
            if provider not in self.providers:
                raise ValueError(
                    f"Scenario {self.name!r}: {role}={provider!r} is not one of its providers {list(self.providers)}"
                )
        for provider in self.full_only:
            if provider not in self.providers:
                raise ValueError(
                    f"Scenario {self.name!r}: full_only={provider!r} is not one of its providers {list(self.providers)}"
                )
            if provider in (self.reference, self.baseline, self.original, self.candidate):
                raise ValueError(f"Scenario {self.name!r}: {provider!r} has a role every run needs; not full_only")
        if self.metric not in METRICS:
            raise ValueError(f"Scenario {self.name!r}: metric should be one of {METRICS}, got {self.metric!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"Scenario {self.name!r}: batch_size should be positive or None, got {self.batch_size}")
        if self.iterations < 1 or self.quick_iterations < 1:
            raise ValueError(
                f"Scenario {self.name!r}: iterations must be positive, got iterations={self.iterations}, "
                f"quick_iterations={self.quick_iterations}"
            )

    def for_mode(self, quick: bool) -> Scenario:
        """The scenario as a run of that mode measures it: without the :attr:`full_only` providers when ``quick``."""
        if not quick or not self.full_only:
            return self
        dropped = set(self.full_only)
        return replace(
            self,
            providers={name: build for name, build in self.providers.items() if name not in dropped},
            also=tuple(name for name in self.also if name not in dropped),
            same_steps=tuple(name for name in self.same_steps if name not in dropped),
            full_only=(),
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
