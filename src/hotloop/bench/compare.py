"""Side-by-side comparison of hotloop against the bare loop and the original, in one process.

Every scenario of every registered case (:mod:`hotloop.bench.cases`) runs its providers — ``raw`` (a bare loop), the
original (``ignite``) and ``hotloop`` — interleaved round by round after warm-up rounds, so that the machine's drift
hits all of them alike, each timed round in its own order (a permutation seeded by the round's number) so that no
provider always follows the same one (what a round leaves behind, a loader prefetching its next epoch, slows the
next). Each timed round syncs the device before it stops the clock. The command prints a summary (one row per
scenario: the original's and hotloop's figures, their ratio, the candidate against further originals, the
equal-losses check, the target and the verdict), writes the detailed table (every provider) to
``results.md`` and the same numbers as JSON to ``results.json`` beside it, and draws two PNG charts:
``us_per_iter.png`` (one panel per case, µs per iteration of every provider) and ``ratios.png`` (each scenario's
overhead ratio against its target). A progress bar on stderr counts the rounds.

Before it measures anything it checks what it needs: matplotlib for the charts (a ``ModuleNotFoundError`` naming
``hotloop[bench]`` otherwise), and each case's own packages (a case whose packages are missing is skipped, and the
output says which and why; ``--only`` naming such a case is an error).

Usage::

    hotloop bench                  # full run (several minutes on 2 cores)
    hotloop bench --quick          # fewer iterations and rounds (about 2 minutes on 2 cores)
    hotloop bench --only handlers  # one case or scenario (``case``, ``scenario`` or ``case/scenario``)
    hotloop bench --output out/ --json out/run.json --check

``--check`` exits with 1 when a scenario fails (misses its target, or its equal-losses check); otherwise the exit code
is 0 whatever the result.

A scenario is measured in one of two ways (its ``metric``). **Overhead** (the engine loops, the ops): costs per
iteration over a baseline. They are per-round paired differences (``provider − reference`` within one round),
summarized by their median and quartiles; the overhead ratio is ``median(original − baseline) / median(candidate −
baseline)``. The ``baseline`` is the ``reference`` (``raw``) unless the scenario says otherwise (``handlers`` takes the
issue's bare loop without handlers, ``bare``). **Throughput** (training steps, where the step's own work dominates and
an overhead over the bare loop is lost in its noise): whole times per iteration, shown with samples/s, and the ratio is
the median of the per-round ratios ``original / candidate``, the candidate's speed-up. Either ratio is shown to three
significant digits and a scenario passes when that shown figure is at least its target; the candidate is also
compared, in the same way, with the scenario's further originals (``also``: Lightning). A provider that times its own
loop (Lightning's ``Trainer.fit``, whose set-up in each call is not a per-iteration cost) returns a
:class:`~hotloop.bench.cases.Round` with its seconds; the providers that run the same steps on the same data
(``same_steps``) must end on the same loss, or the scenario fails.

No negative or infinite figure is shown: a median overhead below zero is "≈ 0, within noise" (hotloop's
makes the ratio "unbounded", a pass), one below the clock's resolution over a round (``resolution_us``:
``perf_counter``'s resolution ÷ iterations) is "< timer resolution" (hotloop's makes the ratio a lower bound,
``> N×``), and an original's leaves the ratio "n/a" (a fail where there is a target).

JSON schema (``schema_version`` 3; 2 added ``metric``, ``batch_size``, ``also``, ``comparisons``, ``losses`` and the
providers' ``samples_per_s`` and ``final_loss``; 3 the providers' ``choice``)::

    {
      "schema_version": 3,
      "date": "2025-01-01T12:00:00+00:00",          # UTC, ISO 8601
      "mode": "full" | "quick",
      "warmup_rounds": int, "rounds": int,
      "versions": {"python": str, "torch": str, "ignite": str, "hotloop": str},
      "skipped": [{"case": str, "reason": str}, ...],  # cases that could not run here, and why
      "machine": {"platform": str, "machine": str, "processor": str, "cpu_count": int, "usable_cpus": int},
      "scenarios": [
        {
          "case": str, "scenario": str, "description": str,
          "metric": "overhead" | "throughput",
          "iterations": int,                         # iterations per timed round
          "batch_size": int | null,                  # samples per iteration
          "resolution_us": float,                    # the clock's resolution per iteration of one round
          "reference": str, "baseline": str, "original": str, "candidate": str,   # provider names
          "also": [str, ...],                        # further originals the candidate is compared with
          "providers": {
            "<provider>": {                          # in run order
              "us_per_iter": STATS,                  # µs per iteration over the rounds
              "samples_per_s": STATS | null,         # batch_size / µs per iteration, per round
              "overhead_vs_reference_us": STATS,     # per-round (provider − reference), µs per iteration
              "overhead_vs_baseline_us": STATS,      # per-round (provider − baseline), µs per iteration
              "final_loss": float | null,            # the loss of its last step, when its rounds report one
              "choice": str | null,                  # what its step ran (compile="auto": the build it chose)
              "samples_us_per_iter": [float, ...]    # one per timed round, in round order
            }
          },
          "overhead_ratio": {                        # median(original − x) / median(candidate − x)
            "vs_baseline": float | null,             # null when the candidate's overhead is ≤ 0 (within noise)
            "vs_reference": float | null
          },
          "comparisons": {                           # the original and each of "also", against the candidate
            "<provider>": {
              "ratio": float | null,                 # the metric's ratio (overhead: null when not a finite figure)
              "shown": str,                          # as printed ("18.3×", "> 5000×", "n/a (…)")
              "per_round": STATS | null              # throughput: the per-round ratios
            }
          },
          "ratio_shown": str,                        # comparisons[original].shown
          "target_ratio": float | null,              # least shown ratio that passes
          "losses": {"providers": [str, ...], "rtol": float, "equal": bool, "differ": [str, ...]} | null,
          "result": "PASS" | "FAIL" | null           # null when the scenario has no target and its losses agree
        }
      ]
    }

    STATS = {"median": float, "q1": float, "q3": float, "min": float, "max": float}
"""

from __future__ import annotations

import argparse
import colorsys
import datetime
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ignite
import torch

import hotloop
from hotloop._optional import MATPLOTLIB, require
from hotloop._third_party import quiet_third_party_logs
from hotloop.bench.cases import Round, Scenario, device_sync, load_cases, skipped_cases

__all__ = ["add_arguments", "main", "provider_colors", "run"]

_FULL = {"warmup_rounds": 2, "rounds": 10}
_QUICK = {"warmup_rounds": 1, "rounds": 3}
_CHART_NAME = "us_per_iter.png"
_RATIO_CHART_NAME = "ratios.png"
_WITHIN_NOISE = "≈ 0, within noise"
_BELOW_RESOLUTION = "< timer resolution"
# tab10, then eight more hues none of which is a shade of a tab10 colour: every provider of a run gets its own colour.
_PALETTE = (
    *(f"C{i}" for i in range(10)),
    "black",
    "gold",
    "darkturquoise",
    "darkred",
    "navy",
    "magenta",
    "darkolivegreen",
    "sienna",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the benchmark's options to ``parser`` (used by ``hotloop bench`` and by :func:`main`).

    Args:
        parser: The (sub)command's parser.
    """
    parser.add_argument("--quick", action="store_true", help="fewer iterations and rounds: about 2 minutes on 2 cores")
    parser.add_argument("--only", metavar="NAME", help="run one case or scenario: CASE, SCENARIO or CASE/SCENARIO")
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        default=Path("results"),
        help="folder for the charts and the default JSON (default: results)",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="JSON results file (default: DIR/results.json)")
    parser.add_argument(
        "--rounds", metavar="N", type=_int_at_least(1, "positive"), help="timed rounds (overrides the mode's)"
    )
    parser.add_argument(
        "--warmup", metavar="N", type=_int_at_least(0, "non-negative"), help="warm-up rounds (overrides the mode's)"
    )
    parser.add_argument("--check", action="store_true", help="exit with 1 if a scenario misses its target")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar (it is off when stderr is no tty)"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hotloop bench", description="Side-by-side benchmark of raw loop, original and hotloop providers."
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


def _select(cases: dict[str, list[Scenario]], only: str | None, skipped: dict[str, str]) -> list[tuple[str, Scenario]]:
    selected = [
        (case, scenario)
        for case, scenarios in cases.items()
        for scenario in scenarios
        if only is None or only in (case, scenario.name, f"{case}/{scenario.name}")
    ]
    if not selected and only is not None and only.split("/")[0] in skipped:
        raise ModuleNotFoundError(f"--only {only}: {skipped[only.split('/')[0]]}")
    if not selected:
        names = [f"{case}/{scenario.name}" for case, scenarios in cases.items() for scenario in scenarios]
        raise ValueError(f"--only {only!r} matches no case or scenario; expected one of {list(cases)} or {names}")
    return selected


def _timed(run: Callable[[], object]) -> tuple[float, Round]:
    """One call of ``run``: its seconds and what it returned (an empty :class:`Round` when not a ``Round``).

    The seconds are the provider's own measurement of its loop when the round returns one (``Round.seconds``),
    otherwise the call's, the device synced on both sides of the timed region.
    """
    gc.collect()
    device_sync()
    start = time.perf_counter()
    result = run()
    device_sync()
    elapsed = time.perf_counter() - start
    if not isinstance(result, Round):
        return elapsed, Round()
    return (elapsed if result.seconds is None else result.seconds), result


def _time_round(run: Callable[[], object]) -> float:
    """Seconds of one call of ``run`` (see :func:`_timed`)."""
    return _timed(run)[0]


def _measure(
    scenario: Scenario, iterations: int, warmup_rounds: int, rounds: int, tick: Callable[[], object]
) -> tuple[dict[str, list[float]], dict[str, float | None], dict[str, str | None]]:
    """Runs the providers interleaved, round after round.

    ``tick()`` is called after each round, outside the timed region (it advances the progress bar).

    Returns:
        µs per iteration of each timed round, per provider; each provider's loss after its last round (``None``
        when its rounds do not report one); and what its step ran in its last round (:attr:`Round.choice`).
    """
    runs = {name: build(iterations) for name, build in scenario.providers.items()}
    losses: dict[str, float | None] = dict.fromkeys(runs)
    choices: dict[str, str | None] = dict.fromkeys(runs)
    for _ in range(warmup_rounds):
        for name, run in runs.items():
            result = _timed(run)[1]
            losses[name], choices[name] = result.loss, result.choice
            tick()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(rounds):
        for name in _round_order(list(runs), index):
            seconds, result = _timed(runs[name])
            samples[name].append(seconds / (result.iterations or iterations) * 1e6)
            losses[name], choices[name] = result.loss, result.choice
            tick()
    return samples, losses, choices


def _round_order(names: list[str], index: int) -> list[str]:
    """Round ``index``'s order of the providers: a permutation drawn from a generator seeded with ``index`` (the same
    every run; the global random state is left alone).

    A round can leave work behind that slows the next one: a loader's threads prefetching its next epoch, or
    Lightning's ``fit``, whose teardown shuts a ``DataLoader``'s persistent workers down so that whoever reads it next
    spawns them again. In a fixed order, or a rotated one, the same provider always follows the same one and pays for
    it every round.
    """
    return random.Random(index).sample(names, len(names))


def _stats(values: Sequence[float]) -> dict[str, float]:
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def _paired_overhead(samples: dict[str, list[float]], name: str, against: str) -> dict[str, float]:
    return _stats([value - ref for value, ref in zip(samples[name], samples[against])])


def _ratio(original_overhead: float, candidate_overhead: float) -> float:
    """``original / candidate``; ``inf`` when the candidate's overhead is not above zero but the original's is."""
    if candidate_overhead > 0:
        return original_overhead / candidate_overhead
    return math.inf if original_overhead > 0 else math.nan


def _resolution_us(iterations: int) -> float:
    """The smallest cost per iteration one timed round can show: the clock's resolution spread over the round."""
    return time.get_clock_info("perf_counter").resolution * 1e6 / iterations


def _significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without an exponent: 18.27 → ``18.3``, 0.01234 → ``0.0123``."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _overhead(us: float, resolution: float) -> str:
    """A cost over the baseline as shown: a time, or what a median at or below zero or the resolution means."""
    if us < 0:  # the provider's median round was faster than the baseline's: its cost is lost in the noise
        return _WITHIN_NOISE
    return _BELOW_RESOLUTION if us < resolution else _duration(us)


def _shown_ratio(original: float, candidate: float, resolution: float) -> tuple[str, float | None]:
    """The vs-baseline ratio as printed, and the number the verdict is taken from (that printed figure, its lower
    bound, or ``inf``; ``None`` when nothing can be said).

    Overheads that are not figures are not divided: hotloop's within noise of zero makes the ratio unbounded, below
    the timer's resolution a lower bound (``original / resolution``); the original's leaves nothing to compare.
    """
    if original < resolution:
        return f"n/a (original {_overhead(original, resolution)})", None
    if candidate < 0:
        return f"unbounded (hotloop {_WITHIN_NOISE})", math.inf
    if candidate < resolution:
        bound = _significant(original / resolution)
        return f"> {bound}× (hotloop {_BELOW_RESOLUTION})", float(bound)
    shown = _significant(original / candidate)
    return f"{shown}×", float(shown)


def _verdict(shown: float | None, target: float | None) -> str | None:
    if target is None:
        return None
    return "PASS" if shown is not None and shown >= target else "FAIL"


def _rates(values: Sequence[float], batch_size: int | None) -> dict[str, float] | None:
    """samples/s of each round (batch size ÷ µs per iteration), summarized; ``None`` without a batch size."""
    if batch_size is None:
        return None
    return _stats([batch_size / value * 1e6 for value in values])


def _speedup(samples: dict[str, list[float]], other: str, candidate: str) -> dict[str, float]:
    """Per-round ``other ÷ candidate`` of times per iteration, summarized: the candidate's speed-up over ``other``."""
    return _stats([theirs / ours for theirs, ours in zip(samples[other], samples[candidate])])


def _comparison(
    scenario: Scenario, providers: dict[str, dict[str, Any]], samples: dict[str, list[float]], other: str, res: float
) -> tuple[dict[str, Any], float | None]:
    """``other`` against the candidate as the scenario's metric says: the ratio, the figure shown and its spread
    (throughput: the per-round ratios); and the number a verdict is taken from (see :func:`_shown_ratio`)."""
    if scenario.metric == "throughput":
        per_round = _speedup(samples, other, scenario.candidate)
        shown = _significant(per_round["median"])
        return {"ratio": per_round["median"], "shown": f"{shown}×", "per_round": per_round}, float(shown)
    original = providers[other]["overhead_vs_baseline_us"]["median"]
    candidate = providers[scenario.candidate]["overhead_vs_baseline_us"]["median"]
    ratio_shown, value = _shown_ratio(original, candidate, res)
    return {"ratio": _ratio(original, candidate), "shown": ratio_shown, "per_round": None}, value


def _loss_check(scenario: Scenario, losses: dict[str, float | None]) -> dict[str, Any] | None:
    """Whether the providers that run the same steps ended on the same loss (``None``: nothing to check)."""
    finals = {name: losses.get(name) for name in scenario.same_steps}
    known = {name: loss for name, loss in finals.items() if loss is not None}
    if len(known) < 2:
        return None
    first = next(iter(known.values()))
    scale = max(abs(first), 1e-12)
    differ = [name for name, loss in known.items() if not abs(loss - first) <= scenario.loss_rtol * scale]
    return {"providers": list(known), "rtol": scenario.loss_rtol, "equal": not differ, "differ": differ}


def _summarize(
    case: str,
    scenario: Scenario,
    iterations: int,
    samples: dict[str, list[float]],
    losses: dict[str, float | None] | None = None,
    choices: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    losses, choices = losses or {}, choices or {}
    providers: dict[str, dict[str, Any]] = {
        name: {
            "us_per_iter": _stats(values),
            "samples_per_s": _rates(values, scenario.batch_size),
            "overhead_vs_reference_us": _paired_overhead(samples, name, scenario.reference),
            "overhead_vs_baseline_us": _paired_overhead(samples, name, scenario.baseline),
            "final_loss": losses.get(name),
            "choice": choices.get(name),
            "samples_us_per_iter": values,
        }
        for name, values in samples.items()
    }
    ratios = {
        key: _ratio(
            providers[scenario.original][f"overhead_{key}_us"]["median"],
            providers[scenario.candidate][f"overhead_{key}_us"]["median"],
        )
        for key in ("vs_baseline", "vs_reference")
    }
    resolution = _resolution_us(iterations)
    compared = {
        other: _comparison(scenario, providers, samples, other, resolution)
        for other in (scenario.original, *scenario.also)
        if other in samples  # a provider that failed (``./dev gpu``) has no samples
    }
    comparisons = {other: comparison for other, (comparison, _) in compared.items()}
    check = _loss_check(scenario, losses)
    result = _verdict(compared[scenario.original][1], scenario.target)
    return {
        "case": case,
        "scenario": scenario.name,
        "description": scenario.description,
        "metric": scenario.metric,
        "iterations": iterations,
        "batch_size": scenario.batch_size,
        "resolution_us": resolution,
        "reference": scenario.reference,
        "baseline": scenario.baseline,
        "original": scenario.original,
        "candidate": scenario.candidate,
        "also": [name for name in scenario.also if name in samples],
        "providers": providers,
        "overhead_ratio": ratios,
        "comparisons": comparisons,
        "ratio_shown": comparisons[scenario.original]["shown"],
        "target_ratio": scenario.target,
        "losses": check,
        "result": "FAIL" if check is not None and not check["equal"] else result,
    }


def _environment() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ignite": ignite.__version__,
            "hotloop": hotloop.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "usable_cpus": usable,
        },
    }


def _duration(us: float) -> str:
    """A time in µs, to three significant digits, in µs, ms or s by its size."""
    for unit, scale in (("s", 1e6), ("ms", 1e3)):
        if us >= scale:
            return f"{_significant(us / scale)} {unit}"
    return f"{_significant(us)} µs"


def _markdown(rows: list[list[str]]) -> str:
    """A Markdown table, its first row the header, columns padded to line up in a terminal."""
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def _rate(samples_per_s: float) -> str:
    """samples/s to three significant digits: ``1.20M samples/s``, ``28.6k samples/s``, ``912 samples/s``."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if samples_per_s >= scale:
            return f"{_significant(samples_per_s / scale)}{unit} samples/s"
    return f"{_significant(samples_per_s)} samples/s"


def _shown_rate(batch_size: int | None, us_per_iter: float, form: str = "{}") -> str:
    """samples/s of the median time per iteration (what the table shows beside it), or nothing without a batch size.

    Not the median of the per-round rates: over an even number of rounds that can differ from it."""
    return "" if batch_size is None else form.format(_rate(batch_size / us_per_iter * 1e6))


def _named(result: dict[str, Any], name: str) -> str:
    """A provider's name, with what its step chose where it chose (``hotloop_auto [fused]``)."""
    choice = result["providers"][name].get("choice")
    return name if choice is None else f"{name} [{choice}]"


def _cost(result: dict[str, Any], name: str) -> str:
    """A provider's figure in the summary: its time per iteration (and samples/s) for a throughput scenario, its
    cost over the baseline for an overhead one."""
    provider = result["providers"][name]
    if result["metric"] == "throughput":
        per_step = provider["us_per_iter"]["median"]
        return f"{_named(result, name)} {_duration(per_step)}" + _shown_rate(result["batch_size"], per_step, " ({})")
    return f"{_named(result, name)} {_overhead(provider['overhead_vs_baseline_us']['median'], result['resolution_us'])}"


def _others(result: dict[str, Any]) -> str:
    """The candidate against the scenario's further originals: ``lightning ÷ hotloop 2.10×``."""
    shown = [f"{name} ÷ {result['candidate']} {result['comparisons'][name]['shown']}" for name in result["also"]]
    return "; ".join(shown) or "—"


def _losses(result: dict[str, Any]) -> str:
    check = result["losses"]
    if check is None:
        return "—"
    if check["equal"]:
        return f"equal ({len(check['providers'])} providers)"
    return "DIFFER: " + ", ".join(check["differ"])


def _summary_row(result: dict[str, Any]) -> list[str]:
    target = result["target_ratio"]
    return [
        f"{result['case']}/{result['scenario']}",
        _cost(result, result["original"]),
        _cost(result, result["candidate"]),
        result["ratio_shown"],
        _others(result),
        _losses(result),
        "—" if target is None else f"≥ {target:g}×",
        result["result"] or "no target",
    ]


def _summary_table(results: list[dict[str, Any]]) -> str:
    """One row per scenario: the original's and hotloop's figures (cost over the baseline, or time per step), their
    ratio, the candidate against further originals, the equal-losses check, the target and the verdict."""
    header = ["scenario", "original", "hotloop", "original ÷ hotloop", "others ÷ hotloop", "losses", "target"]
    return _markdown([header + ["verdict"]] + [_summary_row(result) for result in results])


def _roles(result: dict[str, Any], name: str) -> str:
    roles = [role for role in ("reference", "baseline", "original", "candidate") if result[role] == name]
    return ", ".join(roles + ["compared" for other in result["also"] if other == name])


def _final_loss(result: dict[str, Any], name: str) -> str:
    loss = result["providers"][name]["final_loss"]
    return "—" if loss is None else f"{loss:.6g}"


def _detail_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, provider in result["providers"].items():
        per_iter = provider["us_per_iter"]
        over = provider["overhead_vs_baseline_us"]["median"]
        rows.append(
            [
                f"{result['case']}/{result['scenario']}",
                _named(result, name),
                _roles(result, name),
                _duration(per_iter["median"]),
                f"{_duration(per_iter['q1'])} – {_duration(per_iter['q3'])}",
                _shown_rate(result["batch_size"], per_iter["median"]) or "—",
                "—" if name == result["baseline"] else _overhead(over, result["resolution_us"]),
                _final_loss(result, name),
            ]
        )
    return rows


def _details_table(results: list[dict[str, Any]]) -> str:
    """Every provider of every scenario: time per iteration (median, IQR), samples/s, its cost over the baseline and
    the loss it ended on."""
    header = ["scenario", "provider", "role", "per iteration (median)", "per iteration (IQR)", "samples/s"]
    header += ["over baseline", "final loss"]
    return _markdown([header] + [row for result in results for row in _detail_rows(result)])


def _skipped_lines(skipped: dict[str, str]) -> list[str]:
    return [f"skipped {case}: {reason}" for case, reason in skipped.items()]


_SUMMARY_NOTE = (
    "Loop scenarios: cost per iteration over the scenario's baseline (median of per-round paired differences), "
    "original ÷ hotloop of those costs. Training scenarios: time per step and samples/s (medians), original ÷ hotloop "
    "of those times (median of the per-round ratios: hotloop's speed-up). Higher is better; the verdict is taken from "
    "the figure shown; losses: whether the providers that run the same steps ended on the same loss."
)


def _details_markdown(report: dict[str, Any], skipped: dict[str, str]) -> str:
    results = report["scenarios"]
    descriptions = [
        f"- `{r['case']}/{r['scenario']}` (baseline `{r['baseline']}`): {r['description']}" for r in results
    ]
    parts = [
        "# hotloop bench",
        _subtitle(report),
        "## Summary",
        _SUMMARY_NOTE,
        _summary_table(results),
        *(["## Skipped", *(f"- {line}" for line in _skipped_lines(skipped))] if skipped else []),
        "## Every provider",
        "Roles: `reference` is the loop every overhead in `results.json` is first taken against, `baseline` the one "
        "the ratio's overheads are taken over, `original` the library hotloop replaces, `candidate` hotloop.",
        _details_table(results),
        "## Scenarios",
        "\n".join(descriptions),
    ]
    return "\n\n".join(parts) + "\n"


def _jsonable(value: Any) -> Any:
    """Replaces non-finite floats by ``None``: JSON has no ``Infinity`` or ``NaN``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _by_case(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    cases: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        cases.setdefault(result["case"], []).append(result)
    return cases


def _provider_order(results: list[dict[str, Any]]) -> list[str]:
    """All providers, each scenario's run order kept: a new name goes before the next one already placed."""
    order: list[str] = []
    for result in results:
        names = list(result["providers"])
        for index, name in enumerate(names):
            if name not in order:
                later = [order.index(other) for other in names[index + 1 :] if other in order]
                order.insert(min(later, default=len(order)), name)
    return order


def _bar_positions(results: list[dict[str, Any]], providers: list[str], width: float) -> dict[tuple[int, str], float]:
    """x of each (scenario index, provider) bar that exists, each scenario's bars centred on its tick."""
    positions: dict[tuple[int, str], float] = {}
    for index, result in enumerate(results):
        present = [name for name in providers if name in result["providers"]]
        for slot, name in enumerate(present):
            positions[index, name] = index + (slot - (len(present) - 1) / 2) * width
    return positions


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _value_label(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _plot_case(axes: Any, case: str, results: list[dict[str, Any]], colors: dict[str, Any]) -> None:
    """One case's panel: bars of µs/iteration (median, IQR whiskers) per scenario and provider, log scale."""
    providers = _provider_order(results)
    width = 0.8 / max(len(result["providers"]) for result in results)
    slots = _bar_positions(results, providers, width)
    for name in providers:
        drawn = [
            (slots[index, name], result["providers"][name]["us_per_iter"])
            for index, result in enumerate(results)
            if name in result["providers"]
        ]
        medians = [stats["median"] for _, stats in drawn]
        errors = (
            [stats["median"] - stats["q1"] for _, stats in drawn],
            [stats["q3"] - stats["median"] for _, stats in drawn],
        )
        bars = axes.bar([x for x, _ in drawn], medians, width, yerr=errors, capsize=2, label=name, color=colors[name])
        axes.bar_label(bars, labels=[_value_label(m) for m in medians], fontsize=6, padding=2, rotation=90)
    axes.set_xticks(range(len(results)), [result["scenario"] for result in results], fontsize=8)
    if len(results) > 4:  # long scenario names side by side would overlap
        axes.tick_params(axis="x", labelrotation=20)
    axes.set_yscale("log")
    axes.margins(y=0.25)  # room above the tallest bar for its rotated label
    axes.set_ylabel("µs per iteration")
    axes.set_title(f"{case}: median µs per iteration (whiskers: IQR), lower is better", fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="provider", title_fontsize=8)


def provider_colors(providers: Sequence[str]) -> dict[str, Any]:
    """One colour per provider, all different: tab10, eight more hues, then evenly spaced hues of a colour wheel.

    Args:
        providers: The providers of a run, each once.

    Returns:
        Provider name to a matplotlib colour.
    """
    extra = max(0, len(providers) - len(_PALETTE))
    wheel = [colorsys.hsv_to_rgb((0.05 + i / extra) % 1.0, 0.8, 0.55) for i in range(extra)]
    colors: list[Any] = [*_PALETTE, *wheel]
    return {name: colors[index] for index, name in enumerate(providers)}


def _plot(results: list[dict[str, Any]], path: Path, subtitle: str = "") -> None:
    """µs per iteration: one panel per case (each on its own log scale), every provider of its scenarios."""
    cases = _by_case(results)
    figure = _figure(12.0, 3.4 * len(cases))
    colors = provider_colors(_provider_order(results))
    panels = figure.subplots(len(cases), 1, squeeze=False)[:, 0]
    for axes, (case, case_results) in zip(panels, cases.items()):
        _plot_case(axes, case, case_results, colors)
    figure.suptitle(f"hotloop bench: providers interleaved round by round in one process\n{subtitle}".strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _ratio_bars(results: list[dict[str, Any]]) -> list[tuple[str, float, str, float | None]]:
    """What the ratio chart draws: (label, ratio, colour, target) for each scenario against its original (coloured
    by its verdict) and against each further original (grey: no target), where the ratio is a finite figure."""
    bars = []
    for result in results:
        for other, comparison in result["comparisons"].items():
            ratio = comparison["ratio"]
            if ratio is None or not math.isfinite(ratio) or ratio <= 0:
                continue
            headline = other == result["original"]
            label = f"{result['case']}/{result['scenario']} ({other}÷{result['candidate']}, {result['metric']})"
            color = {"PASS": "tab:green", "FAIL": "tab:red"}.get(result["result"], "tab:blue") if headline else "grey"
            bars.append((label, ratio, color, result["target_ratio"] if headline else None))
    return bars


def _plot_ratios(results: list[dict[str, Any]], path: Path, subtitle: str = "") -> None:
    """The headline: each scenario's original÷hotloop ratio (and against further originals), with its target, on a
    log scale."""
    shown = _ratio_bars(results)
    figure = _figure(9.0, 1.2 + 0.32 * max(len(shown), 1))
    axes = figure.subplots()
    y = list(range(len(shown)))[::-1]
    bars = axes.barh(y, [ratio for _, ratio, _, _ in shown], color=[color for _, _, color, _ in shown])
    axes.bar_label(bars, labels=[f"{_significant(ratio)}×" for _, ratio, _, _ in shown], fontsize=8, padding=3)
    for row, (_, _, _, target) in zip(y, shown):
        if target is not None:
            axes.plot([target] * 2, [row - 0.4, row + 0.4], color="black", linewidth=2)
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_yticks(y, [label for label, _, _, _ in shown], fontsize=8)
    axes.set_xscale("log")
    axes.margins(x=0.15)
    axes.set_xlabel(
        "original ÷ hotloop: of costs over the baseline (overhead) or of times per step (throughput); "
        "higher is better, 1× = equal",
        fontsize=8,
    )
    axes.set_title(
        "Original ÷ hotloop (black tick: target; green: meets it, red: misses it, blue: no target; grey: against "
        "another library)\n" + subtitle,
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _rounds(rounds: int, warmup_rounds: int) -> str:
    return f"{rounds} round{'s' * (rounds != 1)} after {warmup_rounds} warm-up"


def _subtitle(report: dict[str, Any]) -> str:
    """Date, mode and machine, for the charts: figures are only comparable with their context."""
    machine, versions = report["machine"], report["versions"]
    rounds = _rounds(report["rounds"], report["warmup_rounds"])
    return (
        f"{report['date'][:10]}, {report['mode']} run ({rounds}), {machine['usable_cpus']} CPUs "
        f"{machine['machine']}, torch {versions['torch']}, ignite {versions['ignite']}"
    )


class _NoProgress:
    def update(self, n: int = 1) -> None:
        return None

    def set_description_str(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar on stderr counting rounds (off when stderr is not a terminal, or without tqdm)."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return _NoProgress()
    return tqdm(total=total, unit="round", disable=None, leave=False, dynamic_ncols=True, file=sys.stderr)


def _run(
    selected: list[tuple[str, Scenario]], quick: bool, warmup_rounds: int, rounds: int, progress: bool = False
) -> list[dict[str, Any]]:
    results = []
    selected = [(case, scenario.for_mode(quick)) for case, scenario in selected]
    total = sum((warmup_rounds + rounds) * len(scenario.providers) for _, scenario in selected)
    bar = _progress(total, progress)
    # Freezing what exists now keeps a full collection that falls inside a timed round from walking torch's heap
    # (a full gc.collect() right after importing torch and ignite takes ~0.1 s on the 2-core machine).
    gc.collect()
    gc.freeze()
    try:
        for case, scenario in selected:
            bar.set_description_str(f"{case}/{scenario.name}")
            iterations = scenario.quick_iterations if quick else scenario.iterations
            samples, losses, choices = _measure(scenario, iterations, warmup_rounds, rounds, bar.update)
            results.append(_summarize(case, scenario, iterations, samples, losses, choices))
    finally:
        gc.unfreeze()
        bar.close()
    return results


def run(args: argparse.Namespace) -> int:
    """Runs the comparison from parsed options, prints the table, writes the JSON and the charts.

    Args:
        args: What a parser set up by :func:`add_arguments` returned.

    Returns:
        The exit code: 0; 1 when ``--check`` is given and a scenario misses its target; 2 when ``--only`` matches
        nothing.

    Raises:
        ModuleNotFoundError: matplotlib is missing, or ``--only`` names a case whose packages are missing; raised
            before anything is measured.
    """
    require("hotloop bench (its charts)", MATPLOTLIB)  # before anything is measured, not after
    quiet_third_party_logs()
    mode = _QUICK if args.quick else _FULL
    warmup_rounds = mode["warmup_rounds"] if args.warmup is None else args.warmup
    rounds = mode["rounds"] if args.rounds is None else args.rounds
    skipped = skipped_cases()
    try:
        selected = _select(load_cases(), args.only, skipped)
    except ValueError as error:
        print(f"hotloop bench: error: {error}", file=sys.stderr)
        return 2
    if args.only is not None:
        skipped = {}  # the named case runs: what other cases would need is not this run's business
    for line in _skipped_lines(skipped):
        print(line, flush=True)
    started = time.perf_counter()
    results = _run(selected, args.quick, warmup_rounds, rounds, getattr(args, "progress", True))
    report = {
        "schema_version": 3,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "warmup_rounds": warmup_rounds,
        "rounds": rounds,
        **_environment(),
        "skipped": [{"case": case, "reason": reason} for case, reason in skipped.items()],
        "scenarios": results,
    }
    _write_outputs(report, skipped, args)
    seconds = time.perf_counter() - started
    print(f"\nhotloop bench: {report['mode']} run, {_rounds(rounds, warmup_rounds)}, {seconds:.1f} s")
    print(_SUMMARY_NOTE)
    print(_summary_table(results))
    for line in _skipped_lines(skipped):
        print(line)
    json_path, details, *charts = _output_paths(args)
    print(f"every provider: {details}; the same numbers: {json_path}; charts: {', '.join(map(str, charts))}")
    failed = [result["scenario"] for result in results if result["result"] == "FAIL"]
    return 1 if args.check and failed else 0


def _output_paths(args: argparse.Namespace) -> list[Path]:
    """results.json, the Markdown details beside it, and the two charts."""
    json_path = args.json if args.json is not None else args.output / "results.json"
    return [json_path, json_path.with_suffix(".md"), args.output / _CHART_NAME, args.output / _RATIO_CHART_NAME]


def _write_outputs(report: dict[str, Any], skipped: dict[str, str], args: argparse.Namespace) -> None:
    json_path, details, chart, ratio_chart = _output_paths(args)
    _write_json(report, json_path)
    details.write_text(_details_markdown(report, skipped), encoding="utf-8")
    subtitle = _subtitle(report)
    _plot(report["scenarios"], chart, subtitle)
    _plot_ratios(report["scenarios"], ratio_chart, subtitle)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the comparison, prints the table, writes the JSON and the charts.

    Args:
        argv: Command-line arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit code: 0; 1 when a package is missing (one line on stderr) or when ``--check`` is given and a
        scenario misses its target; 2 for bad options.
    """
    args = _parse_args(argv)
    try:
        return run(args)
    except ModuleNotFoundError as error:
        print(f"hotloop bench: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
