"""``examples/distributed_train.py`` run as ``docs/distributed.md`` says, with real processes on gloo (CPU).

The commands below are the documentation's (a test checks that each appears in a ```bash block of
``docs/distributed.md``); each runs in a subprocess with a timeout, with ``--output-dir`` and ``--no-progress``
appended, and every process it started is killed at the end (``_launch.Launches``). One process without a launcher
is the reference: two ranks, each with half the global batch, must end with its weights (float tolerance), its
metrics and its per-sample predictions, each validation sample counted once. Two ``torchrun`` agents as on two nodes,
and two processes given the environment SLURM's ``srun`` sets, must end bit-identical to the single-node
``torchrun`` run. (Restarts and preemption: ``test_elastic.py``.)
"""

from __future__ import annotations

import random
import re
import socket
from pathlib import Path
from typing import Any

import _launch
import pytest
import torch

_DOCS = _launch.ROOT / "docs" / "distributed.md"
ONE_PROCESS = "python examples/distributed_train.py"
TORCHRUN = "torchrun --standalone --nproc-per-node 2 examples/distributed_train.py"
SPAWN = "python examples/distributed_train.py --nproc-per-node 2"
# Two agents on one machine, as on two nodes; the test replaces the documented port with a free one.
TWO_NODES = (
    "torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29400 --rdzv-id job42 "
    "--local-addr 127.0.0.1 examples/distributed_train.py"
)
_VAL_SIZE = 9  # the example's default: not divisible by 2, so rank 0 evaluates 5 samples (3 batches), rank 1 four (2)


def _command(command: str, output_dir: Path, *extra: str, progress: bool = False) -> list[str]:
    return [*_launch.argv(command), "--output-dir", str(output_dir), *([] if progress else ["--no-progress"]), *extra]


def _run(command: str, output_dir: Path, *extra: str, progress: bool = False) -> _launch.Finished:
    env = _launch.clean_env(MASTER_PORT=str(_launch.free_port()))  # MASTER_PORT: idist.Parallel's spawn mode
    with _launch.Launches(output_dir) as launches:
        return launches.run(_command(command, output_dir, *extra, progress=progress), env)


def _results(output_dir: Path, world_size: int) -> list[dict[str, Any]]:
    return [torch.load(output_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Any]:
    output_dir = tmp_path_factory.mktemp("one_process")
    _run(ONE_PROCESS, output_dir).ok()
    (result,) = _results(output_dir, 1)
    return result


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory) -> tuple[list[dict[str, Any]], str, Path]:
    output_dir = tmp_path_factory.mktemp("torchrun")
    log = _run(TORCHRUN, output_dir).ok()
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
    log = _run(TORCHRUN, tmp_path, "--compile", "on").ok()
    ranks = _results(tmp_path, 2)
    _assert_matches_one_process(ranks, reference)
    assert log.count("hotloop: compiling the whole") <= 2  # a fallback warns once per step, if at all
    assert all(r["compiled_frames"] > 0 for r in ranks)  # torch.compile did run


def test_idist_parallel_spawn_gives_the_same_results(tmp_path, reference):
    _run(SPAWN, tmp_path, progress=True).ok()  # rank 0's progress bar on, too
    _assert_matches_one_process(_results(tmp_path, 2), reference)


def _assert_same_run(ranks: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Two launches of the same 2-rank job: bit-identical weights, metrics, predictions and shards."""
    for got, want in zip(ranks, expected, strict=True):
        assert (got["rank"], got["world_size"], got["backend"], got["iterations"]) == (
            want["rank"], want["world_size"], want["backend"], want["iterations"],
        )  # fmt: skip
        assert got["weights"].keys() == want["weights"].keys()
        assert all(torch.equal(got["weights"][name], want["weights"][name]) for name in want["weights"])
        assert got["metrics"] == want["metrics"]
        assert torch.equal(got["predictions"], want["predictions"])
        assert (got["local_eval_samples"], got["local_eval_batches"]) == (
            want["local_eval_samples"], want["local_eval_batches"],
        )  # fmt: skip


def test_two_agents_as_two_nodes_give_the_single_node_results(tmp_path, torchrun):
    endpoint = f"127.0.0.1:{_launch.free_port()}"
    command = _command(TWO_NODES.replace("127.0.0.1:29400", endpoint), tmp_path)
    with _launch.Launches(tmp_path) as launches:
        agents = [launches.start(command, _launch.clean_env()) for _ in range(2)]  # as on node 0 and node 1
        for finished in [launches.wait(agent) for agent in agents]:
            finished.ok()
    _assert_same_run(_results(tmp_path, 2), torchrun[0])


def _port_from_a_slurm_job_id() -> int:
    """A free port of the range Ignite derives from a SLURM job id (15000 + its last four digits)."""
    for _ in range(200):  # bounded: the range is almost all free
        port = random.randrange(15000, 25000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    pytest.skip("no free port in 15000-24999")


def test_slurm_environment_is_read_by_idist(tmp_path, torchrun):
    # What srun sets for `srun --ntasks 2 python examples/distributed_train.py` on one node; no MASTER_* variables:
    # Ignite takes the first host of the node list and 15000 + the job id's last four digits as the port.
    port = _port_from_a_slurm_job_id()
    slurm = {"SLURM_JOB_ID": f"7{port - 15000:04d}", "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1"}
    slurm["SLURM_JOB_NODELIST"] = "localhost"
    command = _command(ONE_PROCESS, tmp_path)
    with _launch.Launches(tmp_path) as launches:
        tasks = [
            launches.start(command, _launch.clean_env(**slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank)))
            for rank in range(2)
        ]
        for finished in [launches.wait(task) for task in tasks]:
            finished.ok()
    _assert_same_run(_results(tmp_path, 2), torchrun[0])


def test_the_commands_run_here_are_the_documented_ones():
    text = _DOCS.read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL))
    documented = {" ".join(line.split("#")[0].split()) for line in blocks.splitlines()}  # comments dropped
    for command in (ONE_PROCESS, TORCHRUN, SPAWN, TWO_NODES):
        assert command in documented, f"{command!r} is not a line of a ```bash block in {_DOCS.name}"
