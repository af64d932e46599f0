"""Every row of docs/errors.md: the exception type and a fragment of its message, for each bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from ignite.handlers import Checkpoint
from torch.utils.data import DataLoader, TensorDataset

import hotloop
from hotloop import Engine, Events
from hotloop.metrics import Accuracy, MeanDice
from hotloop.reliability import resume_from_latest

_DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _trainer(model=None):
    model = model or torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return hotloop.create_supervised_trainer(model, optimizer, torch.nn.CrossEntropyLoss())


def _pair():
    return torch.randn(2, 4), torch.tensor([0, 1])


def _generator_step(engine, batch):
    yield batch


CASES = {
    "non-iterable data": (lambda: Engine(lambda e, b: None).run(5), TypeError, "should be iterable"),
    "empty data loader": (
        lambda: Engine(lambda e, b: None).run(DataLoader(TensorDataset(torch.zeros(0, 4)))),
        ValueError,
        "Input data has zero size",
    ),
    "epoch_length <= 0": (lambda: Engine(lambda e, b: None).run([1], epoch_length=0), ValueError, "zero size"),
    "batch of 3 items": (
        lambda: _trainer().run([(*_pair(), 1)]),
        ValueError,
        "expects a batch (x, y) of 2 items, got a tuple of 3",
    ),
    "dict batch": (
        lambda: _trainer().run([{"img": torch.randn(2, 4), "label": torch.tensor([0, 1])}]),
        TypeError,
        "got a dict with keys ['img', 'label']",
    ),
    "metric shapes differ": (
        lambda: Accuracy().update((torch.randn(4, 3), torch.randint(0, 3, (5,)))),
        ValueError,
        "compatible shapes",
    ),
    "segmentation metric shapes differ": (
        lambda: MeanDice().update((torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 5, 5)))),
        ValueError,
        "y should be [B, *spatial]",
    ),
    "model on another device": (
        lambda: _trainer(torch.nn.Linear(4, 2, device="meta")).run([_pair()]),
        RuntimeError,
        "is not on the expected device",
    ),
    "process function is a generator": (lambda: Engine(_generator_step), TypeError, "generator"),
    "handler with a wrong signature": (
        lambda: Engine(lambda e, b: None).add_event_handler(Events.STARTED, lambda a, b, c: None),
        ValueError,
        "takes parameters ['a', 'b', 'c'] but will be called with",
    ),
    "state_dict without required keys": (
        lambda: Engine(lambda e, b: None).load_state_dict({"iteration": 3}),
        ValueError,
        "epoch_length must be a positive integer",
    ),
    "unknown event": (
        lambda: Engine(lambda e, b: None).add_event_handler("on_start", lambda e: None),
        ValueError,
        "is not a valid event for this Engine",
    ),
    "checkpoint directory does not exist": (
        lambda: resume_from_latest("no/such/dir", {"model": torch.nn.Linear(1, 1)}),
        FileNotFoundError,
        "does not exist",
    ),
    "checkpoint file does not exist": (
        lambda: Checkpoint.load_objects({"model": torch.nn.Linear(1, 1)}, "no/such/file.pt"),
        FileNotFoundError,
        "No such file or directory",
    ),
}

_XFAIL: dict[str, str] = {}


@pytest.mark.parametrize(
    "row",
    [pytest.param(r, marks=pytest.mark.xfail(strict=True, reason=_XFAIL[r])) if r in _XFAIL else r for r in CASES],
)
def test_bad_input(row, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    action, exc_type, fragment = CASES[row]
    with pytest.raises(exc_type, match=re.escape(fragment)):
        action()
    assert list(tmp_path.iterdir()) == []  # nothing half-written on disk


def test_every_row_is_documented():
    doc = _DOC.read_text()
    rows = re.findall(r"^\| ([^|]+?) \| `(\w+)` \|", doc, flags=re.M)
    documented = {name: exc for name, exc in rows if name not in ("case",)}
    assert documented == {name: case[1].__name__ for name, case in CASES.items()}
