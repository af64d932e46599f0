"""MONAI's ``SupervisedEvaluator`` against hotloop's, on a small 3D UNet with MONAI's usual postprocessing and Dice.

Scenario ``evaluator_unet3d``: ``monai.networks.nets.UNet(spatial_dims=3, channels=(2, 4, 8, 16))`` with 3 output
classes, evaluated on random volumes ``[2, 1, 64, 64, 64]`` (batch 2) with random label maps. Every provider runs
the same forward, postprocessing and Dice on the same weights and batches:

- ``bare``: the loop over the batches, doing nothing: the baseline of the target ratio, so that the ratio is the time
  ratio ``monai / hotloop`` (the throughput ratio).
- ``raw``: a hand-written loop: ``no_grad`` forward, batched softmax → ``torch.argmax`` → one-hot and label one-hot,
  MONAI's ``DiceMetric`` on the batch (``torch.argmax`` over the channel dim is most of its postprocessing time on
  the CPU: hotloop's batch postprocessing uses ``torch.max(dim)`` there).
- ``monai``: ``monai.engines.SupervisedEvaluator`` with ``postprocessing = Compose([Activationsd(pred, softmax),
  AsDiscreted(pred, argmax, to_onehot=3), AsDiscreted(label, to_onehot=3)])`` and MONAI's ``MeanDice`` handler as
  ``key_val_metric``: MONAI's tutorials' evaluation.
- ``hotloop``: ``hotloop.workflows.SupervisedEvaluator`` with the same arguments, MONAI's transforms and MONAI's
  ``MeanDice`` handler: the user's code with one import changed.
- ``hotloop_fused``: hotloop's evaluator with ``decollate=False``, no postprocessing and hotloop's fused
  ``hotloop.metrics.MeanDice(activation="softmax")`` on the logits and label maps: no one-hot volume is made.

A round evaluates ``iterations`` batches (one ``run()``) and returns the mean Dice. On the CPU every round runs with
one intra-op thread (see ``_OPTIONS``; ``--threads`` here). On a machine with CUDA the network and batches run there
(the batches are moved by the evaluators, as from a loader); not run here: no GPU was available.

Measured on the shared 2-core machine (``compare.py``, 10 rounds after 2 warm-up, one thread): MONAI 99 ms/batch,
hotloop 47 ms (2.1×), hotloop_fused 29 ms (3.4×), raw 94 ms; identical mean Dice for raw, monai and hotloop. On the
same machine when it was quiet (2026-11-30, 5 rounds): one thread MONAI 94.0 ms, hotloop 42.6 ms (2.2×); torch's
default two threads (``--threads 2``) MONAI 132 ms, hotloop 27.0 ms (4.9×), hotloop_fused 17.1 ms (7.7×).

With MetaTensor batches (``--meta``, as MONAI's ``DataLoader`` collates them; 10 rounds, 2026-12-03), before and after
hotloop stopped unwrapping them for the network: MONAI ÷ hotloop 2.01× / 2.08× (CPU time 2.03× / 2.01×) with the
unwrapping, 1.97× / 1.90× (CPU time 1.96× / 2.00×) without it, two runs each, interleaved.

Run this module for time, peak extra memory and the metric values side by side::

    python -m hotloop.bench.cases.evaluator_monai              # Markdown table
    python -m hotloop.bench.cases.evaluator_monai --rounds 5 --json out.json
    python -m hotloop.bench.cases.evaluator_monai --meta       # MetaTensor batches, as MONAI's DataLoader gives them

Peak extra memory is measured per provider in a fresh child process, as in :mod:`hotloop.bench.cases.fused_dice`:
glibc's mmap threshold fixed at 64 KiB so that freed tensor buffers leave RSS, one warm-up round, the peak-RSS
counter reset (``/proc/self/clear_refs``), one round, peak − RSS before it (Linux only; the CUDA allocator's peak on
a GPU). The metric values of all providers but ``hotloop_fused`` must be identical: they compute the same thing with
the same ops (``hotloop_fused`` takes the argmax of the logits and reduces in float64: equal to ~1e-7, see
``docs/kernels.md``).

MONAI is an optional dependency of hotloop: without it this case has no scenario.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from hotloop._optional import MONAI, missing_message

from . import Scenario, _memory, device_sync

__all__ = ["SCENARIOS", "UNAVAILABLE", "main"]

#: Why this case cannot run here (MONAI is missing), or ``None``.
UNAVAILABLE: str | None = missing_message("the evaluator_monai case", MONAI)

_BATCH = 2
_SIDE = 64
_CLASSES = 3
_CHANNELS = (2, 4, 8, 16)
_ITERATIONS = 4
_QUICK_ITERATIONS = 1
_TARGET_SPEEDUP = 1.0  # the "faster than MONAI's SupervisedEvaluator"
_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Intra-op threads of every provider's round on the CPU (``--threads`` here). On the shared 2-core machine a second
# thread made every provider 4-8× slower and its time a matter of contention (UNet forward 17 ms with one thread,
# 14-115 ms with two; a whole batch ~100 ms against ~800 ms), which hid the loops' own costs.
# ``meta`` (``--meta`` here): the batches are ``MetaTensor``\ s, collated by MONAI from per-sample MetaTensors with an
# affine and a file name, as MONAI's loaders give them, so that the workflows' MetaTensor handling is measured too.
_OPTIONS: dict[str, Any] = {"threads": 1, "meta": False}
_NAME = "evaluator_unet3d"

Batch = dict[str, torch.Tensor]
Builder = Callable[[int], Callable[[], float | None]]


def _network() -> torch.nn.Module:
    """The same small UNet for every provider: initialised from one seed, without touching the global RNG."""
    from monai.networks.nets import UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=_CLASSES,
            channels=_CHANNELS,
            strides=(2,) * (len(_CHANNELS) - 1),
            num_res_units=0,
        )
    return net.to(_DEVICE).eval()


def _data(iterations: int) -> list[Batch]:
    """``iterations`` batch dicts holding the same tensors: the work per batch is measured, not the data's variety."""
    generator = torch.Generator().manual_seed(0)
    shape = (_BATCH, 1, _SIDE, _SIDE, _SIDE)
    image = torch.randn(shape, generator=generator)  # image: [B, 1, 64, 64, 64]
    label = torch.randint(0, _CLASSES, shape, generator=generator).float()  # label map, float as loaders give it
    batch = _meta_batch(image, label) if _OPTIONS["meta"] else {"image": image, "label": label}
    return [batch for _ in range(iterations)]


def _meta_batch(image: torch.Tensor, label: torch.Tensor) -> Batch:
    """``{"image", "label"}`` as MONAI's ``DataLoader`` collates per-sample MetaTensors: batch MetaTensors."""
    from monai.data import MetaTensor, list_data_collate

    samples = [
        {
            "image": MetaTensor(image[i], affine=torch.eye(4), meta={"filename_or_obj": f"img{i}.nii.gz"}),
            "label": MetaTensor(label[i], affine=torch.eye(4), meta={"filename_or_obj": f"lbl{i}.nii.gz"}),
        }
        for i in range(len(image))
    ]
    return list_data_collate(samples)


def _postprocessing() -> Any:
    from monai.transforms import Activationsd, AsDiscreted, Compose

    return Compose(
        [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys="pred", argmax=True, to_onehot=_CLASSES),
            AsDiscreted(keys="label", to_onehot=_CLASSES),
        ]
    )


def _monai_mean_dice() -> Any:
    from monai.handlers import MeanDice, from_engine

    return MeanDice(include_background=True, output_transform=from_engine(["pred", "label"]))


def _scoped_threads(run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` with ``_OPTIONS["threads"]`` intra-op threads on the CPU, the caller's count restored after it."""
    if _DEVICE.type != "cpu":
        return run

    def scoped() -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(_OPTIONS["threads"])
        try:
            return run()
        finally:
            torch.set_num_threads(threads)

    return scoped


def _bare(iterations: int) -> Callable[[], None]:
    data = _data(iterations)

    def run() -> None:
        for _ in data:
            pass

    return _scoped_threads(run)


def _raw(iterations: int) -> Callable[[], float]:
    from monai.metrics import DiceMetric

    network, data = _network(), _data(iterations)
    metric = DiceMetric(include_background=True, reduction="mean")

    def run() -> float:
        with torch.no_grad():
            for batch in data:
                logits = network(batch["image"].to(_DEVICE))  # logits: [B, C, 64, 64, 64]
                index = torch.softmax(logits.float(), dim=1).argmax(dim=1, keepdim=True)
                pred = torch.zeros_like(logits).scatter_(1, index, 1.0)
                target = torch.zeros_like(logits).scatter_(1, batch["label"].to(_DEVICE).long(), 1.0)
                metric(y_pred=pred, y=target)
        value = metric.aggregate()  # reduction="mean": one tensor
        metric.reset()
        return float(value)  # type: ignore[arg-type]

    return _scoped_threads(run)


def _evaluator_run(evaluator: Any) -> Callable[[], float]:
    def run() -> float:
        evaluator.run()
        value = float(evaluator.state.metrics["dice"])
        # The last batch and output stay in ``state`` until the next run replaces them: released here so that a round
        # starts from the same memory as the hand-written loop (the peak-memory measurement starts between rounds).
        evaluator.state.batch = evaluator.state.output = None
        return value

    return _scoped_threads(run)


def _supervised_evaluator(module: str, iterations: int) -> Callable[[], float]:
    """``module.SupervisedEvaluator`` (``monai.engines`` or ``hotloop.workflows``) built from the same user code."""
    evaluator = importlib.import_module(module).SupervisedEvaluator(
        device=_DEVICE,
        val_data_loader=_data(iterations),
        network=_network(),
        postprocessing=_postprocessing(),
        key_val_metric={"dice": _monai_mean_dice()},
    )
    return _evaluator_run(evaluator)


def _logits_and_labels(output: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return output["pred"], output["label"]


def _hotloop_fused(iterations: int) -> Callable[[], float]:
    from hotloop.metrics import MeanDice
    from hotloop.workflows import SupervisedEvaluator

    metric = MeanDice(include_background=True, activation="softmax", output_transform=_logits_and_labels)
    evaluator = SupervisedEvaluator(
        device=_DEVICE,
        val_data_loader=_data(iterations),
        network=_network(),
        decollate=False,
        key_val_metric={"dice": metric},
    )
    return _evaluator_run(evaluator)


def _scenarios() -> list[Scenario]:
    if UNAVAILABLE:
        return []
    providers: dict[str, Builder] = {
        "bare": _bare,
        "raw": _raw,
        "monai": partial(_supervised_evaluator, "monai.engines"),
        "hotloop": partial(_supervised_evaluator, "hotloop.workflows"),
        "hotloop_fused": _hotloop_fused,
    }
    return [
        Scenario(
            name=_NAME,
            description=(
                f"SupervisedEvaluator, 3D UNet {_CHANNELS}, {_CLASSES} classes, batch {_BATCH} of {_SIDE}³, "
                f"softmax/argmax/one-hot + MeanDice, {_DEVICE}"
            ),
            iterations=_ITERATIONS,
            quick_iterations=_QUICK_ITERATIONS,
            providers=providers,
            baseline="bare",
            original="monai",
            target=_TARGET_SPEEDUP,
        )
    ]


SCENARIOS: list[Scenario] = _scenarios()


# ---------------------------------------------------------------------------------------------------------------------
# standalone run: time, peak extra memory, metric values
# ---------------------------------------------------------------------------------------------------------------------


def _child_peak_extra(provider: str, iterations: int) -> int:
    """In the child: bytes of peak memory above the memory before one round (after a warm-up round)."""
    return _memory.peak_extra_bytes(SCENARIOS[0].providers[provider](iterations), cuda=_DEVICE.type == "cuda")


def _peak_extra(provider: str, iterations: int) -> int | None:
    """Peak extra bytes of one round of ``provider``, measured in a fresh process; ``None`` off Linux."""
    args = [provider, str(iterations), "--threads", str(_OPTIONS["threads"]), *(["--meta"] if _OPTIONS["meta"] else [])]
    return _memory.measure_in_child("hotloop.bench.cases.evaluator_monai", args, f"{provider!r}")


def _time(scenario: Scenario, iterations: int, rounds: int) -> tuple[dict[str, dict[str, list[float]]], dict[str, Any]]:
    """Runs the providers interleaved, one warm-up round then ``rounds`` timed rounds.

    Returns:
        Wall and CPU seconds per batch of each round, by provider (CPU time, all threads of the process, is steadier
        than wall time on a shared machine), and each provider's last metric value.
    """
    runs = {name: build(iterations) for name, build in scenario.providers.items()}
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runs}
    values: dict[str, Any] = {}
    for round_index in range(rounds + 1):
        for name, run in runs.items():
            gc.collect()
            device_sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            values[name] = run()
            device_sync()
            if round_index:
                samples[name]["wall"].append((time.perf_counter() - start) / iterations)
                samples[name]["cpu"].append((time.process_time() - cpu_start) / iterations)
    return samples, values


def _measure(iterations: int, rounds: int, memory: bool) -> dict[str, Any]:
    scenario = SCENARIOS[0]
    samples, values = _time(scenario, iterations, rounds)
    peaks = {name: _peak_extra(name, iterations) if memory else None for name in scenario.providers if name != "bare"}
    wall = {name: statistics.median(times["wall"]) for name, times in samples.items()}
    cpu = {name: statistics.median(times["cpu"]) for name, times in samples.items()}
    exact = [values[name] for name in ("raw", "monai", "hotloop")]
    return {
        "scenario": scenario.name,
        "device": str(_DEVICE),
        "batches": "MetaTensor" if _OPTIONS["meta"] else "Tensor",
        "iterations": iterations,
        "rounds": rounds,
        "ms_per_batch": {
            name: {"median": wall[name] * 1e3, "min": min(samples[name]["wall"]) * 1e3, "cpu_median": cpu[name] * 1e3}
            for name in samples
        },
        "peak_extra_mib": {name: None if b is None else b / 2**20 for name, b in peaks.items()},
        "mean_dice": {name: value for name, value in values.items() if name != "bare"},
        "identical_metric": all(value == exact[0] for value in exact),
        "fused_metric_difference": abs(values["hotloop_fused"] - values["monai"]),
        "speedup_vs_monai": wall["monai"] / wall["hotloop"],
        "speedup_fused_vs_monai": wall["monai"] / wall["hotloop_fused"],
        "cpu_speedup_vs_monai": cpu["monai"] / cpu["hotloop"],
        "cpu_speedup_fused_vs_monai": cpu["monai"] / cpu["hotloop_fused"],
    }


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}×" if denominator > 0 else "n/a"


def _table(result: dict[str, Any]) -> str:
    times, memory, dice = result["ms_per_batch"], result["peak_extra_mib"], result["mean_dice"]
    lines = [
        "| provider | ms/batch (median) | ms/batch (min) | monai ÷ provider | CPU ms/batch | monai ÷ provider (CPU) | "
        "peak extra MiB | mean Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, stats in times.items():
        bare = name == "bare"
        mib, value = memory.get(name), dice.get(name)
        lines.append(
            f"| {name} | {stats['median']:.1f} | {stats['min']:.1f} | "
            f"{'' if bare else _ratio(times['monai']['median'], stats['median'])} | {stats['cpu_median']:.1f} | "
            f"{'' if bare else _ratio(times['monai']['cpu_median'], stats['cpu_median'])} | "
            f"{'' if mib is None else f'{mib:.1f}'} | {'' if value is None else repr(value)} |"
        )
    lines.append(
        f"\n{result['scenario']} on {result['device']}, {result['batches']} batches: "
        f"hotloop {result['speedup_vs_monai']:.2f}× MONAI's throughput "
        f"({result['cpu_speedup_vs_monai']:.2f}× in CPU time; hotloop_fused {result['speedup_fused_vs_monai']:.2f}×, "
        f"{result['cpu_speedup_fused_vs_monai']:.2f}×); metric identical (raw, monai, hotloop): "
        f"{result['identical_metric']}; |hotloop_fused − monai| = {result['fused_metric_difference']:.3g}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Times every provider, measures their peak extra memory and prints a Markdown table with the metric values.

    Args:
        argv: Command-line arguments; ``None`` reads ``sys.argv``.

    Returns:
        0; 1 when the metric values of ``raw``, ``monai`` and ``hotloop`` differ; 2 without MONAI or
        ``hotloop.workflows``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hotloop.bench.cases.evaluator_monai", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per provider (default 5)")
    parser.add_argument("--iterations", type=int, default=_ITERATIONS, help="batches per round (default 4)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each round on the CPU (default 1)")
    parser.add_argument(
        "--meta", action="store_true", help="MetaTensor batches, as MONAI's DataLoader collates them (default: tensors)"
    )
    parser.add_argument("--child", nargs=2, metavar=("PROVIDER", "ITERATIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _OPTIONS["threads"] = args.threads
    _OPTIONS["meta"] = args.meta
    if args.child:
        print(json.dumps({"peak_extra_bytes": _child_peak_extra(args.child[0], int(args.child[1]))}))
        return 0
    if not SCENARIOS:
        print(f"evaluator_monai: {UNAVAILABLE}", file=sys.stderr)
        return 2
    result = _measure(args.iterations, args.rounds, memory=not args.no_memory)
    print(_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["identical_metric"] else 1


if __name__ == "__main__":
    sys.exit(main())
