"""What the training benchmarks share: their models, and the raw loop, Ignite's and hotloop's trainers and Lightning's
``Trainer`` as providers of a :class:`~hotloop.bench.cases.Scenario`.

A provider here is built from a ``setup`` (a function returning a fresh model, its optimizer and its loss, the same
initial weights at every call) and a ``data`` function (iterations → one round's batches: a list, or a loader whose
epoch is the round). Every provider owns its model and optimizer, so rounds do not disturb each other, and every round
returns a :class:`~hotloop.bench.cases.Round` with the loss of its last step: providers that run the same steps on
the same data must end on the same loss.

Lightning (``lightning.pytorch``, in the ``bench`` extra) runs one
``Trainer.fit`` of one epoch per round, with its logger, checkpointing, progress bar, model summary and sanity check
off, so that only its loop is compared. Each ``fit`` first sets the trainer up (strategy, accelerator, hooks,
data connector: tens of ms on a CPU); that is not a per-iteration cost, so a callback times the epoch alone, from
``on_train_epoch_start`` to ``on_train_epoch_end`` (device synced), and the round reports that time.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from hotloop._optional import LIGHTNING, missing_message

from . import Provider, Round, device_sync

__all__ = [
    "LIGHTNING_UNAVAILABLE",
    "Batch",
    "Data",
    "Setup",
    "TinyTransformer",
    "auto_choice",
    "engine",
    "lightning",
    "lightning_noop",
    "raw_loop",
    "seeded",
]

Batch = tuple[torch.Tensor, torch.Tensor]
#: A fresh model, its optimizer and its loss function (the same initial weights at every call).
Setup = Callable[[], tuple[nn.Module, torch.optim.Optimizer, Callable[[Any, Any], torch.Tensor]]]
#: One round's batches for a number of iterations: a list, or a loader whose epoch is the round.
Data = Callable[[int], Iterable[Any]]

#: Why Lightning cannot run here (it is not installed), or ``None``.
LIGHTNING_UNAVAILABLE: str | None = missing_message("Lightning's Trainer in hotloop bench", LIGHTNING)

# Lightning's per-iteration cost is about 150 µs on the 2-core CPU machine: 2,000 iterations (0.3 s a round) pin it
# down as well as the scenario's 100,000 would (what its epoch pays once, about 1 ms, adds 0.5 µs per iteration).
_NOOP_MAX_ITERATIONS = 2_000


class TinyTransformer(nn.Module):
    """Tokens ``[B, L]`` → class logits ``[B, classes]``: embedding, pre-norm encoder blocks, mean pooling."""

    def __init__(self, vocab: int, width: int, heads: int, blocks: int, length: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(1, length, width) * 0.02)
        # dropout 0: no random numbers in the step, so that eager, compiled and graphed steps compute the same thing.
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, blocks, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(tokens) + self.position)  # hidden: [B, L, width]
        return self.head(hidden.mean(dim=1))


def auto_choice(engine: Any) -> str | None:
    """What ``compile="auto"`` chose for ``engine``'s step (``"measuring"`` until it has); None for other engines."""
    choice = getattr(engine, "step_choice", None)
    if choice is None or choice.requested != "auto":
        return None
    return choice.variant or "measuring"


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    """``build`` made repeatable: each call draws the weights from ``seed`` and leaves the global RNG as it was."""

    def make() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build()

    return make


def raw_loop(setup: Setup, data: Data, device: torch.device) -> Provider:
    """The hand-written loop: zero_grad, forward, loss, backward, step, and ``loss.item()`` as a loop that logs does
    (and as Ignite's default output does)."""

    def build(iterations: int) -> Callable[[], Round]:
        model, optimizer, loss_fn = setup()
        batches = data(iterations)

        def run() -> Round:
            model.train()
            loss = float("nan")
            for x, y in batches:
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                step_loss = loss_fn(model(x), y)
                step_loss.backward()
                optimizer.step()
                loss = step_loss.item()
            return Round(loss=loss)

        return run

    return build


def engine(make: Callable[..., Any], setup: Setup, data: Data, device: torch.device, **options: Any) -> Provider:
    """A trainer from ``make`` (Ignite's or hotloop's ``create_supervised_trainer``), one ``run`` of one epoch per
    round; the round's loss is ``state.output`` (the default output: the last step's loss), its choice what
    ``compile="auto"`` chose (``trainer.step_choice``)."""

    def build(iterations: int) -> Callable[[], Round]:
        model, optimizer, loss_fn = setup()
        trainer = make(model, optimizer, loss_fn, device=device, **options)
        batches = data(iterations)

        def run() -> Round:
            # A finished engine restarts from iteration 0 on the next ``run``, so one engine serves every round.
            loss = float(trainer.run(batches, max_epochs=1).output)
            return Round(loss=loss, choice=auto_choice(trainer))

        return run

    return build


class _Sized:
    """A sized iterable over batches, each ``iter()`` one epoch of them.

    Lightning takes it as one loader (a list would be a list of loaders). A ``DataLoader`` is handed over behind it
    too: at the end of every ``fit`` Lightning shuts down the persistent workers of the loaders it was given (its
    ``CombinedLoader.reset``), which a real run does once, after its last epoch; here each round, and whichever
    provider reads the shared loader next, would pay for spawning them again.
    """

    def __init__(self, batches: Iterable[Any]) -> None:
        self._batches = batches if isinstance(batches, torch.utils.data.DataLoader) else list(batches)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)  # type: ignore[arg-type]  # a DataLoader over a sized dataset, or a list


def _lightning() -> Any:
    import lightning.pytorch as pl

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "GPU available: False" lines per fit
    return pl


def _epoch_timer(pl: Any) -> Any:
    class EpochTimer(pl.Callback):  # type: ignore[name-defined]  # pl: the module found at run time
        """Seconds of the last epoch, from its start to its end, the device synced at both."""

        seconds = float("nan")

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            device_sync()
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            device_sync()
            self.seconds = time.perf_counter() - self.start

    return EpochTimer()


def _fit(pl: Any, module: Any, loader: Any, device: torch.device, fit_seconds: list[float] | None) -> float:
    """One ``Trainer.fit`` of one epoch, everything but the loop off; returns the epoch's seconds."""
    timer = _epoch_timer(pl)
    with warnings.catch_warnings():
        # "does not have many workers", "no optimizer", "GPU available but not used": advice, not results.
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
        )
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
    if fit_seconds is not None:
        fit_seconds.append(time.perf_counter() - start)
    return timer.seconds


def lightning(setup: Setup, data: Data, device: torch.device, fit_seconds: list[float] | None = None) -> Provider:
    """Lightning's ``Trainer.fit`` on a ``LightningModule`` whose ``training_step`` returns the loss (automatic
    optimization: zero_grad, backward and step are Lightning's), one fit of one epoch per round.

    Args:
        setup: The model, optimizer and loss.
        data: One round's batches.
        device: Where Lightning runs (``accelerator`` ``"gpu"`` for a CUDA device, else ``"cpu"``).
        fit_seconds: If given, each round appends the seconds of its whole ``fit`` (set-up included) to it.

    Returns:
        The provider; its round returns the epoch's own time and its last step's loss.
    """

    def build(iterations: int) -> Callable[[], Round]:
        pl = _lightning()
        model, optimizer, loss_fn = setup()

        class Module(pl.LightningModule):  # type: ignore[name-defined]  # pl: the module found at run time
            last_loss = torch.tensor(float("nan"))

            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
                x, y = batch
                loss = loss_fn(self.model(x), y)
                self.last_loss = loss.detach()
                return loss

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return optimizer

        module, loader = Module(), _Sized(data(iterations))

        def run() -> Round:
            seconds = _fit(pl, module, loader, device, fit_seconds)
            return Round(seconds=seconds, loss=float(module.last_loss))

        return run

    return build


def lightning_noop(device: torch.device) -> Provider:
    """Lightning's loop around a no-op: manual optimization, a ``training_step`` that returns ``None``, the batches
    ``range(N)``; at most 2,000 iterations per round (its cost per iteration is what is measured)."""

    def build(iterations: int) -> Callable[[], Round]:
        pl = _lightning()

        class NoOp(pl.LightningModule):  # type: ignore[name-defined]  # pl: the module found at run time
            def __init__(self) -> None:
                super().__init__()
                self.automatic_optimization = False

            def training_step(self, batch: int, batch_idx: int) -> None:
                return None

            def configure_optimizers(self) -> None:
                return None

        count = min(iterations, _NOOP_MAX_ITERATIONS)
        module, loader = NoOp(), _Sized(range(count))

        def run() -> Round:
            return Round(seconds=_fit(pl, module, loader, device, None), iterations=count)

        return run

    return build
