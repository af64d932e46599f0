"""Training steps on the GPU: Ignite, hotloop's options and Lightning on a small CNN and a small transformer.

Two workloads where launch overhead matters (parts ``trainer_cnn`` and ``trainer_transformer``, one child process
each): the digits CNN of :mod:`hotloop.bench.cases.trainer_digits` (batch 64 of 8×8 images, SGD with momentum) and a
2-block transformer classifier (d=128, 4 heads, sequence 32, batch 32, AdamW; issue 18's CPU workload). Every
provider owns its model and optimizer, initialised alike, and trains on the same batches, already on the device (the
input copy is the ``prefetch`` part's business):

- ``raw``: the hand-written loop (zero_grad, forward, loss, backward, step), the reference;
- ``ignite``: ``ignite.engine.create_supervised_trainer`` (its default output, ``loss.item()``: a sync per step);
- ``hotloop``: ``hotloop.create_supervised_trainer`` with Ignite's arguments only (the same sync);
- ``hotloop_nosync``: ``no_sync=True`` (the loss stays on the device);
- ``hotloop_auto``: ``compile="auto"`` and ``no_sync=True`` (its choice, ``trainer.step_choice``, is shown beside it);
- ``hotloop_graphs``: ``cuda_graphs=True`` and ``no_sync=True`` (the whole step replayed from one CUDA graph);
- ``lightning``: ``lightning.pytorch.Trainer.fit`` (logger, checkpointing, progress bar, model summary and sanity
  check off), one fit per round, timed from its epoch start to its epoch end by a callback (device synced), i.e.
  without the set-up that each ``fit`` pays (:func:`hotloop.bench.cases._training.lightning`, shared with
  ``hotloop bench``); ``lightning_fit``: the same rounds timed around the whole ``fit``, set-up included.

samples/s = batch size / time per step. Speed-ups are median against median, ``ignite`` (and ``lightning``) over the
provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import ignite.engine as ie
import torch
from torch import nn

import hotloop
from hotloop.bench.cases import Round, Scenario, trainer_digits
from hotloop.bench.cases._training import TinyTransformer, auto_choice, lightning, seeded

from ._common import Context, Rounds, fmt, markdown_table, measure, ratio, times

__all__ = ["run_cnn", "run_transformer"]

_Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Workload:
    """A model, its optimizer and its batches.

    Args:
        name: The scenario name.
        description: One line for the report.
        batch_size: Samples per step.
        model: Builds the model (the same initial weights at every call).
        optimizer: Builds the optimizer over a model's parameters.
        batches: A few distinct batches on a device.
    """

    name: str
    description: str
    batch_size: int
    model: Callable[[], nn.Module]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    batches: Callable[[torch.device], list[_Batch]]


def cnn(ctx: Context) -> Workload:
    """The digits CNN of ``trainer_digits``: batch 64 of 8×8 images, SGD with momentum."""
    size = trainer_digits.BATCH_SIZE
    return Workload(
        name="cnn",
        description=f"2-conv CNN on sklearn digits (8×8), batch {size}, SGD momentum",
        batch_size=size,
        model=partial(trainer_digits.make_model, 0),
        optimizer=lambda model: torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        batches=lambda device: trainer_digits.digits_batches(size, str(device))[:8],
    )


def transformer(ctx: Context) -> Workload:
    """Issue 18's transformer: d=128, 4 heads, 2 blocks, sequence 32, batch 32, AdamW.

    In a dry run: tiny, and SGD, since the fake graph backend cannot replay AdamW (a CUDA graph needs its
    ``capturable=True``, which refuses parameters on the CPU).
    """
    width, length, batch = ctx.pick((128, 32, 32), (16, 8, 4))
    vocab, classes = 1000, 10
    optimizer: Callable[[nn.Module], torch.optim.Optimizer] = ctx.pick(
        lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3),
        lambda model: torch.optim.SGD(model.parameters(), lr=1e-3),
    )

    def batches(device: torch.device) -> list[_Batch]:
        generator = torch.Generator().manual_seed(0)
        return [
            (
                torch.randint(0, vocab, (batch, length), generator=generator).to(device),
                torch.randint(0, classes, (batch,), generator=generator).to(device),
            )
            for _ in range(8)
        ]

    return Workload(
        name="transformer",
        description=(
            f"2-block transformer classifier, d={width}, 4 heads, seq {length}, batch {batch}, "
            f"{ctx.pick('AdamW', 'SGD')}"
        ),
        batch_size=batch,
        model=seeded(lambda: TinyTransformer(vocab, width, 4, 2, length, classes)),
        optimizer=optimizer,
        batches=batches,
    )


def _round_data(workload: Workload, device: torch.device, iterations: int) -> list[_Batch]:
    batches = workload.batches(device)
    return [batches[i % len(batches)] for i in range(iterations)]


def _setup(workload: Workload, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    model = workload.model().to(device)
    return model, workload.optimizer(model), nn.CrossEntropyLoss()


def _raw(workload: Workload, device: torch.device) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        model, optimizer, loss_fn = _setup(workload, device)
        data = _round_data(workload, device, iterations)

        def run() -> None:
            model.train()
            for x, y in data:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()

        return run

    return build


def _engine(workload: Workload, device: torch.device, make: Callable, **options: Any) -> Callable:
    def build(iterations: int) -> Callable[[], object]:
        model, optimizer, loss_fn = _setup(workload, device)
        trainer = make(model, optimizer, loss_fn, device=device, **options)
        data = _round_data(workload, device, iterations)

        def run() -> Round:
            trainer.run(data, max_epochs=1)
            return Round(choice=auto_choice(trainer))

        return run

    return build


def _scenario(workload: Workload, device: torch.device, fit_seconds: list[float]) -> Scenario:
    nosync = {"no_sync": True}
    return Scenario(
        name=workload.name,
        description=workload.description,
        iterations=1,
        quick_iterations=1,
        providers={
            "raw": _raw(workload, device),
            "ignite": _engine(workload, device, ie.create_supervised_trainer),
            "hotloop": _engine(workload, device, hotloop.create_supervised_trainer),
            "hotloop_nosync": _engine(workload, device, hotloop.create_supervised_trainer, **nosync),
            "hotloop_auto": _engine(workload, device, hotloop.create_supervised_trainer, compile="auto", **nosync),
            "hotloop_graphs": _engine(workload, device, hotloop.create_supervised_trainer, cuda_graphs=True, **nosync),
            "lightning": lightning(
                partial(_setup, workload, device), partial(_round_data, workload, device), device, fit_seconds
            ),
        },
        original="ignite",
        candidate="hotloop_graphs",
    )


def _rows(summary: dict[str, Any], batch_size: int) -> list[list[str]]:
    providers = summary["providers"]
    median = {name: p["us_per_iter"]["median"] for name, p in providers.items()}
    rows = []
    for name, provider in providers.items():
        per_step = provider["us_per_iter"]
        rate = batch_size / per_step["median"] * 1e6
        spread = f"{batch_size / per_step['q3'] * 1e6:,.0f}–{batch_size / per_step['q1'] * 1e6:,.0f}"
        first = summary["first_round_s"].get(name)
        rows.append(
            [
                summary["scenario"],
                name,
                f"{rate:,.0f}",
                spread,
                fmt(per_step["median"]),
                times(ratio(median.get("ignite"), median[name])),
                times(ratio(median.get("lightning"), median[name])),
                "" if first is None else f"{first:.1f}",
            ]
        )
    return rows


def _markdown(ctx: Context, workload: Workload, summary: dict[str, Any], rounds: Rounds) -> str:
    title = f"## Trainer steps: {workload.description}"
    if "error" in summary:
        return f"{title}\n\nNot measured: {summary['error']}; failed providers: {summary['failed']}"
    header = ["workload", "provider", "samples/s", "samples/s (IQR)", "µs/step", "× Ignite", "× Lightning"]
    table = markdown_table(header + ["first round s"], _rows(summary, workload.batch_size))
    auto = summary["providers"].get("hotloop_auto", {}).get("choice")
    lines = [
        title,
        "",
        f"{rounds.rounds} rounds of {rounds.iterations} steps after {rounds.warmup} warm-up rounds, providers "
        "interleaved round by round; the first round (compile, capture, Lightning's set-up) is not timed. "
        f'`compile="auto"` on {ctx.device} chose: {auto or "(hotloop_auto failed)"}.',
        "",
        table,
    ]
    return "\n".join(lines)


def _run(ctx: Context, workload: Workload, rounds: Rounds) -> dict[str, Any]:
    fit_seconds: list[float] = []
    scenario = _scenario(workload, ctx.device, fit_seconds)

    def fit_samples(count: int) -> list[float]:
        return [seconds / rounds.iterations * 1e6 for seconds in fit_seconds[-count:]]

    extra = {"lightning_fit": fit_samples} if "lightning" in scenario.providers else {}
    summary = measure(ctx, f"trainer_{workload.name}", scenario, rounds, extra)
    if "providers" in summary:
        ctx.check(
            f"{workload.name}: every provider ran",
            not summary["failed"],
            ", ".join(f"{name}: {error}" for name, error in summary["failed"].items()) or "all ran",
        )
    return ctx.result(
        f"trainer_{workload.name}",
        workload=workload.description,
        batch_size=workload.batch_size,
        rounds=rounds.__dict__,
        summary=summary,
        markdown=_markdown(ctx, workload, summary, rounds),
    )


def run_cnn(ctx: Context) -> dict[str, Any]:
    """The CNN workload (part ``trainer_cnn``)."""
    return _run(ctx, cnn(ctx), ctx.pick(Rounds(200, 2, 7), Rounds(3, 1, 1)))


def run_transformer(ctx: Context) -> dict[str, Any]:
    """The transformer workload (part ``trainer_transformer``)."""
    return _run(ctx, transformer(ctx), ctx.pick(Rounds(100, 2, 7), Rounds(3, 1, 1)))
