"""Start ``examples/distributed_train.py`` the way the documentation does, and leave no process behind.

``torchrun`` starts its workers in sessions of their own, so they survive the agent when it is killed (by a test's
timeout, say) and are not in its process group. Every process started through :class:`Launches` therefore carries a
tag in its environment, which the workers inherit, and leaving the ``with`` block SIGKILLs every process that still
carries it, wherever it has been reparented. Each wait is bounded by a timeout.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180  # cold interpreters importing torch on a busy 2-core machine; a hang is what this bounds
# Launcher and process-group variables of an outer job (pytest under torchrun or SLURM) would leak into the runs.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_TAG = "HOTLOOP_TEST_LAUNCH"


def free_port() -> int:
    """A port that was free a moment ago (bound to port 0 and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def argv(command: str) -> list[str]:
    """The documented command for this interpreter: ``python`` is ``sys.executable``, ``torchrun`` its module."""
    words = shlex.split(command)
    launcher = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}[words[0]]
    return [*launcher, *words[1:]]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without launcher or SLURM variables, one thread per rank, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@dataclass
class Finished:
    """What a launched command left: its exit code and its output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    def ok(self) -> str:
        """The output, after checking that the command exited with 0."""
        assert self.returncode == 0, f"exit code {self.returncode}:\n{self.stdout[-3000:]}\n{self.stderr[-6000:]}"
        return self.log


class Launches:
    """Processes started with a common tag; on leaving the ``with`` block, every tagged process is SIGKILLed."""

    def __init__(self, log_dir: Path) -> None:
        self.tag, self.log_dir = uuid.uuid4().hex, log_dir
        self._started: list[tuple[subprocess.Popen, Path, Path]] = []

    def __enter__(self) -> Launches:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill_all()

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Starts ``command`` in ``ROOT``, its output in files of ``log_dir``."""
        name = f"launch-{self.tag[:8]}-{len(self._started)}"
        out, err = self.log_dir / f"{name}.out", self.log_dir / f"{name}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(command, cwd=ROOT, env={**env, _TAG: self.tag}, stdout=stdout, stderr=stderr)
        self._started.append((process, out, err))
        return process

    def wait(self, process: subprocess.Popen, timeout: float = TIMEOUT_S) -> Finished:
        """Waits for ``process`` (at most ``timeout`` seconds: then it fails the test, processes killed on exit)."""
        _, out, err = next(entry for entry in self._started if entry[0] is process)
        returncode = process.wait(timeout=timeout)
        return Finished(returncode, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def run(self, command: list[str], env: dict[str, str], timeout: float = TIMEOUT_S) -> Finished:
        return self.wait(self.start(command, env), timeout)

    def tagged(self) -> list[int]:
        """The processes that carry this tag: what was started, and everything they started."""
        marker = f"{_TAG}={self.tag}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:  # gone meanwhile, or another user's
                    continue
        return found

    def workers(self, script: str = "distributed_train.py") -> list[int]:
        """The tagged processes that run ``script`` itself (not ``torchrun``'s agent)."""
        pids = []
        for pid in self.tagged():
            try:
                words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(word.endswith(script.encode()) for word in words) and b"torch.distributed.run" not in words:
                pids.append(pid)
        return pids

    def kill_all(self) -> None:
        """SIGKILLs every tagged process (a few rounds: a dying agent may still start one) and reaps ours."""
        for _ in range(5):
            pids = self.tagged()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for process, _, _ in self._started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
