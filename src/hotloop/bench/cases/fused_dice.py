"""Fused Dice: MONAI's postprocessing chain and ``DiceMetric`` against hotloop's ``MeanDice`` on logits, 3D, CPU.

Scenarios ``dice_c3`` and ``dice_c14``: batches of B=2 float32 logits ``[2, C, 96, 96, 96]`` and int64 label maps
``[2, 1, 96, 96, 96]``, C=3 and C=14. A round runs ``iterations`` batches through a metric and reads the mean Dice
once, as an evaluation epoch does. Providers:

- ``bare``: the loop over the batches, doing nothing: the baseline the target ratio is taken over, so that the ratio
  is the plain time ratio ``monai / hotloop``.
- ``raw``: hand-written batched torch, as one would write it without a framework: ``argmax`` over channels, one
  ``bincount`` of ``label · C + prediction`` per batch, per-sample Dice from the confusion matrices.
- ``ignite``: Ignite's ``ConfusionMatrix`` + ``DiceCoefficient`` (a batch-global Dice: Ignite's way, not MONAI's).
- ``monai``: ``decollate_batch`` → ``Activations(softmax=True)`` → ``AsDiscrete(argmax=True, to_onehot=C)`` per
  sample, ``AsDiscrete(to_onehot=C)`` per label, ``DiceMetric(reduction="mean")``: MONAI's tutorials' evaluation.
- ``hotloop``: ``hotloop.metrics.MeanDice(activation="softmax")`` on the logits and label maps.

On a machine with a CUDA GPU and triton, a third scenario, ``dice_c14_cuda``, runs the same providers on the GPU plus
``torch_path`` (hotloop's torch path, ``backend="torch"``), so that the Triton kernels are measured against their
torch reference; its memory column is the CUDA allocator's peak. Not run here: no GPU was available.

Target (``compare.py``): hotloop at least 5× faster than MONAI. Memory is not part of ``compare.py``'s table; run
this module for time and peak extra memory side by side (from ``benchmarks/``)::

    python -m hotloop.bench.cases.fused_dice                # both scenarios, time and memory, a Markdown table
    python -m hotloop.bench.cases.fused_dice --json out.json --rounds 5 --threads 1

Peak extra memory is measured per provider in a fresh child process: the inputs are allocated, one warm-up round
runs (imports, caches), the kernel's peak-RSS counter is reset to the current RSS (``echo 5 > /proc/self/clear_refs``),
one round runs, and the peak is read back (``VmHWM`` in ``/proc/self/status``): peak extra = peak − RSS before the
round. tracemalloc does not see torch's allocations, and torch's CPU allocator keeps no statistics, but every tensor
buffer is process memory: with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) each buffer of
64 KiB or more is its own mapping, returned to the system when freed, so RSS follows the live buffers and the peak
is the largest set of them alive at once (plus small allocations, noise of a few MiB). Linux only.
The target there: hotloop's peak extra memory at most 1/C of MONAI's.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.metrics import ConfusionMatrix, DiceCoefficient

from hotloop import ops
from hotloop._optional import MONAI, missing_message
from hotloop.metrics import MeanDice

from . import Scenario, _memory, device_sync

__all__ = ["SCENARIOS", "UNAVAILABLE", "main"]

#: Why this case cannot run here (MONAI is missing), or ``None``.
UNAVAILABLE: str | None = missing_message("the fused_dice case", MONAI)

_BATCH = 2
_SIDE = 96
_ITERATIONS = 2
_QUICK_ITERATIONS = 1
_TARGET_SPEEDUP = 5.0

Batch = tuple[torch.Tensor, torch.Tensor]


def _data(classes: int, iterations: int, device: str) -> list[Batch]:
    """``iterations`` references to one batch: the work per batch is what is measured, not the data's variety."""
    generator = torch.Generator().manual_seed(classes)
    shape = (_BATCH, classes, _SIDE, _SIDE, _SIDE)
    logits = torch.randn(shape, generator=generator).to(device)
    labels = torch.randint(0, classes, (_BATCH, 1, _SIDE, _SIDE, _SIDE), generator=generator).to(device)
    return [(logits, labels)] * iterations


def _bare(classes: int, device: str) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        data = _data(classes, iterations, device)

        def run() -> None:
            for _ in data:
                pass

        return run

    return build


def _raw(classes: int, device: str) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        data = _data(classes, iterations, device)
        cells = classes * classes

        def run() -> float:
            scores = []
            for logits, labels in data:
                pred = logits.argmax(1).flatten(1)  # [B, S]
                cell = labels.flatten(1) * classes + pred + torch.arange(_BATCH, device=device).unsqueeze(1) * cells
                matrix = torch.bincount(cell.flatten(), minlength=_BATCH * cells).view(_BATCH, classes, classes)
                tp = matrix.diagonal(dim1=1, dim2=2)
                labelled = matrix.sum(2)
                dice = 2 * tp / (labelled + matrix.sum(1))
                scores.append(torch.where(labelled > 0, dice, float("nan")))
            return torch.cat(scores).nanmean(1).nanmean().item()

        return run

    return build


def _ignite(classes: int, device: str) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        data = _data(classes, iterations, device)
        matrix = ConfusionMatrix(classes, device=device)
        dice = DiceCoefficient(matrix)

        def run() -> float:
            matrix.reset()
            for logits, labels in data:
                matrix.update((logits, labels[:, 0]))
            return dice.compute().mean().item()

        return run

    return build


def _monai(classes: int, device: str) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        from monai.data import decollate_batch
        from monai.metrics import DiceMetric
        from monai.transforms import Activations, AsDiscrete, Compose

        data = _data(classes, iterations, device)
        post_pred = Compose([Activations(softmax=True), AsDiscrete(argmax=True, to_onehot=classes)])
        post_label = AsDiscrete(to_onehot=classes)
        metric = DiceMetric(include_background=True, reduction="mean")

        def run() -> float:
            for logits, labels in data:
                predictions = [post_pred(p) for p in decollate_batch(logits)]
                targets = [post_label(y) for y in decollate_batch(labels)]
                metric(y_pred=predictions, y=targets)  # type: ignore[arg-type]  # MONAI's transforms return tensors here
            result = metric.aggregate().item()  # type: ignore[union-attr]  # reduction="mean" gives one tensor
            metric.reset()
            return result

        return run

    return build


def _hotloop(classes: int, device: str) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        data = _data(classes, iterations, device)
        metric = MeanDice(activation="softmax", save_details=False)

        def run() -> float:
            metric.reset()
            for batch in data:
                metric.update(batch)
            return metric.compute()

        return run

    return build


def _torch_path(classes: int, device: str) -> Callable[[int], Callable[[], object]]:
    """hotloop's torch path on the GPU: the reference the Triton kernels are measured against."""

    def build(iterations: int) -> Callable[[], object]:
        data = _data(classes, iterations, device)

        def run() -> int:
            total = torch.zeros((), dtype=torch.int64, device=device)
            for logits, labels in data:
                total += ops.class_counts(logits, labels, backend="torch").tp.sum()
            return int(total)

        return run

    return build


def _scenario(classes: int, device: str = "cpu") -> Scenario:
    providers = {
        "bare": _bare(classes, device),
        "raw": _raw(classes, device),
        "ignite": _ignite(classes, device),
        "monai": _monai(classes, device),
    }
    if device == "cuda":
        providers["torch_path"] = _torch_path(classes, device)
    providers["hotloop"] = _hotloop(classes, device)
    suffix = "" if device == "cpu" else f"_{device}"
    return Scenario(
        name=f"dice_c{classes}{suffix}",
        description=f"mean Dice of B={_BATCH} float32 logits [{_BATCH}, {classes}, {_SIDE}³] and label maps, {device}",
        iterations=_ITERATIONS,
        quick_iterations=_QUICK_ITERATIONS,
        providers=providers,
        baseline="bare",
        original="monai",
        target=_TARGET_SPEEDUP,
    )


def _scenarios() -> list[Scenario]:
    if UNAVAILABLE:
        return []
    scenarios = [_scenario(3), _scenario(14)]
    if torch.cuda.is_available() and ops.HAS_TRITON:  # the Triton kernels against the torch path, on the GPU
        scenarios.append(_scenario(14, "cuda"))
    return scenarios


SCENARIOS: list[Scenario] = _scenarios()
_CLASSES = {scenario.name: int(scenario.name.split("_")[1][1:]) for scenario in SCENARIOS}


# ---------------------------------------------------------------------------------------------------------------------
# standalone run: time and peak extra memory
# ---------------------------------------------------------------------------------------------------------------------


def _child_peak_extra(scenario_name: str, provider: str) -> int:
    """In the child: bytes of peak memory above the memory before one round (after a warm-up round)."""
    scenario = next(s for s in SCENARIOS if s.name == scenario_name)
    return _memory.peak_extra_bytes(scenario.providers[provider](1), cuda=scenario_name.endswith("_cuda"))


def _peak_extra(scenario_name: str, provider: str) -> int | None:
    """Peak extra bytes of one round of ``provider``, measured in a fresh process; ``None`` off Linux."""
    return _memory.measure_in_child("hotloop.bench.cases.fused_dice", [scenario_name, provider], f"{provider!r}")


def _time(scenario: Scenario, rounds: int) -> dict[str, list[float]]:
    """Seconds per batch of each provider, rounds interleaved after one warm-up round."""
    runs = {name: build(scenario.iterations) for name, build in scenario.providers.items()}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(rounds + 1):
        for name, run in runs.items():
            gc.collect()
            device_sync()
            start = time.perf_counter()
            run()
            device_sync()
            if round_index:
                samples[name].append((time.perf_counter() - start) / scenario.iterations)
    return samples


def _measure(scenario: Scenario, rounds: int) -> dict[str, Any]:
    samples = _time(scenario, rounds)
    memory = {name: _peak_extra(scenario.name, name) for name in scenario.providers if name != "bare"}
    median = {name: statistics.median(values) for name, values in samples.items()}
    classes = _CLASSES[scenario.name]
    time_ratio = median["monai"] / median["hotloop"]
    hotloop_memory, monai_memory = memory["hotloop"], memory["monai"]
    memory_ratio = monai_memory / max(hotloop_memory, 1) if hotloop_memory is not None and monai_memory else None
    return {
        "scenario": scenario.name,
        "classes": classes,
        "ms_per_batch": {name: {"median": m * 1e3, "min": min(samples[name]) * 1e3} for name, m in median.items()},
        "peak_extra_mib": {name: None if b is None else b / 2**20 for name, b in memory.items()},
        "speedup_vs_monai": time_ratio,
        "memory_ratio_monai_over_hotloop": memory_ratio,
        "time_target": _TARGET_SPEEDUP,
        "memory_target": classes,
        "time_result": "PASS" if time_ratio >= _TARGET_SPEEDUP else "FAIL",
        "memory_result": None if memory_ratio is None else ("PASS" if memory_ratio >= classes else "FAIL"),
    }


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | provider | ms/batch (median) | ms/batch (min) | monai ÷ provider time | peak extra MiB | "
        "monai ÷ provider memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        times, memory = result["ms_per_batch"], result["peak_extra_mib"]
        for name, stats in times.items():
            mib = memory.get(name)
            monai_mib = memory.get("monai")
            time_ratio = times["monai"]["median"] / stats["median"] if name != "bare" else None
            memory_ratio = monai_mib / max(mib, 1 / 1024) if mib is not None and monai_mib is not None else None
            lines.append(
                f"| {result['scenario']} | {name} | {stats['median']:.1f} | {stats['min']:.1f} | "
                f"{'' if time_ratio is None else f'{time_ratio:.1f}×'} | {'' if mib is None else f'{mib:.1f}'} | "
                f"{'' if memory_ratio is None else f'{memory_ratio:.1f}×'} |"
            )
    for result in results:
        lines.append(
            f"\n{result['scenario']}: time {result['speedup_vs_monai']:.1f}× (target ≥ {result['time_target']:g}×) "
            f"{result['time_result']}; memory {result['memory_ratio_monai_over_hotloop'] or float('nan'):.1f}× "
            f"(target ≥ {result['memory_target']}×) {result['memory_result']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Times every provider of both scenarios and measures their peak extra memory; prints a Markdown table.

    Args:
        argv: Command-line arguments; ``None`` reads ``sys.argv``.

    Returns:
        0, or 1 when a target is missed and ``--check`` is given.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hotloop.bench.cases.fused_dice", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per provider (default 5)")
    parser.add_argument("--only", help="one scenario: dice_c3, dice_c14 (or dice_c14_cuda on a GPU)")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--check", action="store_true", help="exit with 1 when a target is missed")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the timing (default: torch's)")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "PROVIDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"peak_extra_bytes": _child_peak_extra(*args.child)}))
        return 0
    if not SCENARIOS:
        print(f"fused_dice: {UNAVAILABLE}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [_measure(s, args.rounds) for s in SCENARIOS if args.only in (None, s.name)]
    print(_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    missed = any(r["time_result"] == "FAIL" or r["memory_result"] == "FAIL" for r in results)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
