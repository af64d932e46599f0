"""``scripts/ignite_suite.py``: Ignite 0.5.5's own tests with hotloop bound in, compared with stock Ignite (issue 15).

The slow test runs the whole check (about 3 minutes on 2 cores); the others test its parts without the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ignite_suite.py"
PLUGIN = ROOT / "scripts" / "ignite-suite" / "ignite_suite_plugin.py"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_hl_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    return _load(SCRIPT)


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    return _load(PLUGIN)


def test_compare_counts_only_tests_good_on_stock_ignite(suite: ModuleType) -> None:
    stock = {"a": "passed", "b": "failed", "c": "xfailed", "d": "skipped", "e": "passed", "g": "passed", "h": "flaky"}
    hot = {"a": "failed", "b": "failed", "c": "xfailed", "d": "failed", "f": "passed", "h": "failed"}
    regressions, unrecorded = suite.compare(stock, hot, excluded={"e"})
    assert regressions == ["a", "g"]  # g: not run on hotloop at all
    assert unrecorded == ["f"]


def test_a_cached_sdist_with_another_hash_is_refused(suite: ModuleType, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(suite, "CACHE", tmp_path)
    (tmp_path / suite.SDIST_NAME).write_bytes(b"not ignite")
    with pytest.raises(SystemExit) as info:
        suite.fetch_sdist()
    message = str(info.value)
    assert suite.SDIST_SHA256 in message
    assert hashlib.sha256(b"not ignite").hexdigest() in message
    assert "delete the file to download it again" in message


def test_the_pinned_hash_is_checked(suite: ModuleType, tmp_path: Path) -> None:
    good = tmp_path / "x.tar.gz"
    good.write_bytes(b"")
    empty_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    with pytest.raises(SystemExit, match=f"has sha256 {empty_sha256}, expected {suite.SDIST_SHA256}"):
        suite._verify(good)


def test_exclusions_match_a_test_its_parameters_and_a_marker(plugin: ModuleType) -> None:
    by_test = {"t.py::test_a": "no GPU", "t.py::TestB": "no pandas"}
    by_marker = {"distributed": "no process group"}
    assert plugin._excluded_by("t.py::test_a", set(), by_test, by_marker) == "no GPU"
    assert plugin._excluded_by("t.py::test_a[cuda]", set(), by_test, by_marker) == "no GPU"
    assert plugin._excluded_by("t.py::TestB::test_c", set(), by_test, by_marker) == "no pandas"
    assert plugin._excluded_by("t.py::test_ab", set(), by_test, by_marker) is None
    assert plugin._excluded_by("t.py::test_d", {"distributed"}, by_test, by_marker) == "no process group"


def test_every_exclusion_has_a_reason(suite: ModuleType) -> None:
    exclusions = json.loads(suite.EXCLUSIONS.read_text())
    assert set(exclusions) == {"markers", "tests"}
    for entries in exclusions.values():
        assert all(isinstance(reason, str) and len(reason) > 20 for reason in entries.values())


def test_binding_puts_hotloop_in_place_of_ignite_and_patches_reach_hotloop() -> None:
    # In a subprocess: the rebinding is for the whole interpreter.
    code = textwrap.dedent(
        """
        import os, sys
        from unittest import mock
        os.environ["HOTLOOP_IGNITE_SUITE_BIND"] = "1"
        sys.path.insert(0, sys.argv[1])
        import ignite_suite_plugin  # binds on import, as with pytest -p
        import ignite.engine, ignite.engine.engine, ignite.engine.deterministic
        import hotloop, hotloop.supervised
        from hotloop.engine import engine as hl_engine

        assert ignite.engine.Engine is ignite.engine.engine.Engine is hotloop.Engine
        assert ignite.engine.deterministic.DeterministicEngine is hotloop.DeterministicEngine
        assert ignite.engine.create_supervised_trainer is hotloop.create_supervised_trainer
        # hotloop's classes still derive from Ignite's originals, which it keeps reaching
        assert hl_engine._IgniteEngine is not hotloop.Engine and issubclass(hotloop.Engine, hl_engine._IgniteEngine)
        original = hotloop.supervised.supervised_training_step
        with mock.patch("ignite.engine.supervised_training_step") as patched:
            assert hotloop.supervised.supervised_training_step is patched
        assert hotloop.supervised.supervised_training_step is original
        assert ignite.engine.supervised_training_step is original
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code, str(PLUGIN.parent)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ignites_own_tests_pass_with_hotloop_bound_in() -> None:
    # Fetches Ignite's sdist once (cached in .cache/, which git ignores), then runs its engine-driving tests with
    # hotloop bound in and fails on any test that passes on stock Ignite (scripts/ignite-suite/stock-outcomes.json).
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=ROOT)
    print(result.stdout[-20000:], result.stderr[-5000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "OK, every test that passes on stock Ignite passes with hotloop bound in" in result.stdout
