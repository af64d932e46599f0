"""MONAI's ``SupervisedEvaluator`` against hotloop's on the GPU: :mod:`hotloop.bench.cases.evaluator_monai` run there.

The case's own measurement (providers interleaved round by round, the device synced, the mean Dice of every provider
kept) on the CUDA device: a 3D UNet, batch 2 of 64³, softmax/argmax/one-hot postprocessing and MONAI's ``MeanDice``
(``monai``, ``hotloop``: the same user code, hotloop's postprocessing fused on the batch), and hotloop's fused
``MeanDice`` on logits (``hotloop_fused``, Triton kernels); once on batches of plain tensors, once on MetaTensor
batches as MONAI's ``DataLoader`` collates them (the case's ``--meta``). Checked: ``raw``, ``monai`` and ``hotloop``
give the identical mean Dice; ``hotloop_fused`` the same within 1e-6.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ._common import Context, fmt, markdown_table, sized, times, torch_path_in_dry_run

__all__ = ["run"]

_FUSED_TOLERANCE = 1e-6  # hotloop_fused argmaxes the logits and reduces in float64 (docs/kernels.md)


def _table(result: dict[str, Any]) -> str:
    times_ms, dice = result["ms_per_batch"], result["mean_dice"]
    monai = times_ms["monai"]["median"]
    rows = [
        [
            name,
            fmt(stats["median"]),
            fmt(stats["min"]),
            "" if name == "bare" else times(monai / stats["median"] if stats["median"] > 0 else None),
            "" if name not in dice else repr(dice[name]),
        ]
        for name, stats in times_ms.items()
    ]
    return markdown_table(["provider", "ms/batch (median)", "ms/batch (min)", "× MONAI", "mean Dice"], rows)


def _markdown(description: str, results: dict[str, dict[str, Any]], rounds: int, iterations: int) -> str:
    lines = [
        f"## Evaluator: {description}",
        "",
        f"{rounds} rounds of {iterations} batches after one warm-up round, providers interleaved; batches of plain "
        "tensors, then of MetaTensors as MONAI's DataLoader collates them.",
    ]
    for batches, result in results.items():
        lines += [
            "",
            f"{batches} batches: hotloop {times(result['speedup_vs_monai'])} MONAI, fused "
            f"{times(result['speedup_fused_vs_monai'])}; identical Dice (raw, monai, hotloop): "
            f"{result['identical_metric']}; |fused − monai| = {result['fused_metric_difference']:.3g}.",
            "",
            _table(result),
        ]
    return "\n".join(lines)


def _host_path(ctx: Context, meta: bool) -> AbstractContextManager[None]:
    if ctx.dry_run and meta:
        ctx.notes.append("dry run, MetaTensor batches: the torch path (Triton's interpreter cannot take MetaTensors)")
        return torch_path_in_dry_run()
    return nullcontext()


def run(ctx: Context) -> dict[str, Any]:
    """The evaluator case on the device, on tensor and on MetaTensor batches (tiny volumes in a dry run)."""
    from hotloop.bench.cases import evaluator_monai as case

    if not case.SCENARIOS:
        ctx.check("evaluator measured", False, "MONAI is not installed: carry its wheel (./dev gpu-wheels)")
        return ctx.result("evaluator", markdown="## Evaluator\n\nNot measured: MONAI is not installed.")
    iterations, rounds = ctx.pick((8, 7), (1, 1))
    side = ctx.pick(case._SIDE, 16)
    results = {}
    for meta in (False, True):
        options = {**case._OPTIONS, "meta": meta}
        with sized(case, _DEVICE=ctx.device, _SIDE=side, _OPTIONS=options), _host_path(ctx, meta):
            result = case._measure(iterations, rounds, memory=False)
        batches = result["batches"]
        results[batches] = result
        ctx.check(f"identical Dice ({batches})", result["identical_metric"], f"mean Dice {result['mean_dice']}")
        difference = result["fused_metric_difference"]
        ctx.check(
            f"fused Dice ({batches})", difference <= _FUSED_TOLERANCE, f"|hotloop_fused − monai| = {difference:.3g}"
        )
    description = (
        f"3D UNet {case._CHANNELS}, {case._CLASSES} classes, batch {case._BATCH} of {side}³, softmax/argmax/one-hot "
        f"+ MeanDice, {ctx.device}"
    )
    return ctx.result(
        "evaluator",
        description=description,
        results=results,
        markdown=_markdown(description, results, rounds, iterations),
    )
