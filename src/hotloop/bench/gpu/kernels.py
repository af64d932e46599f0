"""The fused ops and metric kernels on the GPU: Triton against hotloop's torch path and MONAI's per-sample chain.

Each op of :mod:`hotloop.ops` runs on float32 logits ``[2, 8, 128³]`` (134 MB, more than twice the H200's L2) and
int64 label maps ``[2, 1, 128³]``, three ways, interleaved call by call and timed with CUDA events (the device idle
before each call):

- ``triton``: ``backend="triton"``, hotloop's kernels;
- ``torch``: ``backend="torch"``, hotloop's vectorized torch path (the kernels' reference);
- ``monai``: MONAI's transforms as its tutorials apply them, per sample after ``decollate_batch``.

GB/s counts the fewest bytes the op must move (every input read once, every output written once), the same for all
three providers; "% of copy" sets it against a device-to-device copy of 1 GiB measured in the same run (bytes read
plus bytes written). Checked: the kernels' outputs equal the torch path's (softmax within 1e-6).

Then the metric: :mod:`hotloop.bench.cases.fused_dice`'s CUDA scenario (mean Dice of ``[2, 14, 96³]`` logits:
MONAI's chain and ``DiceMetric``, Ignite's ``ConfusionMatrix``, hotloop's torch path and its fused ``MeanDice``),
measured as ``hotloop bench`` measures it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from hotloop import ops
from hotloop.bench.cases import fused_dice

from ._common import Context, Rounds, fmt, markdown_table, measure, ratio, sized, stats, time_calls, times

__all__ = ["run"]

_Op = dict[str, Callable[[], Any]]


def _shape(ctx: Context) -> tuple[int, int, int, int, int]:
    batch, classes, side = ctx.pick((2, 8, 128), (1, 3, 8))
    return batch, classes, side, side, side


def _inputs(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    shape = _shape(ctx)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).to(ctx.device)  # logits: [B, C, D, H, W]
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator).to(ctx.device)
    return logits, labels


def _monai_chains(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """MONAI's per-sample postprocessing and Dice, as its tutorials write them."""
    from monai.data import decollate_batch
    from monai.metrics import DiceMetric
    from monai.transforms import Activations, AsDiscrete, Compose

    classes = logits.shape[1]
    softmax = Activations(softmax=True)
    argmax_onehot = Compose([Activations(softmax=True), AsDiscrete(argmax=True, to_onehot=classes)])
    sigmoid_threshold = Compose([Activations(sigmoid=True), AsDiscrete(threshold=0.5)])
    onehot = AsDiscrete(to_onehot=classes)
    dice = DiceMetric(include_background=True, reduction="none")

    def dice_statistics() -> Any:
        predictions = [argmax_onehot(sample) for sample in decollate_batch(logits)]
        targets = [onehot(sample) for sample in decollate_batch(labels)]
        return dice(y_pred=predictions, y=targets)  # type: ignore[arg-type]

    return {
        "softmax": lambda: [softmax(sample) for sample in decollate_batch(logits)],
        "softmax → argmax → one-hot": lambda: [argmax_onehot(sample) for sample in decollate_batch(logits)],
        "sigmoid → threshold": lambda: [sigmoid_threshold(sample) for sample in decollate_batch(logits)],
        "one-hot of labels": lambda: [onehot(sample) for sample in decollate_batch(labels)],
        "Dice statistics": dice_statistics,
    }


def _ops(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, dict[str, Callable[[], Any]]]:
    classes = logits.shape[1]

    def both(make: Callable[[str], Any]) -> dict[str, Callable[[], Any]]:
        return {"triton": lambda: make("triton"), "torch": lambda: make("torch")}

    table = {
        "softmax": both(lambda b: ops.softmax(logits, backend=b)),  # type: ignore[arg-type]
        "softmax → argmax → one-hot": both(
            lambda b: ops.softmax_argmax(logits, to_onehot=classes, backend=b)  # type: ignore[arg-type]
        ),
        "sigmoid → threshold": both(lambda b: ops.sigmoid_threshold(logits, 0.5, backend=b)),  # type: ignore[arg-type]
        "one-hot of labels": both(lambda b: ops.one_hot(labels, classes, backend=b)),  # type: ignore[arg-type]
        "Dice statistics": both(lambda b: ops.class_counts(logits, labels, backend=b)),  # type: ignore[arg-type]
        "confusion matrix": both(lambda b: ops.confusion_matrix(logits, labels, backend=b)),  # type: ignore[arg-type]
    }
    if fused_dice.UNAVAILABLE is None:
        for name, chain in _monai_chains(logits, labels).items():
            table[name]["monai"] = chain
    return table


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _same(name: str, triton: Any, torch_path: Any) -> tuple[bool, str]:
    """Whether the kernel gave the torch path's result (softmax: within 1e-6; the rest: exactly)."""
    worst = 0.0
    for got, expected in zip(_tensors(triton), _tensors(torch_path), strict=True):
        if got.shape != expected.shape:
            return False, f"shape {tuple(got.shape)} against {tuple(expected.shape)}"
        worst = max(worst, (got.double() - expected.double()).abs().max().item() if got.numel() else 0.0)
    tolerance = 1e-6 if name == "softmax" else 0.0
    return worst <= tolerance, f"max |triton − torch| = {worst:.3g} (allowed {tolerance:g})"


def _copy_bandwidth(ctx: Context, reps: int) -> dict[str, Any]:
    """A device-to-device copy: GB/s counting bytes read plus bytes written."""
    elements = ctx.pick(2**28, 2**20)  # 1 GiB of float32 on the GPU
    source = torch.empty(elements, device=ctx.device).normal_()  # random, never zeros (METHOD.md)
    target = torch.empty_like(source)
    samples = time_calls({"copy": lambda: target.copy_(source)}, reps, warmup=2)["copy"]
    moved = 2 * source.nbytes
    summary = stats(samples)
    return {"bytes": moved, "us": summary, "gb_per_s": moved / summary["median"] / 1e3}


def _op_row(name: str, provider: str, summary: dict[str, float], moved: int, copy: float, medians: dict) -> list[str]:
    rate = moved / summary["median"] / 1e3
    return [
        name,
        provider,
        fmt(summary["median"]),
        f"{fmt(summary['q1'])}–{fmt(summary['q3'])}",
        fmt(rate),
        f"{100 * rate / copy:.0f} %",
        times(ratio(medians.get("torch"), summary["median"])),
        times(ratio(medians.get("monai"), summary["median"])),
    ]


def _measure_ops(ctx: Context, reps: int, copy: float) -> tuple[list[dict[str, Any]], list[list[str]]]:
    logits, labels = _inputs(ctx)
    results, rows = [], []
    for name, calls in _ops(logits, labels).items():
        triton, torch_path = calls["triton"](), calls["torch"]()
        ok, detail = _same(name, triton, torch_path)
        ctx.check(f"{name}: triton = torch", ok, detail)
        moved = sum(t.nbytes for t in (logits, labels) if _reads(name, t, logits)) + sum(
            t.nbytes for t in _tensors(triton)
        )
        samples = time_calls(calls, reps, warmup=2)
        summaries = {provider: stats(values) for provider, values in samples.items()}
        medians = {provider: summary["median"] for provider, summary in summaries.items()}
        rows += [_op_row(name, p, s, moved, copy, medians) for p, s in summaries.items()]
        results.append({"op": name, "bytes": moved, "us": summaries, "samples_us": samples, "check": detail})
    return results, rows


def _reads(name: str, tensor: torch.Tensor, logits: torch.Tensor) -> bool:
    """Which inputs an op reads: the logits, the labels, or both."""
    if name == "one-hot of labels":
        return tensor is not logits
    if name in ("Dice statistics", "confusion matrix"):
        return True
    return tensor is logits


def _metric(ctx: Context) -> dict[str, Any]:
    if fused_dice.UNAVAILABLE is not None:
        return {"error": fused_dice.UNAVAILABLE}
    classes, device, side = ctx.pick((14, "cuda", fused_dice._SIDE), (3, "cpu", 12))
    rounds = ctx.pick(Rounds(fused_dice._ITERATIONS, 2, 7), Rounds(1, 1, 1))
    with sized(fused_dice, _SIDE=side):
        return measure(ctx, "fused_dice", fused_dice._scenario(classes, device), rounds)


def _metric_markdown(metric: dict[str, Any]) -> str:
    if "error" in metric:
        return f"Metric: not measured ({metric['error']})."
    providers = metric["providers"]
    monai = providers.get("monai", {}).get("us_per_iter", {}).get("median")
    rows = [
        [
            name,
            fmt(p["us_per_iter"]["median"] / 1e3),
            f"{fmt(p['us_per_iter']['q1'] / 1e3)}–{fmt(p['us_per_iter']['q3'] / 1e3)}",
            "" if name == "bare" else times(ratio(monai, p["us_per_iter"]["median"])),
        ]
        for name, p in providers.items()
    ]
    rounds = len(next(iter(providers.values()))["samples_us_per_iter"])
    return "\n".join(
        [
            f"Metric: {metric['description']} (`{metric['scenario']}`, median of {rounds} rounds):",
            "",
            markdown_table(["provider", "ms/batch (median)", "ms/batch (IQR)", "× MONAI"], rows),
        ]
    )


def run(ctx: Context) -> dict[str, Any]:
    """Copy bandwidth, every op three ways, and the fused metric scenario."""
    reps = ctx.pick(20, 2)
    copy = _copy_bandwidth(ctx, reps)
    results, rows = _measure_ops(ctx, reps, copy["gb_per_s"])
    metric = _metric(ctx)
    logits_shape = ", ".join(map(str, _shape(ctx)))
    header = ["op", "provider", "µs (median)", "µs (IQR)", "GB/s", "% of copy", "× torch", "× MONAI"]
    markdown = "\n".join(
        [
            f"## Fused ops and metric kernels: logits [{logits_shape}] float32, label maps int64",
            "",
            f"Device copy: {fmt(copy['gb_per_s'])} GB/s (read + write, {copy['bytes'] / 2**30:.2f} GiB per copy, "
            f"median of {reps}). Each op: median of {reps} calls, providers interleaved; GB/s from the fewest bytes "
            "the op must move.",
            "",
            markdown_table(header, rows),
            "",
            _metric_markdown(metric),
        ]
    )
    return ctx.result("kernels", copy=copy, ops=results, metric=metric, markdown=markdown)
