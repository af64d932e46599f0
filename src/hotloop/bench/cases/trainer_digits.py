"""Trainer throughput: a small CNN on scikit-learn's digits (8x8 images, shipped inside scikit-learn).

One scenario, ``trainer_digits``: the same model, optimizer, data and seed trained by

- ``raw``: a hand-written loop (zero_grad, forward, loss, backward, step, ``loss.item()``);
- ``ignite``: ``ignite.engine.create_supervised_trainer``;
- ``hotloop``: ``hotloop.create_supervised_trainer`` with Ignite's arguments only (eager);
- ``hotloop_nosync``: the same with ``no_sync=True`` (the loss stays on the device);
- ``hotloop_compiled``: ``compile=True`` (inductor; compile time is spent in the warm-up round, not timed);
- ``hotloop_auto``: ``compile="auto"`` (the fastest build, measured on the first iterations; shown beside it).

Each provider owns its model and optimizer (same initial weights), so rounds do not disturb each other. A round is
``iterations`` optimizer steps over batches of 64. The scenario is measured by throughput: each provider's whole time
per step and samples/s = 64 / (µs per step) · 1e6, and hotloop's speed-up over Ignite (the median of the per-round
ratios); a trainer's overhead over the bare loop is lost in the step's own noise here. ``raw``, ``ignite``,
``hotloop`` and ``hotloop_nosync`` run the same steps: they must end on the same loss.
"""

from __future__ import annotations

import itertools

import ignite.engine as ie
import torch

import hotloop
from hotloop._optional import SKLEARN, missing_message

from . import Scenario
from ._training import engine, raw_loop

__all__ = ["BATCH_SIZE", "SCENARIOS", "UNAVAILABLE", "digits_batches", "make_model"]

#: Why this case cannot run here (a package is missing), or ``None``.
UNAVAILABLE: str | None = missing_message("the trainer_digits case (scikit-learn's digits)", SKLEARN)
BATCH_SIZE = 64
_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def digits_batches(batch_size: int = BATCH_SIZE, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Full batches of the digits dataset as ``[B, 1, 8, 8]`` float images in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # x: [1797, 1, 8, 8]
    y = torch.tensor(digits.target, dtype=torch.int64)
    n = (len(x) // batch_size) * batch_size
    return [(x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)) for i in range(0, n, batch_size)]


def make_model(seed: int = 0) -> torch.nn.Module:
    """The benchmark's CNN: two 3x3 convolutions, a max-pool and a linear classifier (about 12k parameters)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 4 * 4, 10),
    )


def _setup() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.nn.Module]:
    model = make_model().to(_DEVICE)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), torch.nn.CrossEntropyLoss()


def _round_data(iterations: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(itertools.cycle(digits_batches(device=str(_DEVICE))), iterations))


_HOTLOOP = hotloop.create_supervised_trainer


SCENARIOS: list[Scenario] = (
    []
    if UNAVAILABLE
    else [
        Scenario(
            name="trainer_digits",
            description=f"2-conv CNN on sklearn digits, batch {BATCH_SIZE}, SGD, device {_DEVICE}",
            iterations=56,
            quick_iterations=8,
            providers={
                "raw": raw_loop(_setup, _round_data, _DEVICE),
                "ignite": engine(ie.create_supervised_trainer, _setup, _round_data, _DEVICE),
                "hotloop": engine(_HOTLOOP, _setup, _round_data, _DEVICE),
                "hotloop_nosync": engine(_HOTLOOP, _setup, _round_data, _DEVICE, no_sync=True),
                "hotloop_compiled": engine(_HOTLOOP, _setup, _round_data, _DEVICE, compile=True),
                "hotloop_auto": engine(_HOTLOOP, _setup, _round_data, _DEVICE, compile="auto"),
            },
            metric="throughput",
            batch_size=BATCH_SIZE,
            same_steps=("raw", "ignite", "hotloop", "hotloop_nosync"),
        ),
    ]
)
