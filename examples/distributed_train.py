"""Train and evaluate a small classifier with hotloop: the same script on 1 CPU, 1 GPU, N GPUs or N nodes.

    python examples/distributed_train.py                                  # one process: CPU, or the GPU if any
    torchrun --nproc-per-node 2 examples/distributed_train.py             # 2 processes: gloo on CPU, NCCL on GPUs
    python examples/distributed_train.py --nproc-per-node 2               # the same, spawned by idist.Parallel
    srun --nodes 2 --ntasks-per-node 8 python examples/distributed_train.py   # SLURM: one task per GPU
    torchrun --standalone --nproc-per-node 2 --max-restarts 2 examples/distributed_train.py --elastic  # restarts

It is the entry point of ``docs/distributed.md`` and of ``tests/distributed/``. Everything distributed goes through
``ignite.distributed``: ``idist.Parallel`` joins the process group that the launcher describes (or runs one process
without any), ``idist.auto_model`` / ``auto_optim`` / ``auto_dataloader`` adapt the objects, and hotloop's factories
build the steps. Evaluation is exact: each validation sample is evaluated on one rank only
(:func:`hotloop.distributed.auto_eval_dataloader`), Ignite's metrics sum over ranks, and the per-sample predictions
are gathered in dataset order (:class:`hotloop.distributed.SampleGatherer`).

With ``--elastic`` the run survives restarts and preemption: every rank resumes from the newest whole checkpoint
of ``OUTPUT_DIR/checkpoints`` (:func:`hotloop.resume_from_latest`, the same file on every rank), ``SIGTERM`` stops
all ranks after the same iteration with one checkpoint saved (:class:`hotloop.PreemptionHandler`), and the trainer
is Ignite's deterministic engine, so that a resume in the middle of an epoch continues exactly where the run was.
The process group is set up by :class:`hotloop.distributed.Parallel`: collectives time out after ``--timeout``
seconds, and the group forms again when ``torchrun`` restarts the workers.

Each rank writes ``OUTPUT_DIR/rank{RANK}.pt``: its final weights, the evaluation metrics, the gathered per-sample
predictions and what it evaluated locally. Rank 0 alone writes checkpoints to ``OUTPUT_DIR/checkpoints`` and logs.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.handlers import Checkpoint, DiskSaver, ProgressBar
from ignite.handlers.checkpoint import CheckpointEvents
from ignite.metrics import Accuracy, Loss
from ignite.utils import setup_logger
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from hotloop import (
    Events,
    PreemptionHandler,
    create_supervised_evaluator,
    create_supervised_trainer,
    resume_from_latest,
)
from hotloop.distributed import Parallel, SampleGatherer, auto_eval_dataloader, auto_model, unwrap_model

FEATURES, CLASSES = 8, 3
# What a launcher leaves in the environment: torchrun (and torch.distributed.launch) set WORLD_SIZE, srun sets
# SLURM_PROCID. Without either, one process runs without a process group.
_LAUNCHER_VARIABLES = ("WORLD_SIZE", "SLURM_PROCID")
_OPTIONS: dict[str, bool | str] = {"off": False, "on": True, "auto": "auto"}  # --compile / --cuda-graphs values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every option has a default, so the script runs as it is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=["auto", "gloo", "nccl", "none"],
        default="auto",
        help="auto: NCCL on GPUs, gloo on CPUs when started by torchrun, srun or --nproc-per-node; else one process",
    )
    parser.add_argument("--nproc-per-node", type=int, default=None, help="spawn this many processes (idist.Parallel)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size, divided among the ranks")
    parser.add_argument("--eval-batch-size", type=int, default=4, help="global evaluation batch size")
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--val-size", type=int, default=9, help="need not be divisible by the number of ranks")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", choices=list(_OPTIONS), default="auto", help="hotloop's compile= (auto: measured)")
    parser.add_argument("--cuda-graphs", choices=list(_OPTIONS), default="off", help="hotloop's cuda_graphs=")
    parser.add_argument("--output-dir", type=Path, default=Path("distributed_train_output"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (rank 0 shows one otherwise)")
    parser.add_argument(
        "--elastic",
        action="store_true",
        help="resume from the newest checkpoint on start, stop cleanly on SIGTERM, deterministic data order",
    )
    parser.add_argument("--checkpoint-every", type=int, default=0, help="iterations between checkpoints (0: epochs)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a collective waits for the other ranks")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds to sleep after each iteration (to watch)")
    parser.add_argument("--fail-on-rank", type=int, default=None, help="raise there in iteration 2 (tests: no hang)")
    parser.add_argument(
        "--fault",
        type=_fault,
        default=None,
        metavar="KIND:RANK:ITERATION",
        help="tests: after ITERATION of a run started from scratch, RANK is SIGKILLed (kill) or stops answering (hang)",
    )
    return parser.parse_args(argv)


def _fault(text: str) -> tuple[str, int, int]:
    """``--fault``'s value: ``kill`` or ``hang``, a rank, an iteration."""
    kind, _, rest = text.partition(":")
    rank, _, iteration = rest.partition(":")
    if kind not in ("kill", "hang") or not rank.isdigit() or not iteration.isdigit():
        raise argparse.ArgumentTypeError(f"expected kill:RANK:ITERATION or hang:RANK:ITERATION, got {text!r}")
    return kind, int(rank), int(iteration)


def resolve_backend(choice: str, nproc_per_node: int | None) -> str | None:
    """The process-group backend: ``None`` for one process without a launcher."""
    if choice != "auto":
        return None if choice == "none" else choice
    launched = nproc_per_node is not None or any(name in os.environ for name in _LAUNCHER_VARIABLES)
    if not launched:
        return None
    return "nccl" if torch.cuda.is_available() else "gloo"


def make_dataset(size: int, seed: int) -> TensorDataset:
    """A separable 3-class problem in 8 features, the same on every rank (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, FEATURES, generator=generator)
    projection = torch.randn(FEATURES, CLASSES, generator=torch.Generator().manual_seed(1234))
    return TensorDataset(x, (x @ projection).argmax(dim=1))


def make_model(seed: int) -> nn.Module:
    """A small MLP, initialised from ``seed``."""
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, CLASSES))


def make_loaders(config: dict[str, Any]) -> tuple[Any, DataLoader]:
    """This rank's training loader (a share of every global batch) and its exact evaluation loader."""
    train_set = make_dataset(config["train_size"], config["seed"])
    # An explicit DistributedSampler, also in one process: the same shuffled order for every world size, so that W
    # ranks with batch B/W each train exactly what one process with batch B trains.
    train_sampler: DistributedSampler[int] = DistributedSampler(
        train_set, idist.get_world_size(), idist.get_rank(), shuffle=True, seed=config["seed"], drop_last=True
    )
    # drop_last: every rank runs the same number of steps of the same shape (DDP all-reduces at each; graphs replay).
    train_loader = idist.auto_dataloader(
        train_set, batch_size=config["batch_size"], sampler=train_sampler, drop_last=True
    )
    val_set = make_dataset(config["val_size"], config["seed"] + 1)
    return train_loader, auto_eval_dataloader(val_set, batch_size=config["eval_batch_size"])  # each sample once


def make_engines(config: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """hotloop's trainer on the (DDP) model and evaluator on the module inside it."""
    device, loss_fn = idist.device(), nn.CrossEntropyLoss()
    trainer = create_supervised_trainer(
        model, optimizer, loss_fn, device=device, deterministic=config["elastic"],  # exact mid-epoch resumes
        compile=_OPTIONS[config["compile"]], cuda_graphs=_OPTIONS[config["cuda_graphs"]],
    )  # fmt: skip
    # Not the DDP wrapper: its forward may run collectives, and ranks evaluate different numbers of batches.
    # Ignite's metrics sum their statistics over ranks once, in compute(), which every rank reaches.
    evaluator = create_supervised_evaluator(
        unwrap_model(model),
        metrics={"accuracy": Accuracy(device=device), "loss": Loss(loss_fn, device=device)},
        device=device,
        compile=_OPTIONS[config["compile"]],
    )
    SampleGatherer(output_transform=lambda output: output[0].softmax(dim=1)).attach(evaluator)
    return trainer, evaluator


def _count_local_samples(evaluator: Any) -> dict[str, int]:
    local = {"samples": 0, "batches": 0}
    evaluator.add_event_handler(Events.STARTED, lambda _: local.update(samples=0, batches=0))

    @evaluator.on(Events.ITERATION_COMPLETED)
    def count(engine: Any) -> None:
        local["samples"] += len(engine.state.batch[0])
        local["batches"] += 1

    return local


def _inject_failure(trainer: Any, rank: int) -> None:
    @trainer.on(Events.ITERATION_STARTED(once=2))
    def fail(engine: Any) -> None:
        if idist.get_rank() == rank:
            raise RuntimeError(f"injected failure on rank {rank}")


def _inject_fault(trainer: Any, fault: tuple[str, int, int]) -> None:
    """``kill``: SIGKILL, as the OOM killer or a lost node; ``hang``: sleep (SIGTERM still ends it), as a stuck rank."""
    kind, rank, iteration = fault
    if idist.get_rank() != rank or trainer.state.iteration > 0:
        return  # a run resumed from a checkpoint runs as it should

    @trainer.on(Events.ITERATION_COMPLETED(once=iteration))
    def fault_now(engine: Any) -> None:
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher can still stop it
        time.sleep(3600)


def _attach_checkpoints(config: dict[str, Any], trainer: Any, to_save: dict[str, Any], logger: Any) -> Checkpoint:
    """Rank-aware ``Checkpoint`` every ``--checkpoint-every`` iterations (or epoch), and once when preempted."""
    # Checkpoint and DiskSaver are rank-aware: every rank keeps the bookkeeping, rank 0 alone writes the files.
    checkpoint = Checkpoint(to_save, DiskSaver(config["output_dir"] / "checkpoints", require_empty=False), n_saved=2)
    every = config["checkpoint_every"]
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every) if every else Events.EPOCH_COMPLETED, checkpoint)
    trainer.register_events(*CheckpointEvents)
    saved_at = {"iteration": -1}

    @trainer.on(CheckpointEvents.SAVED_CHECKPOINT)
    def log_save(engine: Any) -> None:
        saved_at["iteration"] = engine.state.iteration
        logger.info("saved %s", checkpoint.last_checkpoint)

    @trainer.on(Events.TERMINATE)
    def save_once(engine: Any) -> None:  # unless this iteration's checkpoint is written already
        if saved_at["iteration"] != engine.state.iteration:
            checkpoint(engine)

    return checkpoint


def training(local_rank: int, config: dict[str, Any]) -> None:
    """One rank's work (``idist.Parallel`` calls it on every rank): train, evaluate each epoch, save the results."""
    rank = idist.get_rank()
    logger = setup_logger("distributed_train", distributed_rank=rank)  # silent on ranks other than 0
    logger.info("rank %d of %d, backend %s, device %s", rank, idist.get_world_size(), idist.backend(), idist.device())

    model = auto_model(make_model(config["seed"]))  # DDP (built on a side CUDA stream) when world_size > 1
    optimizer = idist.auto_optim(torch.optim.SGD(model.parameters(), lr=config["lr"]))
    train_loader, val_loader = make_loaders(config)
    trainer, evaluator = make_engines(config, model, optimizer)
    local = _count_local_samples(evaluator)
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
    checkpoint = _attach_checkpoints(config, trainer, to_save, logger)
    resumed_from = None
    if config["elastic"]:  # a collective: rank 0 chooses the newest whole checkpoint, every rank loads that one
        resumed_from = resume_from_latest(config["output_dir"] / "checkpoints", to_save, missing_ok=True)
        logger.info("resumed from %s at iteration %d", resumed_from, trainer.state.iteration)
    start_iteration = trainer.state.iteration

    @trainer.on(Events.EPOCH_STARTED)
    def reshuffle(engine: Any) -> None:
        train_loader.sampler.set_epoch(engine.state.epoch - 1)  # type: ignore[attr-defined]

    @trainer.on(Events.EPOCH_COMPLETED)
    def evaluate(engine: Any) -> None:
        metrics = evaluator.run(val_loader).metrics
        logger.info("epoch %d: accuracy %.4f, loss %.4f", engine.state.epoch, metrics["accuracy"], metrics["loss"])

    preemption = PreemptionHandler().attach(trainer) if config["elastic"] else None
    if config["slow"]:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: time.sleep(config["slow"]))
    if rank == 0 and not config["no_progress"]:
        ProgressBar(persist=False).attach(trainer)
    if config["fail_on_rank"] is not None:
        _inject_failure(trainer, config["fail_on_rank"])
    if config["fault"]:
        _inject_fault(trainer, config["fault"])

    trainer.run(train_loader, max_epochs=config["epochs"])
    if preemption is not None and preemption.stopped:  # saved; exit 0 so that torchrun does not restart the group
        logger.info("preempted after iteration %d: checkpoint saved, exiting", trainer.state.iteration)
        return
    resumed = {"start_iteration": start_iteration, "resumed_from": None if resumed_from is None else str(resumed_from)}
    _save_results(config["output_dir"], model, trainer, evaluator, local, checkpoint, resumed)


def _save_results(
    output_dir: Path, model: nn.Module, trainer: Any, evaluator: Any, local: dict, checkpoint: Any, resumed: dict
) -> None:
    """Writes ``OUTPUT_DIR/rank{RANK}.pt`` (every rank; what the tests compare)."""
    results = {
        **resumed,
        "rank": idist.get_rank(),
        "world_size": idist.get_world_size(),
        "backend": idist.backend(),
        "iterations": trainer.state.iteration,
        "weights": {name: value.detach().cpu() for name, value in unwrap_model(model).state_dict().items()},
        "metrics": dict(evaluator.state.metrics),
        "predictions": torch.stack(evaluator.state.samples),
        "local_eval_samples": local["samples"],
        "local_eval_batches": local["batches"],
        "last_checkpoint": str(checkpoint.last_checkpoint),
        "compiled_frames": torch._dynamo.utils.counters["stats"]["unique_graphs"],  # 0 when nothing was compiled
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.save(results, output_dir / f"rank{idist.get_rank()}.pt")


def main(argv: list[str] | None = None) -> None:
    """Joins the process group the launcher describes (or spawns one, or runs alone) and runs :func:`training`."""
    args = parse_args(argv)
    backend = resolve_backend(args.backend, args.nproc_per_node)
    # hotloop's Parallel is idist.Parallel with a process-group timeout, and a group that forms again after restarts
    with Parallel(backend=backend, nproc_per_node=args.nproc_per_node, timeout=args.timeout) as parallel:
        parallel.run(training, vars(args))


if __name__ == "__main__":
    main()
