"""Input pipelines: DALI's CPU pipeline against a torch ``DataLoader`` decoding with PIL, on the same PNG files.

One scenario, ``dali_vs_dataloader``: 512 of scikit-learn's digits written as PNG files in a class-per-folder tree
(:func:`hotloop.data.write_digits_folder`), read as batches of 64 RGB float32 images resized to 32x32 and normalised,
by

- ``raw``: the same batches already decoded, in memory (the cost of the loop itself, a fraction of a µs: so the
  printed ratio is the ratio of times per batch);
- ``dataloader``: :func:`hotloop.data.image_folder_loader` with ``backend="torch"``: a ``DataLoader`` with 2 worker
  processes decoding with PIL (persistent workers);
- ``dali``: the same function with ``backend="dali"``: a DALI CPU pipeline (``device_id=None``) with 2 threads.

Same files, transforms (decode → bilinear resize → normalise, no augmentation), batch size and 2 threads/workers.
A round reads ``iterations`` batches from a stream that runs across epochs, so start-up (worker processes, pipeline
build) is paid in the warm-up round only. Both producers work ahead of the consumer (DALI's prefetch queue of 2
batches, the DataLoader's 2 batches per worker) and refill while the next provider's round runs: on a machine with
few cores that spills some of each one's cost into the others' rounds, alike for both.
images/s = 64 / (µs per batch) · 1e6; the ratio printed is
``(dataloader − raw) / (dali − raw)``: above 1 when DALI is faster. No target: it depends on the cores available.

NVIDIA DALI is an optional dependency of hotloop: without it this case has no scenario.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from hotloop._optional import DALI, PILLOW, SKLEARN, missing_message
from hotloop.data import image_folder_loader, write_digits_folder

from . import Scenario

__all__ = ["BATCH_SIZE", "IMAGE_SIZE", "SCENARIOS", "UNAVAILABLE", "WORKERS"]

#: Why this case cannot run here, or ``None``: DALI, and the digits written as PNG (scikit-learn, Pillow).
UNAVAILABLE: str | None = missing_message("the dali_loader case", DALI, PILLOW, SKLEARN, extra="bench,dali")

BATCH_SIZE = 64
IMAGE_SIZE = 32
WORKERS = 2
_FRACTION = 512 / 1797  # the "val" split of write_digits_folder: 512 files

_folder: tempfile.TemporaryDirectory | None = None  # removed when the process ends


def _root() -> str:
    global _folder
    if _folder is None:
        _folder = tempfile.TemporaryDirectory(prefix="hotloop-bench-dali-")
        write_digits_folder(_folder.name, fmt="png", split="val", val_fraction=_FRACTION)
    return _folder.name


def _endless(loader: Any) -> Iterator[Any]:
    """Batches across epochs: a new ``iter(loader)`` when one epoch ends, as an engine does."""
    return itertools.chain.from_iterable(iter(loader) for _ in itertools.count())


def _loader(backend: str) -> Any:
    return image_folder_loader(
        _root(), batch_size=BATCH_SIZE, image_size=IMAGE_SIZE, mean=0.5, std=0.25, num_threads=WORKERS, backend=backend
    )


def _provider(backend: str) -> Callable[[int], Callable[[], object]]:
    def build(iterations: int) -> Callable[[], object]:
        stream = _endless(_loader(backend))

        def run() -> None:
            for _ in itertools.islice(stream, iterations):
                pass  # batches are finished tensors when handed out: nothing is deferred to a first touch

        return run

    return build


def _raw(iterations: int) -> Callable[[], object]:
    batches = list(_loader("torch"))
    stream = itertools.cycle(batches)

    def run() -> None:
        for _ in itertools.islice(stream, iterations):
            pass

    return run


def _scenarios() -> list[Scenario]:
    if UNAVAILABLE:
        return []
    return [
        Scenario(
            name="dali_vs_dataloader",
            description=f"{BATCH_SIZE} PNG digits -> [{BATCH_SIZE}, 3, {IMAGE_SIZE}, {IMAGE_SIZE}] float32, "
            f"{WORKERS} threads/workers, CPU",
            iterations=40,
            quick_iterations=8,
            providers={"raw": _raw, "dataloader": _provider("torch"), "dali": _provider("dali")},
            original="dataloader",
            candidate="dali",
        )
    ]


SCENARIOS: list[Scenario] = _scenarios()
