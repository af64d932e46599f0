"""A tiny training run with Ignite checkpoints: run in a subprocess (killed or preempted) and in the test process.

``python _resume_worker.py '<json config>'``: see :func:`train` for the keys.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import ignite.engine as ie
import torch
from ignite.engine import Events
from ignite.engine.deterministic import ReproducibleBatchSampler, update_dataloader
from ignite.handlers import Checkpoint, DiskSaver
from torch.utils.data import DataLoader, TensorDataset

import hotloop
from hotloop.reliability import PreemptionHandler, RNGState, resume_from_latest

N_SAMPLES, BATCH = 40, 8  # 5 iterations per epoch


def _loader(eager_sampler: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(123)
    ds = TensorDataset(torch.randn(N_SAMPLES, 4, generator=g), torch.randn(N_SAMPLES, 1, generator=g))
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True)
    if eager_sampler:
        loader = update_dataloader(loader, _EagerReproducibleBatchSampler(loader.batch_sampler))
    return loader


class _EagerReproducibleBatchSampler(ReproducibleBatchSampler):
    """A user's own sampler that draws the epoch's batch indices when ``iter()`` is called (kept by the engine).

    Ignite's ``__iter__`` is a generator, so the indices are drawn at the first ``next()``; when a run resumes in
    the middle of an epoch, ``DeterministicEngine._setup_engine`` restores the saved random state between
    ``iter()`` and that ``next()``, and the resumed epoch gets another permutation than the interrupted one had.
    """

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        self.setup_batch_indices()
        return iter(self.batch_indices)


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Keys: ``dirname``, ``deterministic``, ``max_epochs``, ``every`` (checkpoint period in iterations), and
    optionally ``kill_at`` (SIGKILL self after that iteration), ``resume``, ``epoch_length``, ``preempt``
    (install a PreemptionHandler and print READY at ``ready_at``, then slow down), ``out`` (write final state)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.9)
    factory = ie.create_supervised_trainer if cfg.get("ignite") else hotloop.create_supervised_trainer
    trainer = factory(model, optimizer, torch.nn.MSELoss(), deterministic=cfg["deterministic"])
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())
    to_save = {"model": model, "optimizer": optimizer, "lr_scheduler": scheduler, "trainer": trainer}
    if not cfg["deterministic"]:
        # DeterministicEngine saves and restores the random states itself (``rng_states``); restoring them before
        # run() would also change the seed it draws at the start of every run (``state.seed`` is not saved).
        to_save["rng"] = RNGState()
    checkpoint = Checkpoint(to_save, DiskSaver(cfg["dirname"], require_empty=False), n_saved=2)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=cfg["every"]) | Events.TERMINATE, checkpoint)
    if cfg.get("kill_at"):
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=cfg["kill_at"]), lambda _: os.kill(os.getpid(), signal.SIGKILL)
        )
    preemption = PreemptionHandler().attach(trainer) if cfg.get("preempt") else None
    if preemption is not None:
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=cfg["ready_at"]), lambda _: print("READY", flush=True)
        )
        trainer.add_event_handler(Events.ITERATION_COMPLETED(after=cfg["ready_at"]), lambda _: time.sleep(0.05))
    loaded = resume_from_latest(cfg["dirname"], to_save) if cfg.get("resume") else None
    start_iteration = trainer.state.iteration
    kwargs = {"epoch_length": cfg["epoch_length"]} if cfg.get("epoch_length") else {}
    trainer.run(_loader(cfg.get("eager_sampler", False)), max_epochs=cfg["max_epochs"], **kwargs)
    result = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": trainer.state.iteration,
        "epoch": trainer.state.epoch,
        "start_iteration": start_iteration,
        "loaded": str(loaded) if loaded else None,
        "stopped": preemption.stopped if preemption is not None else False,
    }
    if cfg.get("out"):
        torch.save(result, cfg["out"])
    return result


if __name__ == "__main__":
    outcome = train(json.loads(sys.argv[1]))
    sys.exit(143 if outcome["stopped"] else 0)
