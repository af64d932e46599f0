"""Elastic restarts and preemption of ``examples/distributed_train.py`` under ``torchrun``: 2 gloo ranks on the CPU.

Every run is ``docs/distributed.md``'s elastic command (``--elastic --checkpoint-every 3``: 2 epochs of 4 iterations,
checkpoints after iterations 3 and 6, Ignite's deterministic engine, ``resume_from_latest`` at start, a
``PreemptionHandler``) and must end bit-identical, on both ranks, to the same command run without interruption:
after a worker is SIGKILLed in the middle of an epoch (five runs in a row, since restarts used to fail one time in
three), after a worker stops answering (the other fails after the process-group timeout and torchrun restarts
both), after the newest checkpoint was truncated, and after SIGTERM to every worker followed by a new launch.
``_launch.Launches`` bounds every wait and kills every process a test started, torchrun's workers included.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import _launch
import pytest
import torch

ELASTIC = (
    "torchrun --standalone --nproc-per-node 2 --max-restarts 2 examples/distributed_train.py --elastic "
    "--checkpoint-every 3"
)
_EVERY = 3
_ITERATIONS = 8  # 2 epochs of 64 samples in global batches of 16


def _command(output_dir: Path, *extra: str, command: str = ELASTIC) -> list[str]:
    return [*_launch.argv(command), "--output-dir", str(output_dir), "--no-progress", *extra]


def _run(output_dir: Path, *extra: str, command: str = ELASTIC) -> _launch.Finished:
    with _launch.Launches(output_dir) as launches:
        return launches.run(_command(output_dir, *extra, command=command), _launch.clean_env())


def _results(output_dir: Path) -> list[dict[str, Any]]:
    return [torch.load(output_dir / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict[str, Any]]:
    """The same command, not interrupted."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    _run(output_dir).ok()
    ranks = _results(output_dir)
    assert [(r["start_iteration"], r["resumed_from"], r["iterations"]) for r in ranks] == [(0, None, 8)] * 2
    return ranks


def _assert_bit_identical(ranks: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    for got, want in zip(ranks, reference, strict=True):
        assert (got["rank"], got["world_size"], got["iterations"]) == (want["rank"], 2, _ITERATIONS)
        assert all(torch.equal(got["weights"][name], value) for name, value in want["weights"].items())
        assert got["metrics"] == want["metrics"]
        # The evaluation after the resume is exact: rank 0 evaluates 5 of the 9 samples, rank 1 four, none twice.
        assert (got["local_eval_samples"], want["local_eval_samples"]) == ((5, 5) if got["rank"] == 0 else (4, 4))
        assert got["predictions"].shape == (9, 3) and torch.equal(got["predictions"], want["predictions"])


def _assert_resumed_from(ranks: list[dict[str, Any]], iteration: int) -> None:
    for result in ranks:  # every rank resumed from the same checkpoint
        assert result["start_iteration"] == iteration
        assert Path(result["resumed_from"]).name == f"checkpoint_{iteration}.pt"


# Five runs in a row: the rank killed and the iteration (never a checkpoint's) differ, the scenario does not.
@pytest.mark.parametrize(("rank", "iteration"), [(1, 7), (0, 5), (1, 4), (0, 7), (1, 5)])
def test_a_killed_worker_restarts_the_group_and_all_resume_bit_identically(tmp_path, reference, rank, iteration):
    log = _run(tmp_path, "--fault", f"kill:{rank}:{iteration}").ok()
    assert log.count("resumed from None at iteration 0") == 1  # rank 0 logs; one start from scratch, one restart
    _assert_resumed_from(_results(tmp_path), iteration - iteration % _EVERY)
    _assert_bit_identical(_results(tmp_path), reference)


def test_a_rank_that_stops_answering_fails_the_other_after_the_timeout_and_the_group_restarts(tmp_path, reference):
    # Rank 1 sleeps for an hour after iteration 4; rank 0 waits for it in the evaluation's gather until the process
    # group's timeout (8 s), raises, and torchrun restarts both. Without a timeout gloo would wait 30 minutes, and
    # this test would hit _launch's.
    log = _run(tmp_path, "--fault", "hang:1:4", "--timeout", "8").ok()
    assert re.search(r"Timed out waiting 8000ms", log), log[-4000:]
    _assert_resumed_from(_results(tmp_path), 3)
    _assert_bit_identical(_results(tmp_path), reference)


def test_a_truncated_newest_checkpoint_is_skipped_the_same_way_on_every_rank(tmp_path, reference):
    no_restart = ELASTIC.replace("--max-restarts 2", "--max-restarts 0")
    assert _run(tmp_path, "--fault", "kill:1:7", command=no_restart).returncode != 0
    newest = tmp_path / "checkpoints" / "checkpoint_6.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    log = _run(tmp_path).ok()
    assert len(re.findall(r"skipping checkpoint .*checkpoint_6\.pt", log)) == 1  # one warning (rank 0's)
    _assert_resumed_from(_results(tmp_path), 3)
    _assert_bit_identical(_results(tmp_path), reference)


def _wait_for(path: Path, timeout_s: float = _launch.TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout_s} s"
        time.sleep(0.05)


@pytest.mark.parametrize("agent_too", [False, True], ids=["workers", "workers-and-agent"])
def test_sigterm_to_every_worker_saves_once_and_the_next_launch_resumes(tmp_path, reference, agent_too):
    # SLURM signals every process of the job; with the agent signalled too, it forwards a second SIGTERM to the
    # workers (which must not end them before they have saved) and exits non-zero after they are done.
    with _launch.Launches(tmp_path) as launches:
        agent = launches.start(_command(tmp_path, "--slow", "0.5"), _launch.clean_env())  # 0.5 s per iteration
        _wait_for(tmp_path / "checkpoints" / "checkpoint_3.pt")
        workers = launches.workers()
        assert len(workers) == 2
        for pid in [*workers, *([agent.pid] if agent_too else [])]:
            os.kill(pid, signal.SIGTERM)
        stopped = launches.wait(agent)
    log = stopped.log
    if agent_too:
        assert stopped.returncode != 0  # torchrun re-raises the signal it got, once its workers are done
    else:
        stopped.ok()  # the workers exited with 0, so torchrun did not restart them
    (at,) = (int(n) for n in re.findall(r"preempted after iteration (\d+)", log))  # rank 0's log
    assert _EVERY <= at < _ITERATIONS
    assert re.findall(r"saved \S*checkpoint_(\d+)\.pt", log).count(str(at)) == 1  # saved once
    assert not list(tmp_path.glob("rank*.pt"))  # the run did not finish
    _run(tmp_path).ok()
    _assert_resumed_from(_results(tmp_path), at)
    _assert_bit_identical(_results(tmp_path), reference)


def test_the_elastic_command_is_documented():
    text = (_launch.ROOT / "docs" / "distributed.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL))
    assert ELASTIC in {" ".join(line.split("#")[0].split()) for line in blocks.splitlines()}
