"""Run a snippet of Python on two ``gloo`` ranks (two subprocesses on 127.0.0.1) and collect what each returns.

The snippet runs after ``torch.distributed.init_process_group("gloo")`` and ``idist.sync()``, with ``rank`` and
``tmp`` (a ``pathlib.Path``) defined; it sets ``result`` to something JSON can write. Each process is waited for
with a timeout and killed if it is still there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

_TIMEOUT_S = 180  # two cold interpreters importing torch on a busy 2-core machine
_PRELUDE = """
import json, os, pathlib, sys
from datetime import timedelta
import ignite.distributed as idist
import torch.distributed as dist
dist.init_process_group("gloo", timeout=timedelta(seconds=60))
idist.sync()
rank, tmp, result = dist.get_rank(), pathlib.Path(sys.argv[1]), None
"""
# The pause: hotloop.distributed._drain's (a gloo worker thread asking for the GIL while the interpreter shuts down
# aborts a successful run, "terminate called without an active exception").
_POSTLUDE = """
print("RESULT " + json.dumps(result), flush=True)
dist.destroy_process_group()
import time
time.sleep(0.05)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_on_two_ranks(snippet: str, tmp: Path) -> list[Any]:
    """What ``result`` was on rank 0 and on rank 1; fails with both ranks' output if one exits non-zero."""
    code = _PRELUDE + textwrap.dedent(snippet) + _POSTLUDE
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    base["OMP_NUM_THREADS"] = "1"
    logs = [tmp / f"rank{rank}.log" for rank in range(2)]
    processes = []
    for rank, log in enumerate(logs):
        with open(log, "wb") as output:  # a file, not a pipe: a rank blocked on a full pipe would block the other
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            command = [sys.executable, "-c", code, str(tmp)]
            processes.append(subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT))
    try:
        for process in processes:
            process.wait(timeout=_TIMEOUT_S)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    outputs = [log.read_text(errors="replace") for log in logs]
    results = []
    for rank, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"rank {rank} exited with {process.returncode}:\n{output[-4000:]}"
        (line,) = [line for line in output.splitlines() if line.startswith("RESULT ")]
        results.append(json.loads(line.removeprefix("RESULT ")))
    return results
