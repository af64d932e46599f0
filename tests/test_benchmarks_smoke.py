"""Smoke test of ``hotloop.bench.compare``: a quick run produces every scenario × provider, the JSON and the chart.

No timing ratio is asserted here; speed is the benchmark's business.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from typing import Any

import pytest

from hotloop.bench.cases import Scenario

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
        (case, scenario.name): set(scenario.for_mode(quick=True).providers)
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
    assert "| engine_overhead/no_handlers | ignite " in capsys.readouterr().out


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


def test_summary_comes_first_and_every_provider_is_in_the_markdown_file(quick_run):
    _, output, report = quick_run
    details = (output / "results.md").read_text(encoding="utf-8")
    assert details.index("## Summary") < details.index("## Every provider")
    for entry in report["scenarios"]:
        for provider in entry["providers"]:
            name = re.escape(f"{entry['case']}/{entry['scenario']}")
            assert re.search(rf"^\| {name} +\| {re.escape(provider)} ", details, re.MULTILINE), (name, provider)


def test_no_negative_or_infinite_figure_is_shown(quick_run):
    _, output, report = quick_run
    shown = (output / "results.md").read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w/])[-−]\s?\d", shown), "a negative figure is shown"
    assert "∞" not in shown and "inf" not in shown.lower().replace("information", "")
    for entry in report["scenarios"]:
        assert entry["ratio_shown"] and not entry["ratio_shown"].startswith("-")


def _synthetic(compare, original: list[float], candidate: list[float], target: float | None) -> dict:
    providers = {name: (lambda iterations: lambda: None) for name in ("raw", "ignite", "hotloop")}
    scenario = Scenario(name="s", description="d", iterations=1, quick_iterations=1, providers=providers, target=target)
    samples = {"raw": [1.0] * len(original), "ignite": original, "hotloop": candidate}
    return compare._summarize("case", scenario, 1, samples)


@pytest.mark.parametrize(
    ("original", "candidate", "target", "shown", "result"),
    [
        ([4.0, 4.0, 4.0], [2.001, 2.001, 2.001], 3.0, "3.00×", "PASS"),  # 2.996 shows as 3.00: it meets "≥ 3×"
        ([4.0, 4.0, 4.0], [2.005, 2.005, 2.005], 3.0, "2.99×", "FAIL"),  # 2.985 shows as 2.99: it does not
        ([19.0, 19.0, 19.0], [2.0, 2.0, 2.0], None, "18.0×", None),
    ],
)
def test_verdict_is_taken_from_the_figure_shown(compare, original, candidate, target, shown, result):
    summary = _synthetic(compare, original, candidate, target)
    assert (summary["ratio_shown"], summary["result"]) == (shown, result)
    row = compare._summary_table([summary]).splitlines()[2]
    assert f"| {shown} " in row and (result or "no target") in row


def test_overheads_within_noise_or_below_the_timer_resolution_are_said_so(compare):
    resolution = compare._resolution_us(1)
    noise = _synthetic(compare, [5.0, 5.0, 5.0], [0.9, 0.8, 0.95], 15.0)  # hotloop's median round beat the bare loop
    assert (noise["ratio_shown"], noise["result"]) == ("unbounded (hotloop ≈ 0, within noise)", "PASS")
    assert "| hotloop ≈ 0, within noise |" in compare._summary_table([noise])
    tiny = _synthetic(compare, [5.0] * 3, [1.0 + resolution / 2] * 3, 15.0)  # a real overhead the clock cannot see
    assert tiny["ratio_shown"].startswith("> ") and tiny["ratio_shown"].endswith("× (hotloop < timer resolution)")
    assert tiny["result"] == "PASS"
    nothing = _synthetic(compare, [0.9, 0.9, 0.9], [2.0, 2.0, 2.0], 1.0)  # the original no slower than the loop
    assert (nothing["ratio_shown"], nothing["result"]) == ("n/a (original ≈ 0, within noise)", "FAIL")
    for table in (compare._summary_table([noise, tiny, nothing]), compare._details_table([noise, tiny, nothing])):
        assert not re.search(r"[-−]\d", table) and "∞" not in table and "inf" not in table


def test_every_provider_gets_its_own_colour(compare):
    providers = sorted({name for scenarios in compare.load_cases().values() for s in scenarios for name in s.providers})
    for names in (providers, [f"p{i}" for i in range(30)]):
        colors = compare.provider_colors(names)
        assert len({str(color) for color in colors.values()}) == len(names)


def test_skipped_cases_are_listed_in_the_output_and_the_json(compare, monkeypatch, tmp_path, capsys):
    only_engine = {"engine_overhead": compare.load_cases()["engine_overhead"][:1]}
    monkeypatch.setattr(compare, "load_cases", lambda: {**only_engine, "decollate": []})
    monkeypatch.setattr(compare, "skipped_cases", lambda: {"decollate": "it needs monai: pip install 'hotloop[monai]'"})
    assert compare.main(["--quick", "--rounds", "1", "--warmup", "0", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped decollate: it needs monai") and out.count("skipped decollate") == 2
    report = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert report["skipped"] == [{"case": "decollate", "reason": "it needs monai: pip install 'hotloop[monai]'"}]
    assert "## Skipped" in (tmp_path / "results.md").read_text(encoding="utf-8")
    assert compare.main(["--only", "decollate", "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "hotloop bench: error: --only decollate: it needs monai: pip install 'hotloop[monai]'\n"
    )


def test_cases_without_their_packages_have_no_scenario_and_say_why(compare):
    from hotloop.bench import cases

    for name in cases.CASES:
        module = importlib.import_module(f"hotloop.bench.cases.{name}")
        reason = getattr(module, "UNAVAILABLE", None)
        assert bool(reason) == (not module.SCENARIOS), name
        assert reason is None or "pip install 'hotloop[" in reason or "C++" in reason
    assert set(cases.skipped_cases()) == {name for name, scenarios in compare.load_cases().items() if not scenarios}


def test_missing_matplotlib_fails_before_anything_is_measured(compare, hide_packages, monkeypatch, tmp_path, capsys):
    hide_packages("matplotlib")
    monkeypatch.setattr(compare, "_run", lambda *args, **kwargs: pytest.fail("measured before checking matplotlib"))
    assert compare.main(["--quick", "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "hotloop bench: error: hotloop bench (its charts) needs matplotlib, which is not installed: "
        "pip install 'hotloop[bench]'\n"
    )
    assert not any(tmp_path.iterdir())


def _scenario(providers: dict, iterations: int = 1, **options: Any) -> Scenario:
    return Scenario(
        name="s", description="d", iterations=iterations, quick_iterations=iterations, providers=providers, **options
    )


def _throughput(compare, samples: dict[str, list[float]], losses: dict | None = None, **options: Any) -> dict:
    providers = {name: (lambda iterations: lambda: None) for name in samples}
    scenario = _scenario(providers, metric="throughput", batch_size=64, **options)
    return compare._summarize("case", scenario, 1, samples, losses)


def test_throughput_scenarios_show_time_per_step_and_the_speedup(compare):
    samples = {"raw": [3.0, 3.0, 3.0], "ignite": [4.0, 4.0, 8.0], "hotloop": [2.0, 2.0, 2.0], "lightning": [8.0] * 3}
    summary = _throughput(compare, samples, also=("lightning",), target=2.0)
    assert (summary["ratio_shown"], summary["result"]) == ("2.00×", "PASS")  # the median of per-round ratios 2, 2, 4
    assert summary["comparisons"]["ignite"]["per_round"]["max"] == 4.0
    assert summary["providers"]["hotloop"]["samples_per_s"]["median"] == pytest.approx(32e6)
    row = compare._summary_table([summary]).splitlines()[2]
    assert "| ignite 4.00 µs (16.0M samples/s) " in row and "| hotloop 2.00 µs (32.0M samples/s) " in row
    assert "| lightning ÷ hotloop 4.00× |" in row
    # the raw loop is faster than hotloop here: an overhead figure would say "within noise", the speed-up does not
    assert "within noise" not in row


def test_losses_that_differ_fail_the_scenario(compare):
    samples = {"raw": [1.0], "ignite": [2.0], "hotloop": [1.0]}
    steps = ("raw", "ignite", "hotloop")
    equal = _throughput(compare, samples, {"raw": 0.5, "ignite": 0.5, "hotloop": 0.5}, same_steps=steps)
    assert (equal["losses"]["equal"], equal["result"]) == (True, None)
    assert "| equal (3 providers) |" in compare._summary_table([equal])
    differ = _throughput(compare, samples, {"raw": 0.5, "ignite": 0.5, "hotloop": 0.6}, same_steps=steps)
    assert (differ["losses"]["differ"], differ["result"]) == (["hotloop"], "FAIL")
    assert "| DIFFER: hotloop |" in compare._summary_table([differ])
    unknown = _throughput(compare, samples, {"raw": 0.5}, same_steps=steps)  # one loss: nothing to compare
    assert (unknown["losses"], unknown["result"]) == (None, None)


@pytest.fixture
def no_gc(compare, monkeypatch):
    """Rounds without the full collection before each (0.1-0.3 s with torch and Lightning loaded): nothing to time."""
    monkeypatch.setattr(compare.gc, "collect", lambda: 0)


def test_a_round_that_times_itself_is_taken_at_its_word(compare, no_gc):
    from hotloop.bench.cases import Round

    providers = {
        "raw": lambda iterations: lambda: None,
        "ignite": lambda iterations: lambda: Round(seconds=0.5, loss=1.5),
        "hotloop": lambda iterations: lambda: Round(seconds=0.5, iterations=1000, choice="fused"),
    }
    samples, losses, choices = compare._measure(_scenario(providers, 10), 10, 0, 2, lambda: None)
    assert samples["ignite"] == [50_000.0, 50_000.0] and samples["hotloop"] == [500.0, 500.0]
    assert losses == {"raw": None, "ignite": 1.5, "hotloop": None}
    result = compare._summarize("case", _scenario(providers, 10), 10, samples, losses, choices)
    assert result["providers"]["hotloop"]["choice"] == "fused" and result["providers"]["raw"]["choice"] is None
    assert "| case/s   | hotloop [fused] | candidate " in compare._details_table([result])


def _recording(order: list[str], name: str):
    return lambda iterations: lambda: order.append(name)


def test_rounds_run_the_providers_in_varying_orders(compare, no_gc):
    order: list[str] = []
    providers = {name: _recording(order, name) for name in "abcd"}
    roles = {"reference": "a", "baseline": "a", "original": "b", "candidate": "c"}
    compare._measure(_scenario(providers, **roles), 1, 1, 8, lambda: None)
    rounds = ["".join(order[i : i + 4]) for i in range(0, len(order), 4)]
    assert rounds[0] == "abcd" and all(sorted(r) == list("abcd") for r in rounds)  # warm-up in order, then each once
    followers = {r[r.index("a") + 1] for r in rounds[1:] if not r.endswith("a")}
    assert len(followers) >= 2  # "a" is not always followed by the same provider
    again: list[str] = []
    compare._measure(_scenario({name: _recording(again, name) for name in "abcd"}, **roles), 1, 1, 8, lambda: None)
    assert again == order  # the orders are the same every run


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"also": ("nope",)}, "also='nope'"),
        ({"same_steps": ("raw", "nope")}, "same_steps='nope'"),
        ({"metric": "speed"}, "metric should be one of"),
        ({"batch_size": 0}, "batch_size should be positive"),
    ],
)
def test_scenario_rejects_unknown_providers_and_metrics(options, message):
    providers = {name: (lambda iterations: lambda: None) for name in ("raw", "ignite", "hotloop")}
    with pytest.raises(ValueError, match=message):
        _scenario(providers, **options)


def test_a_full_only_provider_needs_a_provider_and_no_role(compare):
    providers = {name: (lambda iterations: lambda: None) for name in ("raw", "ignite", "hotloop", "slow")}
    scenario = _scenario(providers, 10)
    with pytest.raises(ValueError, match="full_only='nope' is not one of its providers"):
        dataclasses.replace(scenario, full_only=("nope",))
    with pytest.raises(ValueError, match="'ignite' has a role every run needs"):
        dataclasses.replace(scenario, full_only=("ignite",))
    quick = dataclasses.replace(scenario, full_only=("slow",), also=("slow",)).for_mode(quick=True)
    assert list(quick.providers) == ["raw", "ignite", "hotloop"] and quick.also == ()
