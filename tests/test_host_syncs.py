"""No host sync per iteration on any hot path, counted on the device the tests run on.

On CUDA, torch's sync debug mode reports every synchronizing CUDA call (``torch.cuda.set_sync_debug_mode("warn")``);
on the CPU, sentinels on the tensor methods that read a value back to the host (``item``, ``cpu``, ``__bool__`` ...)
count those reads, as the other no-sync tests do. Each path runs once to warm up (compile, graph capture), then n and
2n iterations; syncs per iteration = (count at 2n − count at n) / n, so that what a run does once (set-up, the epoch's
metric) cancels out. Ignite's default trainer, which reads ``loss.item()`` every step, is the control: it must count
at least one per iteration, so that a counter that sees nothing fails.

The CUDA half is marked ``gpu``: ``./dev gpu`` runs it (docs/gpu.md). On the CPU, CUDA graphs run on the fake
backend (:mod:`hotloop.step._fake_graphs`) and ``compile="auto"`` is eager.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ignite.engine as ie
import pytest
import torch
from torch import nn

import hotloop
from hotloop.metrics import Accuracy, MeanDice
from hotloop.step import graphed
from hotloop.step._fake_graphs import FakeBackend
from hotloop.workflows import SupervisedEvaluator

_HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
_ITERATIONS = 4  # the warm-up run's 4th iteration is the CUDA-graph capture (3 eager warm-up iterations first)

Run = Callable[[int], object]


@contextmanager
def _host_syncs(device: torch.device) -> Iterator[list[str]]:
    """Where each host sync of the block happened (``file:line``), by the sync debug mode on CUDA, else sentinels."""
    found: list[str] = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield found
            finally:
                torch.cuda.set_sync_debug_mode("default")
        found += [f"{w.filename}:{w.lineno}" for w in caught if "synchronizing CUDA operation" in str(w.message)]
        return
    originals = {name: getattr(torch.Tensor, name) for name in _HOST_READS}

    def sentinel(name: str) -> Callable[..., Any]:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            found.append(f"Tensor.{name} at {caller.f_code.co_filename}:{caller.f_lineno}")
            return originals[name](self, *args, **kwargs)

        return read

    try:
        for name in _HOST_READS:
            setattr(torch.Tensor, name, sentinel(name))
        yield found
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def _classifier(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).to(device)


def _images(device: torch.device | str, iterations: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 1, 8, 8, generator=generator), torch.randint(0, 10, (16,), generator=generator))]
    return [(x.to(device), y.to(device)) for x, y in batches] * iterations


def _trainer(device: torch.device, make: Callable[..., Any] = hotloop.create_supervised_trainer, **options: Any) -> Run:
    model = _classifier(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    host = options.pop("host_batches", False)
    trainer = make(model, optimizer, nn.CrossEntropyLoss(), device=device, **options)
    return lambda n: trainer.run(_images("cpu" if host else device, n), max_epochs=1)


def _evaluator(device: torch.device) -> Run:
    """Ignite's evaluator API, hotloop's fused ``Accuracy``, graphed where possible, batches prefetched."""
    evaluator = hotloop.create_supervised_evaluator(
        _classifier(device), metrics={"accuracy": Accuracy()}, device=device, cuda_graphs="auto", prefetch=True
    )
    return lambda n: evaluator.run(_images("cpu", n))


def _segmentation_evaluator(device: torch.device) -> Run:
    """MONAI's workflow API, hotloop's fused ``MeanDice`` on logits and label maps, host batches prefetched (a
    blocking host-to-device copy is a sync: ``prefetch=True`` makes it a non-blocking one on a side stream)."""
    torch.manual_seed(0)
    network = nn.Conv3d(1, 3, 3, padding=1).to(device)
    generator = torch.Generator().manual_seed(2)
    batch = {"image": torch.randn(2, 1, 8, 8, 8, generator=generator), "label": torch.randint(0, 3, (2, 1, 8, 8, 8))}
    metric = MeanDice(activation="softmax", save_details=False, output_transform=lambda o: (o["pred"], o["label"]))
    data = [batch] * (2 * _ITERATIONS)
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=data,
        network=network,
        decollate=False,
        key_val_metric={"dice": metric},
        prefetch=True,
    )

    def run(n: int) -> None:
        evaluator.state.epoch_length = n  # MONAI's Evaluator.run() takes no epoch length; its state keeps one
        evaluator.run()

    return run


_NO_SYNC = {"no_sync": True}
PATHS: dict[str, Callable[[torch.device], Run]] = {
    "ignite_default_control": lambda device: _trainer(device, ie.create_supervised_trainer),
    "trainer_no_sync": lambda device: _trainer(device, **_NO_SYNC),
    "trainer_compile_auto": lambda device: _trainer(device, compile="auto", **_NO_SYNC),
    "trainer_cuda_graphs": lambda device: _trainer(device, cuda_graphs=True, **_NO_SYNC),
    "trainer_prefetch_amp": lambda device: _trainer(
        device, prefetch=True, amp_mode="amp", host_batches=True, **_NO_SYNC
    ),
    "evaluator_graphs_prefetch": _evaluator,
    "workflow_evaluator_fused_dice": _segmentation_evaluator,
}


def _syncs_per_iteration(path: str, device: torch.device) -> tuple[float, list[str]]:
    run = PATHS[path](device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AMP without CUDA, a DataLoader-less prefetch: not what is tested here
        run(_ITERATIONS)
        with _host_syncs(device) as once:
            run(_ITERATIONS)
        with _host_syncs(device) as twice:
            run(2 * _ITERATIONS)
    return (len(twice) - len(once)) / _ITERATIONS, twice


def _check(path: str, device: torch.device) -> None:
    per_iteration, where = _syncs_per_iteration(path, device)
    if path.endswith("_control"):
        assert per_iteration >= 1, f"the counter saw {per_iteration} syncs per iteration of loss.item(): it is blind"
    else:
        first = sorted(set(where))[:5]
        assert per_iteration == 0, f"{path}: {per_iteration} host syncs per iteration on {device}, at {first}"


@pytest.mark.parametrize("path", list(PATHS))
def test_no_host_sync_per_iteration_on_the_cpu(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())  # cuda_graphs=True resolves on the CPU
    _check(path, torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA syncs: needs a CUDA device")
@pytest.mark.parametrize("path", list(PATHS))
def test_no_host_sync_per_iteration_on_cuda(path: str) -> None:
    _check(path, torch.device("cuda"))
