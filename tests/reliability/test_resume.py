"""Crash and resume: a run SIGKILLed at an iteration, resumed from its last checkpoint, ends bit-identical (CPU) to
an uninterrupted run; a SIGTERMed run stops after the current iteration, saves, and resumes the same way.

The killed/preempted runs are subprocesses (``_resume_worker.py``) with timeouts; the reference and resumed runs
run in this process. Resumes pass a larger ``max_epochs`` (4 instead of 3: Ignite issue #993) and an explicit
``epoch_length`` (which must not reset the iteration: Ignite issue #825).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import _resume_worker as worker
import pytest
import torch

_TIMEOUT_S = 120
_WORKER = Path(__file__).with_name("_resume_worker.py")
_REFERENCES: dict[tuple, dict[str, Any]] = {}


def _reference(deterministic: bool, eager_sampler: bool, tmp_path_factory: Any) -> dict[str, Any]:
    key = (deterministic, eager_sampler)
    if key not in _REFERENCES:
        dirname = tmp_path_factory.mktemp("reference")
        cfg = {"dirname": str(dirname), "deterministic": deterministic, "max_epochs": 4, "every": 1000}
        _REFERENCES[key] = worker.train({**cfg, "eager_sampler": eager_sampler})
    return _REFERENCES[key]


def _spawn(cfg: dict[str, Any], **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(_WORKER), json.dumps(cfg)], cwd=_WORKER.parent, text=True, **kwargs)


def _assert_bit_identical(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    assert (resumed["iteration"], resumed["epoch"]) == (reference["iteration"], reference["epoch"]) == (20, 4)
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    ours, theirs = resumed["optimizer"], reference["optimizer"]
    assert ours["param_groups"] == theirs["param_groups"]  # includes the scheduled learning rate
    for index, state in theirs["state"].items():
        for key, value in state.items():
            assert torch.equal(ours["state"][index][key], value), (index, key)


@pytest.mark.parametrize(
    ("deterministic", "eager_sampler", "every", "kill_at", "epoch_length"),
    [
        # Engine: checkpoints at epoch ends (Ignite's Engine restarts the data iterator on a mid-epoch resume).
        pytest.param(False, False, 5, 8, None, id="engine-kill8"),
        pytest.param(False, False, 5, 14, 5, id="engine-kill14-epoch_length"),
        # DeterministicEngine with a shuffling DataLoader: checkpoints in the middle of epochs.
        pytest.param(True, True, 3, 7, 5, id="deterministic-kill7"),
        pytest.param(True, True, 3, 11, None, id="deterministic-kill11"),
        # The plain shuffling DataLoader, patched by hotloop's DeterministicEngine (Ignite 0.5.5 fails this one).
        pytest.param(True, False, 3, 7, 5, id="deterministic-plain-loader"),
    ],
)
def test_sigkill_then_resume_is_bit_identical(
    tmp_path, tmp_path_factory, deterministic, eager_sampler, every, kill_at, epoch_length
):
    cfg = {"dirname": str(tmp_path), "deterministic": deterministic, "every": every, "eager_sampler": eager_sampler}
    proc = _spawn({**cfg, "max_epochs": 3, "kill_at": kill_at})
    assert proc.wait(timeout=_TIMEOUT_S) == -signal.SIGKILL
    last_saved = kill_at - kill_at % every
    resumed = worker.train({**cfg, "max_epochs": 4, "resume": True, "epoch_length": epoch_length})
    assert resumed["loaded"].endswith(f"checkpoint_{last_saved}.pt")
    assert resumed["start_iteration"] == last_saved  # not reset by epoch_length (#825)
    _assert_bit_identical(resumed, _reference(deterministic, eager_sampler, tmp_path_factory))


def test_sigterm_stops_after_the_iteration_saves_and_resumes(tmp_path, tmp_path_factory):
    cfg = {"dirname": str(tmp_path), "deterministic": True, "every": 1000, "eager_sampler": True}
    proc = _spawn({**cfg, "max_epochs": 3, "preempt": True, "ready_at": 3}, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=_TIMEOUT_S) == 143  # the worker's clean exit after a preemption
    finally:
        proc.kill()
    (saved,) = list(tmp_path.glob("checkpoint_*.pt"))  # written at Events.TERMINATE, nothing else
    stopped_at = int(saved.stem.split("_")[1])
    assert 3 <= stopped_at < 15
    state = torch.load(saved, weights_only=False)["trainer"]
    assert state["iteration"] == stopped_at
    resumed = worker.train({**cfg, "max_epochs": 4, "resume": True})
    assert resumed["start_iteration"] == stopped_at
    _assert_bit_identical(resumed, _reference(True, True, tmp_path_factory))
