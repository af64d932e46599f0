"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hotloop._optional import Requirement


@pytest.fixture
def hide_packages(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``hide_packages("PIL", "sklearn")``: hotloop's optional-package probes report those modules as not installed.

    Every check of an optional package goes through :class:`hotloop._optional.Requirement`, so this is what a
    machine without them looks like to hotloop (the modules themselves stay importable for the test's own use).
    """
    real = Requirement.installed

    def hide(*modules: str) -> None:
        monkeypatch.setattr(Requirement, "installed", lambda need: need.module not in modules and real(need))

    return hide


class StepClock:
    """A fake clock for ``compile="auto"`` (``hotloop.step.auto._clock``): an iteration that candidate ``v`` runs
    costs ``costs[v]`` ms, whatever the machine does. Set ``step`` to the measuring ``TrainStep``/``EvalStep``."""

    def __init__(self, costs: dict[str, float]) -> None:
        self.costs = costs
        self.step: Any = None
        self.now = 0.0
        self.ticks = 0

    def __call__(self) -> float:
        self.ticks += 1
        if self.ticks % 2 == 0:  # the end of a timed call: the step still runs the candidate it timed
            self.now += self.costs[self.step.variant] / 1e3
        return self.now


@pytest.fixture
def step_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[..., StepClock]:
    """``step_clock(eager=2, fused=1)``: installs a :class:`StepClock` with those costs (ms) and returns it."""
    from hotloop.step import auto

    def install(**costs: float) -> StepClock:
        clock = StepClock(costs)
        monkeypatch.setattr(auto, "_clock", clock)
        return clock

    return install
