"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable

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
