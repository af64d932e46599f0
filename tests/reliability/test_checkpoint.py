"""``resume_from_latest``: the newest valid checkpoint is loaded, damaged ones are skipped with a warning, and a
writer killed in the middle of ``DiskSaver``'s atomic write never leaves a truncated ``*.pt``; on two gloo ranks,
rank 0 chooses, every rank loads that checkpoint or every rank raises."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _gloo_ranks import run_on_two_ranks
from ignite.handlers import Checkpoint, DiskSaver

import hotloop
from hotloop.reliability import RNGState, find_checkpoints, resume_from_latest

_TIMEOUT_S = 120


def _objects(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    trainer = hotloop.Engine(lambda e, b: None)
    trainer.state.iteration, trainer.state.epoch_length, trainer.state.max_epochs = 7 + seed, 10, 3
    return {"model": model, "optimizer": optimizer, "trainer": trainer}


def _write(dirname: Path, step: int, seed: int) -> Path:
    objects = _objects(seed)
    torch.save({k: v.state_dict() for k, v in objects.items()}, dirname / f"checkpoint_{step}.pt")
    path = dirname / f"checkpoint_{step}.pt"
    os.utime(path, ns=(step * 10**9, step * 10**9))  # mtime order = step order, whatever the clock resolution
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    os.utime(path, ns=(10**12, 10**12))  # and make it the newest


def _fresh() -> dict:
    return _objects(seed=100)


def test_loads_newest(tmp_path):
    _write(tmp_path, 1, seed=1)
    _write(tmp_path, 2, seed=2)
    target = _fresh()
    assert resume_from_latest(tmp_path, target) == tmp_path / "checkpoint_2.pt"
    expected = _objects(seed=2)
    assert torch.equal(target["model"].weight, expected["model"].weight)
    assert target["trainer"].state.iteration == 9


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing key"])
def test_skips_damaged_newest_with_warning(tmp_path, damage):
    _write(tmp_path, 1, seed=1)
    bad = _write(tmp_path, 2, seed=2)
    if damage == "truncated":
        _truncate(bad)
    elif damage == "garbage":
        bad.write_bytes(b"not a checkpoint")
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        torch.save({"model": _objects(2)["model"].state_dict()}, bad)
    target = _fresh()
    with pytest.warns(RuntimeWarning, match="skipping checkpoint .*checkpoint_2.pt"):
        loaded = resume_from_latest(tmp_path, target)
    assert loaded == tmp_path / "checkpoint_1.pt"
    assert torch.equal(target["model"].weight, _objects(seed=1)["model"].weight)


def test_none_valid_raises_listing_each(tmp_path):
    for step in (1, 2):
        _truncate(_write(tmp_path, step, seed=step))
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match=r"No valid checkpoint(.|\n)*checkpoint_1.pt"):
        resume_from_latest(tmp_path, _fresh())


def test_missing_directory_and_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resume_from_latest(tmp_path / "nope", _fresh())
    with pytest.raises(FileNotFoundError, match="missing_ok=True"):
        resume_from_latest(tmp_path, _fresh())
    assert resume_from_latest(tmp_path / "nope", _fresh(), missing_ok=True) is None
    assert resume_from_latest(tmp_path, _fresh(), missing_ok=True) is None


def test_bad_to_load(tmp_path):
    with pytest.raises(TypeError, match="non-empty mapping"):
        resume_from_latest(tmp_path, {})
    with pytest.raises(TypeError, match="has no load_state_dict"):
        resume_from_latest(tmp_path, {"x": 3})


def test_prefix_filter_and_step_tie_break(tmp_path):
    _write(tmp_path, 3, seed=3)
    best = tmp_path / "best_model_9_acc=0.9.pt"
    torch.save({"model": _objects(9)["model"].state_dict()}, best)
    for p in tmp_path.iterdir():
        os.utime(p, ns=(5 * 10**9, 5 * 10**9))  # equal mtimes: the step in the name decides
    assert find_checkpoints(tmp_path)[0] == best
    assert find_checkpoints(tmp_path, filename_prefix="checkpoint") == [tmp_path / "checkpoint_3.pt"]
    assert resume_from_latest(tmp_path, _fresh(), filename_prefix="checkpoint") == tmp_path / "checkpoint_3.pt"


def test_deterministic_engine_rng_states_load_with_weights_only(tmp_path):
    """Ignite's ``load_objects`` (weights_only=True) rejects the numpy random state of DeterministicEngine."""
    trainer = hotloop.DeterministicEngine(lambda e, b: None)
    trainer.run([1, 2], max_epochs=1)
    Checkpoint({"trainer": trainer}, DiskSaver(tmp_path))(trainer)
    (path,) = find_checkpoints(tmp_path)
    with pytest.raises(Exception, match="Weights only load failed"):
        Checkpoint.load_objects({"trainer": hotloop.DeterministicEngine(lambda e, b: None)}, path)
    other = hotloop.DeterministicEngine(lambda e, b: None)
    assert resume_from_latest(tmp_path, {"trainer": other}) == path
    assert other.state.iteration == 2


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    rng = RNGState()
    torch.save({"rng": rng.state_dict()}, tmp_path / "checkpoint_1.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.random(), np.random.rand(), torch.rand(1)  # move every stream on
    assert resume_from_latest(tmp_path, {"rng": rng}) is not None
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, torch
    from ignite.handlers import DiskSaver
    real_save = torch.save
    def save_half_then_die(obj, f, **kwargs):   # the second save is cut in the middle by SIGKILL
        real_save(obj, f, **kwargs)
        if save_half_then_die.calls:
            if hasattr(f, "truncate"):
                f.truncate(f.tell() // 2); f.flush()
            else:   # atomic=False: DiskSaver passes the final path
                os.truncate(f, os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        save_half_then_die.calls += 1
    save_half_then_die.calls = 0
    torch.save = save_half_then_die
    saver = DiskSaver(sys.argv[1], require_empty=False, atomic=sys.argv[2] == "atomic")
    for step in (1, 2):
        saver({"model": torch.nn.Linear(64, 64).state_dict()}, f"checkpoint_{step}.pt")
    """
)


@pytest.mark.parametrize("atomic", [True, False])
def test_writer_killed_mid_write(tmp_path, atomic):
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), "atomic" if atomic else "plain"],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    assert proc.returncode == -9, proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    target = {"model": torch.nn.Linear(64, 64)}
    if atomic:
        # The cut write is an orphan temporary file; the newest *.pt is the last complete one.
        assert [n for n in names if n.endswith(".pt")] == ["checkpoint_1.pt"]
        assert len(names) == 2 and names[1].startswith("tmp")
        assert resume_from_latest(tmp_path, target) == tmp_path / "checkpoint_1.pt"
    else:
        assert names == ["checkpoint_1.pt", "checkpoint_2.pt"]
        # (checkpoint_2.pt is the newer, or has the same mtime and wins on its step)
        with pytest.warns(RuntimeWarning, match="checkpoint_2.pt"):
            assert resume_from_latest(tmp_path, target) == tmp_path / "checkpoint_1.pt"


# Two gloo ranks: each works in a "node" directory of its own and passes the relative "ckpt", so that a shared
# file system is simulated by a link and a missing one by no link. Rank 0 writes the checkpoints.
_TWO_RANKS = """
import warnings
import torch
from hotloop.reliability import resume_from_latest

def attempt(dirname, **kwargs):
    model = torch.nn.Linear(3, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = resume_from_latest(dirname, {"model": model}, **kwargs)
        except (FileNotFoundError, RuntimeError) as exc:
            return {"error": type(exc).__name__, "message": str(exc), "warnings": len(caught)}
    loaded = None if loaded is None else str(loaded)
    return {"loaded": loaded, "bias": model.bias.tolist(), "warnings": [str(w.message) for w in caught]}

node = tmp / f"node{rank}"
node.mkdir()
os.chdir(node)
if rank == 0:
    (node / "ckpt").mkdir()
    for step in (1, 2):
        torch.manual_seed(step)
        torch.save({"model": torch.nn.Linear(3, 2).state_dict()}, f"ckpt/checkpoint_{step}.pt")
        os.utime(f"ckpt/checkpoint_{step}.pt", ns=(step * 10**9, step * 10**9))
    with open("ckpt/checkpoint_2.pt", "r+b") as newest:  # truncated, and still the newest
        newest.truncate(100)
dist.barrier()
result = {"no shared directory": attempt("ckpt")}
if rank == 1:
    (node / "ckpt").symlink_to(tmp / "node0" / "ckpt")  # now shared
dist.barrier()
result["shared"] = attempt("ckpt")
result["missing"] = attempt("nowhere")
result["missing_ok"] = attempt("nowhere", missing_ok=True)
"""


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    return run_on_two_ranks(_TWO_RANKS, tmp_path_factory.mktemp("two_ranks"))


def test_in_a_process_group_rank_zero_chooses_and_every_rank_loads_that_checkpoint(two_ranks):
    rank0, rank1 = (rank["shared"] for rank in two_ranks)
    assert rank0["loaded"] == rank1["loaded"] == "ckpt/checkpoint_1.pt"  # the truncated newest skipped by both
    torch.manual_seed(1)
    assert rank0["bias"] == rank1["bias"] == torch.nn.Linear(3, 2).bias.tolist()
    assert len(rank0["warnings"]) == 1 and "skipping checkpoint 'ckpt/checkpoint_2.pt'" in rank0["warnings"][0]
    assert rank1["warnings"] == []  # one warning for the job: rank 0's


def test_in_a_process_group_no_rank_loads_unless_every_rank_can(two_ranks):
    for rank in two_ranks:  # rank 1 cannot read what rank 0 chose: both raise, neither loaded anything
        failed = rank["no shared directory"]
        assert failed["error"] == "RuntimeError"
        assert (
            "rank 0 chose 'ckpt/checkpoint_1.pt', but not every rank can load it (rank 1: it cannot be read"
            in (failed["message"])
        )
        assert "shared file system" in failed["message"]


def test_in_a_process_group_rank_zeros_error_is_every_ranks(two_ranks):
    for rank in two_ranks:
        assert rank["missing"]["error"] == "FileNotFoundError" and "does not exist" in rank["missing"]["message"]
        assert rank["missing_ok"]["loaded"] is None
