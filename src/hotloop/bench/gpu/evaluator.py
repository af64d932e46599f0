"""MONAI's ``SupervisedEvaluator`` against hotloop's on the GPU: :mod:`hotloop.bench.cases.evaluator_monai` run there.

The case's own measurement (providers interleaved round by round, the device synced, the mean Dice of every provider
kept) on the CUDA device: a 3D UNet, batch 2 of 64³, softmax/argmax/one-hot postprocessing and MONAI's ``MeanDice``
(``monai``, ``hotloop``: the same user code, hotloop's postprocessing fused on the batch), and hotloop's fused
``MeanDice`` on logits (``hotloop_fused``, Triton kernels). Checked: ``raw``, ``monai`` and ``hotloop`` give the
identical mean Dice; ``hotloop_fused`` the same within 1e-6.
"""

from __future__ import annotations

from typing import Any

from ._common import Context, fmt, markdown_table, sized, times

__all__ = ["run"]

_FUSED_TOLERANCE = 1e-6  # hotloop_fused argmaxes the logits and reduces in float64 (docs/kernels.md)


def _markdown(result: dict[str, Any], rounds: int, iterations: int) -> str:
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
    table = markdown_table(["provider", "ms/batch (median)", "ms/batch (min)", "× MONAI", "mean Dice"], rows)
    return "\n".join(
        [
            f"## Evaluator: {result['description']}",
            "",
            f"{rounds} rounds of {iterations} batches after one warm-up round, providers interleaved. hotloop "
            f"{times(result['speedup_vs_monai'])} MONAI, fused {times(result['speedup_fused_vs_monai'])}; "
            f"identical Dice (raw, monai, hotloop): {result['identical_metric']}; |fused − monai| = "
            f"{result['fused_metric_difference']:.3g}.",
            "",
            table,
        ]
    )


def run(ctx: Context) -> dict[str, Any]:
    """The evaluator case on the device (tiny volumes in a dry run)."""
    from hotloop.bench.cases import evaluator_monai as case

    if not case.SCENARIOS:
        ctx.check("evaluator measured", False, "MONAI is not installed: carry its wheel (./dev gpu-wheels)")
        return ctx.result("evaluator", markdown="## Evaluator\n\nNot measured: MONAI is not installed.")
    iterations, rounds = ctx.pick((8, 7), (1, 1))
    side = ctx.pick(case._SIDE, 16)
    with sized(case, _DEVICE=ctx.device, _SIDE=side):
        result = case._measure(iterations, rounds, memory=False)
    result["description"] = (
        f"3D UNet {case._CHANNELS}, {case._CLASSES} classes, batch {case._BATCH} of {side}³, softmax/argmax/one-hot "
        f"+ MeanDice, {ctx.device}"
    )
    ctx.check("identical Dice", result["identical_metric"], f"mean Dice {result['mean_dice']}")
    difference = result["fused_metric_difference"]
    ctx.check("fused Dice", difference <= _FUSED_TOLERANCE, f"|hotloop_fused − monai| = {difference:.3g}")
    return ctx.result("evaluator", result=result, markdown=_markdown(result, rounds, iterations))
