"""pytest plugin for ``scripts/ignite_suite.py``: runs Ignite's own tests, optionally with hotloop bound in.

Loaded with ``-p ignite_suite_plugin`` (its folder on ``PYTHONPATH``). Environment:

- ``HOTLOOP_IGNITE_SUITE_BIND=1``: when pytest loads this plugin, before any conftest or test module, put hotloop's
  ``Engine``, ``DeterministicEngine``, ``ReproducibleBatchSampler``, factories and ``supervised_*_step*`` in place of
  Ignite's, in the modules Ignite's tests import them from. hotloop is imported first, so its classes subclass
  Ignite's originals.
- ``HOTLOOP_IGNITE_SUITE_CONFIG``: a JSON file, ``{"tests": {nodeid: reason}, "markers": {marker: reason},
  "integration_only": [file, ...]}``: matching tests are deselected and reported as excluded; in the files named in
  ``integration_only`` only the tests named ``test_integration*`` (those that run an Engine) are kept.
- ``HOTLOOP_IGNITE_SUITE_OUT``: a file to which the outcome of every test is appended as it ends (JSON lines), and
  at the end of the session a line with what was bound, excluded and failed to collect.
"""

from __future__ import annotations

import json
import os
import time
import types
from typing import Any

import pytest

_OUT = os.environ.get("HOTLOOP_IGNITE_SUITE_OUT")
_CONFIG = os.environ.get("HOTLOOP_IGNITE_SUITE_CONFIG")

# A test's outcome is the worst of its phases (setup, call, teardown).
_RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "xpassed": 3, "failed": 4, "error": 5}


class _MirroredModule(types.ModuleType):
    """``ignite.engine`` with some names mirrored into ``hotloop.supervised``.

    Ignite's tests patch ``ignite.engine.supervised_training_step`` (and the other step factories) and check that
    ``create_supervised_trainer`` called the patch. With hotloop bound in, the factory is hotloop's, which looks its
    steps up in ``hotloop.supervised`` at call time: a patch of the bound name is the patch a user of hotloop writes
    (``mock.patch("hotloop.supervised.supervised_training_step")``), so setting the name here sets it there too.
    """

    _hl_mirrors: dict[str, types.ModuleType] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        target = type(self)._hl_mirrors.get(name)
        if target is not None:
            setattr(target, name, value)


def _bind_hotloop() -> dict[str, str]:
    import ignite.engine
    import ignite.engine.deterministic
    import ignite.engine.engine

    import hotloop
    import hotloop.distributed  # noqa: F401  (imported before the rebinding: its Engine stays Ignite's)
    import hotloop.metrics  # noqa: F401
    import hotloop.supervised

    steps = [
        "supervised_training_step",
        "supervised_training_step_amp",
        "supervised_evaluation_step",
        "supervised_evaluation_step_amp",
    ]
    bindings: list[tuple[types.ModuleType, str, Any]] = [
        (ignite.engine, "Engine", hotloop.Engine),
        (ignite.engine.engine, "Engine", hotloop.Engine),
        (ignite.engine, "DeterministicEngine", hotloop.DeterministicEngine),
        (ignite.engine.deterministic, "DeterministicEngine", hotloop.DeterministicEngine),
        (ignite.engine.deterministic, "ReproducibleBatchSampler", hotloop.ReproducibleBatchSampler),
        (ignite.engine, "create_supervised_trainer", hotloop.create_supervised_trainer),
        (ignite.engine, "create_supervised_evaluator", hotloop.create_supervised_evaluator),
    ] + [(ignite.engine, name, getattr(hotloop.supervised, name)) for name in steps]
    bound = {}
    for module, name, value in bindings:
        setattr(module, name, value)
        bound[f"{module.__name__}.{name}"] = f"{value.__module__}.{value.__qualname__}"
    _MirroredModule._hl_mirrors = {name: hotloop.supervised for name in steps}
    ignite.engine.__class__ = _MirroredModule
    return bound


def _load_config() -> dict[str, Any]:
    if not _CONFIG:
        return {}
    with open(_CONFIG) as f:
        return json.load(f)


def matches(nodeid: str, key: str) -> bool:
    """Whether an exclusion ``key`` (a test id, without parameters or a class) names the test ``nodeid``."""
    return nodeid == key or nodeid.startswith((key + "[", key + "::"))


def _excluded_by(nodeid: str, markers: set[str], by_test: dict[str, str], by_marker: dict[str, str]) -> str | None:
    for key, reason in by_test.items():
        if matches(nodeid, key):
            return reason
    for marker in sorted(markers & by_marker.keys()):
        return by_marker[marker]
    return None


class _Recorder:
    def __init__(self, bound: dict[str, str]) -> None:
        self.bound = bound
        self.outcomes: dict[str, str] = {}
        self.durations: dict[str, float] = {}  # setup + call + teardown
        self.excluded: dict[str, str] = {}
        self.collect_errors: dict[str, str] = {}
        self.start = time.monotonic()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        settings = _load_config()
        by_test, by_marker = settings.get("tests", {}), settings.get("markers", {})
        integration_only = set(settings.get("integration_only", []))
        kept, dropped = [], []
        for item in items:
            if item.nodeid.split("::")[0] in integration_only and not item.name.startswith("test_integration"):
                dropped.append(item)  # not part of the suite, as a file left out is not
                continue
            reason = _excluded_by(item.nodeid, {m.name for m in item.iter_markers()}, by_test, by_marker)
            if reason is None:
                kept.append(item)
            else:
                self.excluded[item.nodeid] = reason
                dropped.append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors[report.nodeid] = str(report.longrepr)[-2000:]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.failed or report.skipped:
            outcome = self._outcome(report)
            previous = self.outcomes.get(report.nodeid, "passed")
            self.outcomes[report.nodeid] = max(previous, outcome, key=_RANK.__getitem__)
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        if report.when == "teardown":  # one line per test as it ends: a crashed run still says how far it got
            line = {"test": report.nodeid, "outcome": self.outcomes[report.nodeid]}
            self._write(dict(line, seconds=round(self.durations[report.nodeid], 3)))

    @staticmethod
    def _outcome(report: pytest.TestReport) -> str:
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        if report.failed:
            return "failed" if report.when == "call" else "error"
        return "skipped" if report.skipped else "passed"

    @staticmethod
    def _write(line: dict[str, Any]) -> None:
        if _OUT:
            with open(_OUT, "a") as f:
                f.write(json.dumps(line) + "\n")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._write(
            {
                "bound": self.bound,
                "excluded": dict(sorted(self.excluded.items())),
                "collect_errors": self.collect_errors,
                "seconds": round(time.monotonic() - self.start, 1),
            }
        )


# Bound when pytest imports this plugin (``-p``): before it loads Ignite's conftest files and test modules.
_BOUND = _bind_hotloop() if os.environ.get("HOTLOOP_IGNITE_SUITE_BIND") == "1" else {}


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Recorder(_BOUND), "hotloop_ignite_suite_recorder")
