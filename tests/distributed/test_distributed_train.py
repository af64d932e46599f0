"""``examples/distributed_train.py`` run as ``docs/distributed.md`` says, with real processes on gloo (CPU).

The commands below are the documentation's (a test checks that each appears in a ```bash block of
``docs/distributed.md``); each runs in a subprocess with a timeout, with ``--output-dir`` and ``--no-progress``
appended. One process without a launcher is the reference: two ranks, each with half the global batch, must end with
its weights (float tolerance), its metrics and its per-sample predictions, each validation sample counted once.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

_ROOT = Path(__file__).resolve().parents[2]
_DOCS = _ROOT / "docs" / "distributed.md"
ONE_PROCESS = "python examples/distributed_train.py"
TORCHRUN = "torchrun --standalone --nproc-per-node 2 examples/distributed_train.py"
SPAWN = "python examples/distributed_train.py --nproc-per-node 2"
_TIMEOUT_S = 180  # cold interpreters importing torch on a busy 2-core machine; a hang is what this bounds
_VAL_SIZE = 9  # the example's default: not divisible by 2, so rank 0 evaluates 5 samples (3 batches), rank 1 four (2)
# Launcher and process-group variables of an outer job (pytest under torchrun or SLURM) would leak into the runs.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _argv(command: str) -> list[str]:
    """The documented command for this interpreter: ``python`` is ``sys.executable``, ``torchrun`` its module."""
    words = shlex.split(command)
    launcher = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}[words[0]]
    return [*launcher, *words[1:]]


def _run(command: str, output_dir: Path, *extra: str, progress: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", MASTER_PORT=str(_free_port()))  # MASTER_PORT: idist.Parallel's spawn mode
    argv = [*_argv(command), "--output-dir", str(output_dir), *([] if progress else ["--no-progress"]), *extra]
    return subprocess.run(argv, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S)


def _results(output_dir: Path, world_size: int) -> list[dict[str, Any]]:
    return [torch.load(output_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


def _ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, f"exit code {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    return run.stdout + run.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Any]:
    output_dir = tmp_path_factory.mktemp("one_process")
    _ok(_run(ONE_PROCESS, output_dir))
    (result,) = _results(output_dir, 1)
    return result


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory) -> tuple[list[dict[str, Any]], str, Path]:
    output_dir = tmp_path_factory.mktemp("torchrun")
    log = _ok(_run(TORCHRUN, output_dir))
    return _results(output_dir, 2), log, output_dir


def _assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def _assert_matches_one_process(ranks: list[dict[str, Any]], reference: dict[str, Any]) -> None:
    assert [(r["rank"], r["world_size"], r["backend"]) for r in ranks] == [(0, 2, "gloo"), (1, 2, "gloo")]
    assert reference["world_size"] == 1 and reference["backend"] is None
    for result in ranks:
        assert result["iterations"] == reference["iterations"] == 8  # 2 epochs of 64 samples in global batches of 16
        _assert_same_weights(result["weights"], reference["weights"])
        assert result["metrics"].keys() == reference["metrics"].keys() == {"accuracy", "loss"}
        assert result["metrics"]["accuracy"] == reference["metrics"]["accuracy"]  # a count of samples: exact
        assert result["metrics"]["loss"] == pytest.approx(reference["metrics"]["loss"], rel=1e-6)
        torch.testing.assert_close(result["predictions"], reference["predictions"], rtol=1e-5, atol=1e-6)


def test_two_ranks_train_and_evaluate_as_one_process_on_the_concatenated_batch(torchrun, reference):
    ranks, _, _ = torchrun
    for name in ranks[0]["weights"]:  # DDP keeps the replicas bit-identical
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name])
    _assert_matches_one_process(ranks, reference)


def test_each_validation_sample_is_evaluated_once(torchrun, reference):
    ranks, _, _ = torchrun
    local = [(r["local_eval_samples"], r["local_eval_batches"]) for r in ranks]
    assert local == [(5, 3), (4, 2)]  # uneven shards and batch counts, no padding duplicate
    assert reference["local_eval_samples"] == _VAL_SIZE
    for result in ranks:
        assert result["predictions"].shape == (_VAL_SIZE, 3)  # gathered on every rank, in dataset order


def test_rank_zero_alone_logs_and_writes_checkpoints(torchrun):
    ranks, log, output_dir = torchrun
    assert len(re.findall(r"epoch 2: accuracy", log)) == 1  # rank 1's logger is silenced by setup_logger
    assert len(re.findall(r"rank \d of 2, backend gloo", log)) == 1
    files = sorted(path.name for path in (output_dir / "checkpoints").iterdir())
    assert files == ["checkpoint_4.pt", "checkpoint_8.pt"]  # n_saved=2, one file per epoch, no rank suffix
    assert {Path(r["last_checkpoint"]).name for r in ranks} == {"checkpoint_8.pt"}  # bookkeeping on every rank
    saved = torch.load(output_dir / "checkpoints" / "checkpoint_8.pt", weights_only=False)
    assert saved["trainer"]["iteration"] == 8
    _assert_same_weights(saved["model"], ranks[0]["weights"])  # Checkpoint unwrapped DDP: plain module keys


def test_a_rank_that_raises_stops_the_other_rank(tmp_path):
    run = _run(TORCHRUN, tmp_path, "--fail-on-rank", "1")  # rank 0 waits in DDP's all-reduce meanwhile
    assert run.returncode != 0
    assert "RuntimeError: injected failure on rank 1" in run.stderr
    assert not list(tmp_path.glob("rank*.pt"))  # neither rank finished


def test_compiled_steps_under_ddp_give_the_eager_results(tmp_path, reference):
    run = _run(TORCHRUN, tmp_path, "--compile", "on")
    log = _ok(run)
    ranks = _results(tmp_path, 2)
    _assert_matches_one_process(ranks, reference)
    assert log.count("hotloop: compiling the whole") <= 2  # a fallback warns once per step, if at all
    assert all(r["compiled_frames"] > 0 for r in ranks)  # torch.compile did run


def test_idist_parallel_spawn_gives_the_same_results(tmp_path, reference):
    _ok(_run(SPAWN, tmp_path, progress=True))  # rank 0's progress bar on, too
    _assert_matches_one_process(_results(tmp_path, 2), reference)


def test_the_commands_run_here_are_the_documented_ones():
    text = _DOCS.read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL))
    documented = {" ".join(line.split("#")[0].split()) for line in blocks.splitlines()}  # comments dropped
    for command in (ONE_PROCESS, TORCHRUN, SPAWN):
        assert command in documented, f"{command!r} is not a line of a ```bash block in {_DOCS.name}"
