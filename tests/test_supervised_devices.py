"""create_supervised_trainer's hot-path options give Ignite's results: on the CPU, and on CUDA (marked gpu).

The same training (two epochs, SGD with momentum, host batches moved by the trainer) with each option, against
Ignite's eager trainer with the same arguments: the per-iteration losses and the final weights agree. On the CPU,
CUDA graphs run on the fake backend (:mod:`hotloop.step._fake_graphs`), ``compile="auto"`` is eager and ``prefetch``
a pass-through; on CUDA they are the real thing (``./dev gpu`` runs them, docs/gpu.md).
"""

from __future__ import annotations

from typing import Any

import ignite.engine as ie
import pytest
import torch
from torch import nn

import hotloop
from hotloop.step import graphed
from hotloop.step._fake_graphs import FakeBackend

OPTIONS = {
    "compile_auto": {"compile": "auto"},
    "cuda_graphs": {"cuda_graphs": True},
    "prefetch": {"prefetch": True, "non_blocking": True},
    "all": {"compile": "auto", "cuda_graphs": "auto", "prefetch": True, "no_sync": True},
    "amp": {"amp_mode": "amp"},
}
# The compiled step may order floating-point sums differently from eager; replayed graphs run the same kernels.
_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
_AMP_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}  # float16 autocast: the same kernels, rounding to 11 bits
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 1, 6, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)) for _ in range(6)
    ]


def _train(
    make: Any, device: str, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[list[float], list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if device == "cpu":  # cuda_graphs resolves on the CPU; a capture rolls the model and optimizer back, as CUDA's does
        monkeypatch.setattr(graphed, "_backend", FakeBackend(model, optimizer))
    trainer = make(model, optimizer, nn.CrossEntropyLoss(), device=device, **options)
    losses: list[float] = []
    trainer.add_event_handler(ie.Events.ITERATION_COMPLETED, lambda engine: losses.append(float(engine.state.output)))
    trainer.run(_data(), max_epochs=2)
    return losses, [p.detach().cpu() for p in model.parameters()]


# amp on the CPU: torch's autocast("cuda") warns and disables itself, on Ignite's step and on hotloop's alike.
@pytest.mark.filterwarnings("ignore:CUDA is not available or torch_xla is imported:UserWarning")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(OPTIONS))
def test_options_give_ignites_losses_and_weights(name: str, device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # no atomics in cuDNN's backward on CUDA
    options = OPTIONS[name]
    ignite_options = {key: value for key, value in options.items() if key in ("amp_mode", "non_blocking")}
    expected_losses, expected_weights = _train(ie.create_supervised_trainer, device, monkeypatch, **ignite_options)
    losses, weights = _train(hotloop.create_supervised_trainer, device, monkeypatch, **options)
    tolerance = _AMP_TOLERANCE if name == "amp" else _TOLERANCE
    torch.testing.assert_close(losses, expected_losses, **tolerance)
    for got, expected in zip(weights, expected_weights, strict=True):
        torch.testing.assert_close(got, expected, **tolerance)
