"""Smoke test of ``hotloop.bench.compare``: a quick run produces every scenario × provider, the JSON and the chart.

No timing ratio is asserted here; speed is the benchmark's business.
"""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest

_STATS = ("median", "q1", "q3", "min", "max")


@pytest.fixture(scope="module")
def compare():
    return importlib.import_module("hotloop.bench.compare")


@pytest.fixture(scope="module")
def quick_run(compare, tmp_path_factory):
    output = tmp_path_factory.mktemp("results")
    code = compare.main(["--quick", "--output", str(output)])
    return code, output, json.loads((output / "results.json").read_text(encoding="utf-8"))


def test_quick_run_exits_zero_and_draws_the_charts(quick_run):
    code, output, _ = quick_run
    assert code == 0
    for name in ("us_per_iter.png", "ratios.png"):
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_run_reports_every_scenario_and_provider(compare, quick_run):
    _, _, report = quick_run
    expected = {
        (case, scenario.name): set(scenario.providers)
        for case, scenarios in compare.load_cases().items()
        for scenario in scenarios
    }
    assert {("engine_overhead", "no_handlers"), ("engine_overhead", "handlers")} <= set(expected)
    got = {(entry["case"], entry["scenario"]): set(entry["providers"]) for entry in report["scenarios"]}
    assert got == expected
    for entry in report["scenarios"]:
        roles = {entry[role] for role in ("reference", "original", "candidate") if role in entry}
        assert len(roles) == 3 and roles <= set(entry["providers"])


def test_quick_run_numbers_are_positive_and_complete(quick_run):
    _, _, report = quick_run
    assert report["mode"] == "quick"
    assert {"python", "torch", "ignite", "hotloop"} <= set(report["versions"])
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["platform"]
    for entry in report["scenarios"]:
        for provider in entry["providers"].values():
            assert len(provider["samples_us_per_iter"]) == report["rounds"]
            assert all(sample > 0 for sample in provider["samples_us_per_iter"])
            assert all(provider["us_per_iter"][key] > 0 for key in _STATS)
        reference = entry["providers"][entry["reference"]]
        assert reference["overhead_vs_reference_us"]["median"] == 0.0
        if entry["target_ratio"] is None:
            assert entry["result"] is None
        else:
            assert entry["result"] in ("PASS", "FAIL")


def test_only_runs_the_named_scenario(compare, tmp_path, capsys):
    code = compare.main(
        ["--quick", "--rounds", "1", "--warmup", "0", "--only", "no_handlers", "--output", str(tmp_path)]
    )
    report = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert code == 0
    assert [entry["scenario"] for entry in report["scenarios"]] == ["no_handlers"]
    assert "| no_handlers | hotloop" in capsys.readouterr().out


def test_json_path_overrides_the_default(compare, tmp_path):
    target = tmp_path / "elsewhere" / "run.json"
    compare.main(
        [
            "--quick",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--only",
            "no_handlers",
            "--output",
            str(tmp_path),
            "--json",
            str(target),
        ]
    )
    assert json.loads(target.read_text(encoding="utf-8"))["scenarios"][0]["scenario"] == "no_handlers"
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--warmup", "-1"], ["--quick", "--bogus"], ["--rounds", "x"]])
def test_bad_options_fail_with_usage_error(compare, argv, capsys):
    with pytest.raises(SystemExit) as raised:
        compare.main(argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_unknown_only_name_fails_naming_the_choices(compare, capsys):
    assert compare.main(["--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "engine_overhead/no_handlers" in err


@pytest.mark.parametrize(("check", "expected_code"), [(False, 0), (True, 1)])
def test_missed_target_fails_only_with_check(compare, monkeypatch, tmp_path, check, expected_code):
    scenario = compare.load_cases()["engine_overhead"][0]
    unreachable = dataclasses.replace(scenario, quick_iterations=100, target=1e12)
    monkeypatch.setattr(compare, "load_cases", lambda: {"engine_overhead": [unreachable]})
    argv = ["--quick", "--rounds", "1", "--warmup", "0", "--output", str(tmp_path)] + (["--check"] if check else [])
    assert compare.main(argv) == expected_code
    report = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert report["scenarios"][0]["result"] == "FAIL"
