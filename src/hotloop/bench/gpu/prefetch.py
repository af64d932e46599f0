"""Input copies on the GPU: hotloop's pinned, side-stream prefetch against a plain ``.to(device)`` per batch.

A small CNN trains on batches of 256 images of 3×96×96 (28 MB each) that live on the host, through
``hotloop.create_supervised_trainer(no_sync=True)``; providers, interleaved round by round:

- ``resident``: the batches already on the device (no copy at all: the floor);
- ``plain``: ``prefetch=False``: each batch copied by ``prepare_batch`` (pageable memory, blocking);
- ``prefetch``: ``prefetch=True`` on pageable batches (hotloop pins each one, then copies it on a side stream);
- ``prefetch_pinned``: ``prefetch=True`` on batches already pinned (as ``DataLoader(pin_memory=True)`` gives them).

The copies alone are timed too (pageable ``.to(device)``, pinned ``.to(device, non_blocking=True)``), for the
host-to-device GB/s. "Copy hidden" is the share of the input cost that prefetching removes:
``(plain − prefetch_pinned) / (plain − resident)``; 100 % means the copy is fully overlapped with the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import hotloop
from hotloop.bench.cases import Scenario

from ._common import Context, Rounds, fmt, markdown_table, measure, stats, time_calls

__all__ = ["run"]


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 10),
        )


def _host_batches(ctx: Context, pinned: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batch, side = ctx.pick((256, 96), (4, 16))
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(batch, 3, side, side, generator=generator), torch.randint(0, 10, (batch,), generator=generator))
        for _ in range(4)
    ]
    if pinned and ctx.cuda:
        batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]
    return batches


def _provider(ctx: Context, where: str, prefetch: bool) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        batches = _host_batches(ctx, pinned=where == "pinned")
        if where == "device":
            batches = [(x.to(ctx.device), y.to(ctx.device)) for x, y in batches]
        data = [batches[i % len(batches)] for i in range(iterations)]
        model = _model().to(ctx.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        trainer = hotloop.create_supervised_trainer(
            model, optimizer, nn.CrossEntropyLoss(), device=ctx.device, no_sync=True, prefetch=prefetch
        )
        return lambda: trainer.run(data, max_epochs=1)

    return build


def _copies(ctx: Context, reps: int) -> dict[str, Any]:
    """Host-to-device copies of one batch: pageable (blocking) and pinned (non-blocking), GB/s."""
    pageable = _host_batches(ctx, pinned=False)[0][0]
    pinned = pageable.pin_memory() if ctx.cuda else pageable
    samples = time_calls(
        {
            "pageable": lambda: pageable.to(ctx.device),
            "pinned": lambda: pinned.to(ctx.device, non_blocking=True),
        },
        reps,
        warmup=2,
    )
    return {
        name: {"us": stats(values), "gb_per_s": pageable.nbytes / stats(values)["median"] / 1e3}
        for name, values in samples.items()
    } | {"bytes": pageable.nbytes}


def _markdown(summary: dict[str, Any], copies: dict[str, Any], hidden: float | None, rounds: Rounds) -> str:
    providers = summary.get("providers", {})
    rows = [
        [name, fmt(p["us_per_iter"]["median"]), f"{fmt(p['us_per_iter']['q1'])}–{fmt(p['us_per_iter']['q3'])}"]
        for name, p in providers.items()
    ]
    hidden_text = "n/a" if hidden is None else f"{100 * hidden:.0f} %"
    return "\n".join(
        [
            "## Prefetch: host batches of "
            f"{copies['bytes'] / 2**20:.3g} MiB, a small CNN, `create_supervised_trainer(no_sync=True)`",
            "",
            f"Host → device copy of one batch: pageable {fmt(copies['pageable']['gb_per_s'])} GB/s "
            f"({fmt(copies['pageable']['us']['median'])} µs), pinned non-blocking "
            f"{fmt(copies['pinned']['gb_per_s'])} GB/s ({fmt(copies['pinned']['us']['median'])} µs). "
            f"Copy hidden by prefetch (pinned batches): {hidden_text}. {rounds.rounds} rounds of "
            f"{rounds.iterations} steps, interleaved.",
            "",
            markdown_table(["provider", "µs/step (median)", "µs/step (IQR)"], rows),
        ]
    )


def run(ctx: Context) -> dict[str, Any]:
    """The four input paths and the copies alone."""
    rounds = ctx.pick(Rounds(40, 2, 7), Rounds(2, 1, 2))
    scenario = Scenario(
        name="prefetch",
        description="host batches through hotloop's trainer: resident, plain copy, prefetch, prefetch of pinned",
        iterations=rounds.iterations,
        quick_iterations=rounds.iterations,
        providers={
            "resident": _provider(ctx, "device", prefetch=False),
            "plain": _provider(ctx, "pageable", prefetch=False),
            "prefetch": _provider(ctx, "pageable", prefetch=True),
            "prefetch_pinned": _provider(ctx, "pinned", prefetch=True),
        },
        reference="resident",
        baseline="resident",
        original="plain",
        candidate="prefetch_pinned",
    )
    summary = measure(ctx, "prefetch", scenario, rounds)
    copies = _copies(ctx, ctx.pick(20, 2))
    median = {name: p["us_per_iter"]["median"] for name, p in summary.get("providers", {}).items()}
    hidden = None
    measured = {"resident", "plain", "prefetch_pinned"} <= set(median) and median["plain"] > median["resident"]
    if ctx.cuda and measured:  # on the CPU there is no copy to hide: prefetch passes batches through
        hidden = (median["plain"] - median["prefetch_pinned"]) / (median["plain"] - median["resident"])
    ctx.check("every provider ran", not summary.get("failed"), str(summary.get("failed") or "all ran"))
    return ctx.result(
        "prefetch",
        summary=summary,
        copies=copies,
        copy_hidden=hidden,
        markdown=_markdown(summary, copies, hidden, rounds),
    )
