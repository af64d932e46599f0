"""End-to-end training throughput: three workloads, each trained by a raw loop, Ignite, Lightning and hotloop.

Scenarios (``metric="throughput"``: each provider's whole time per step, shown with samples/s; the ratios are
hotloop's speed-up, the median of the per-round ratios):

- ``digits_png``: the digits CNN of :mod:`~hotloop.bench.cases.trainer_digits` (batch 64, SGD with momentum) trained
  from PNG files: scikit-learn's digits written as a class-per-folder tree (:func:`hotloop.data.write_digits_folder`,
  8×8 grayscale), decoded and normalised every epoch. One round is one epoch (``iterations × 64`` files, the last
  incomplete batch dropped, no shuffling: every provider sees the same batches). The stock providers read them with a
  ``DataLoader(num_workers=2, persistent_workers=True)`` whose dataset decodes with PIL, as one writes it without
  hotloop; ``hotloop_auto`` with :func:`hotloop.data.image_folder_loader` (DALI's CPU pipeline with 2 threads when
  DALI is installed, else the same PIL ``DataLoader``).
- ``transformer``: issue 18's 2-block transformer classifier (d=128, 4 heads, sequence 32, batch 32, AdamW) on
  synthetic tokens (8 batches, cycled).
- ``mlp``: a 3-layer MLP on synthetic tabular data (54 features, 7 classes, as forest cover types; batch 256, Adam;
  8 batches, cycled).

Providers, each with its own model (the same initial weights), optimizer and loss:

- ``raw``: the hand-written loop (zero_grad, forward, loss, backward, step, ``loss.item()``);
- ``ignite``: ``ignite.engine.create_supervised_trainer`` (the original);
- ``lightning``: ``lightning.pytorch.Trainer.fit`` with logger, checkpointing, progress bar, model summary and sanity
  check off, one fit per round, its epoch timed from a callback (the set-up of each ``fit`` is not counted);
- ``hotloop``: ``hotloop.create_supervised_trainer`` with Ignite's arguments only;
- ``hotloop_auto``: the same with ``compile="auto"``, ``no_sync=True`` and ``prefetch=True`` (and its data loader for
  ``digits_png``): hotloop as recommended, the candidate; what ``"auto"`` chose is shown beside it;
- ``hotloop_eager`` and ``hotloop_compiled`` (full runs only: a compile takes 10-20 s on 2 cores): ``hotloop_auto``
  with ``compile`` pinned to ``False`` and to ``True``, which ``"auto"`` must not be more than 5 % slower than
  (issue 18), shown as ``hotloop_eager ÷ hotloop_auto`` and ``hotloop_compiled ÷ hotloop_auto``.

``raw``, ``ignite``, ``lightning`` and ``hotloop`` run the same steps on the same data: they must end on the same loss
(checked). ``hotloop_auto`` may compile (its loss then differs within floating-point tolerance) and, on
``digits_png``, decodes with DALI; its final loss is reported beside theirs.

Lightning, scikit-learn and Pillow are needed (``pip install 'hotloop[bench]'``); DALI is used when installed.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from typing import Any

import ignite.engine as ie
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import hotloop
from hotloop._optional import DALI, LIGHTNING, PILLOW, SKLEARN, missing_message

from . import Scenario, trainer_digits
from ._training import Data, Setup, TinyTransformer, engine, lightning, raw_loop, seeded

__all__ = ["SCENARIOS", "UNAVAILABLE", "WORKERS"]

#: Why this case cannot run here (a package is missing), or ``None``.
UNAVAILABLE: str | None = missing_message("the training case", LIGHTNING, SKLEARN, PILLOW, extra="bench")

#: DataLoader worker processes of the stock providers, and DALI threads of hotloop's loader.
WORKERS = 2
_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_DIGITS = 1797  # images in scikit-learn's digits
_MEAN, _STD = 0.5, 0.25  # on the 0..1 scale
_DISTINCT_BATCHES = 8
_RECOMMENDED: dict[str, Any] = {"compile": "auto", "no_sync": True, "prefetch": True}
_SAME_STEPS = ("raw", "ignite", "lightning", "hotloop")
#: ``hotloop_auto``'s options with ``compile`` pinned: what ``"auto"`` is held to (full runs only).
_PINNED: dict[str, dict[str, Any]] = {"hotloop_eager": {"compile": False}, "hotloop_compiled": {"compile": True}}

# --- digits_png -------------------------------------------------------------------------------------------------


_FOLDERS: list[tempfile.TemporaryDirectory] = []  # removed when the process ends


@functools.cache
def _png_folder(files: int) -> str:
    """A class-per-folder tree of ``files`` digits as PNG files, written once per process."""
    from hotloop.data import write_digits_folder

    folder = tempfile.TemporaryDirectory(prefix="hotloop-bench-training-")
    _FOLDERS.append(folder)
    write_digits_folder(folder.name, fmt="png", split="val", val_fraction=files / _DIGITS)
    return folder.name


class _PilDigits(Dataset):
    """The PNG files decoded with PIL into ``[1, 8, 8]`` float32 images normalised as ``(x / 255 - 0.5) / 0.25``."""

    def __init__(self, root: str) -> None:
        from hotloop.data import list_image_folder

        self.files, self.labels, _ = list_image_folder(root)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[index]) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        return torch.from_numpy((pixels / 255.0 - _MEAN) / _STD)[None], self.labels[index]


@functools.cache
def _stock_loader(iterations: int) -> DataLoader:
    """The stock providers' loader of one epoch of ``iterations`` batches, shared by them (a round is one epoch)."""
    root = _png_folder(iterations * trainer_digits.BATCH_SIZE)
    return DataLoader(
        _PilDigits(root),
        batch_size=trainer_digits.BATCH_SIZE,
        num_workers=WORKERS,
        persistent_workers=True,
        drop_last=True,
    )


def _hotloop_loader(iterations: int) -> Any:
    root = _png_folder(iterations * trainer_digits.BATCH_SIZE)
    return hotloop.data.image_folder_loader(
        root,
        batch_size=trainer_digits.BATCH_SIZE,
        grayscale=True,
        mean=_MEAN,
        std=_STD,
        num_threads=WORKERS,
        as_tuple=True,
        drop_last=True,
    )


def _cnn() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    model = trainer_digits.make_model().to(_DEVICE)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), nn.CrossEntropyLoss()


# --- transformer and mlp ----------------------------------------------------------------------------------------

_VOCAB, _WIDTH, _HEADS, _BLOCKS, _LENGTH, _CLASSES, _TOKENS_BATCH = 1000, 128, 4, 2, 32, 10, 32
_FEATURES, _HIDDEN, _COVER_TYPES, _TABLE_BATCH = 54, 256, 7, 256


def _transformer() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    build = seeded(lambda: TinyTransformer(_VOCAB, _WIDTH, _HEADS, _BLOCKS, _LENGTH, _CLASSES))
    model = build().to(_DEVICE)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()


def _tokens() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, _VOCAB, (_TOKENS_BATCH, _LENGTH), generator=generator),  # tokens: [B, L]
            torch.randint(0, _CLASSES, (_TOKENS_BATCH,), generator=generator),
        )
        for _ in range(_DISTINCT_BATCHES)
    ]


def _mlp() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    build = seeded(
        lambda: nn.Sequential(
            nn.Linear(_FEATURES, _HIDDEN),
            nn.ReLU(),
            nn.Linear(_HIDDEN, _HIDDEN),
            nn.ReLU(),
            nn.Linear(_HIDDEN, _COVER_TYPES),
        )
    )
    model = build().to(_DEVICE)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()


def _table() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Standard-normal features ``[B, 54]``, labelled by the arg-max of a fixed random linear map (learnable)."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(_FEATURES, _COVER_TYPES, generator=generator)
    batches = []
    for _ in range(_DISTINCT_BATCHES):
        features = torch.randn(_TABLE_BATCH, _FEATURES, generator=generator)
        batches.append((features, (features @ weights).argmax(dim=1)))
    return batches


def _cycled(batches: Callable[[], list[Any]]) -> Data:
    def data(iterations: int) -> list[Any]:
        made = batches()
        return [made[i % len(made)] for i in range(iterations)]

    return data


# --- scenarios --------------------------------------------------------------------------------------------------


def _providers(setup: Setup, stock: Data, recommended: Data) -> dict[str, Callable[[int], Callable[[], object]]]:
    return {
        "raw": raw_loop(setup, stock, _DEVICE),
        "ignite": engine(ie.create_supervised_trainer, setup, stock, _DEVICE),
        "lightning": lightning(setup, stock, _DEVICE),
        "hotloop": engine(hotloop.create_supervised_trainer, setup, stock, _DEVICE),
        "hotloop_auto": engine(hotloop.create_supervised_trainer, setup, recommended, _DEVICE, **_RECOMMENDED),
        **{
            name: engine(hotloop.create_supervised_trainer, setup, recommended, _DEVICE, **{**_RECOMMENDED, **pinned})
            for name, pinned in _PINNED.items()
        },
    }


def _scenario(name: str, description: str, iterations: int, quick: int, batch: int, providers: dict) -> Scenario:
    return Scenario(
        name=name,
        description=f"{description}, device {_DEVICE}",
        iterations=iterations,
        quick_iterations=quick,
        providers=providers,
        original="ignite",
        candidate="hotloop_auto",
        metric="throughput",
        also=("lightning", *_PINNED),
        batch_size=batch,
        same_steps=_SAME_STEPS,
        full_only=tuple(_PINNED),
    )


def _scenarios() -> list[Scenario]:
    if UNAVAILABLE:
        return []
    reader = "DALI, 2 threads" if DALI.installed() else "DataLoader + PIL (DALI: not installed)"
    return [
        _scenario(
            "digits_png",
            f"digits CNN from PNG files, batch {trainer_digits.BATCH_SIZE}, SGD; one epoch a round; stock: DataLoader "
            f"({WORKERS} workers) + PIL, hotloop_auto: image_folder_loader ({reader})",
            iterations=_DIGITS // trainer_digits.BATCH_SIZE,
            quick=4,
            batch=trainer_digits.BATCH_SIZE,
            providers=_providers(_cnn, _stock_loader, _hotloop_loader),
        ),
        _scenario(
            "transformer",
            f"2-block transformer classifier, d={_WIDTH}, {_HEADS} heads, seq {_LENGTH}, batch {_TOKENS_BATCH}, "
            "AdamW, synthetic tokens",
            iterations=32,
            quick=2,
            batch=_TOKENS_BATCH,
            providers=_providers(_transformer, _cycled(_tokens), _cycled(_tokens)),
        ),
        _scenario(
            "mlp",
            f"MLP {_FEATURES}-{_HIDDEN}-{_HIDDEN}-{_COVER_TYPES} on synthetic tabular data, batch {_TABLE_BATCH}, Adam",
            iterations=200,
            quick=10,
            batch=_TABLE_BATCH,
            providers=_providers(_mlp, _cycled(_table), _cycled(_table)),
        ),
    ]


SCENARIOS: list[Scenario] = _scenarios()
