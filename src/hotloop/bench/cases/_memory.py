"""Peak extra memory of one benchmark round, measured in a fresh child process (shared by the cases that report it).

The parent runs ``python -m <case module> --child ...``; the child builds the provider, runs one warm-up round, then
measures one more round: on CUDA the allocator's peak above what was allocated before, on the host the high-water
mark of the resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) above the resident set before.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = ["measure_in_child", "peak_extra_bytes", "supported"]


def supported() -> bool:
    """Whether the host measurement can run (Linux's ``/proc/self/clear_refs``)."""
    return Path("/proc/self/clear_refs").exists()


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(run: Callable[[], object], cuda: bool) -> int:
    """In the child: bytes of peak memory above the memory before one ``run()`` (after a warm-up ``run()``)."""
    run()
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    run()
    return (_status_kib("VmHWM") - before) * 1024


def measure_in_child(module: str, child_args: Sequence[str], what: str) -> int | None:
    """Runs ``python -m module --child *child_args`` and returns the ``peak_extra_bytes`` it prints; None off Linux.

    Raises:
        RuntimeError: the child failed; the message names ``what`` and carries the child's stderr.
    """
    if not supported():
        return None
    # Small mmap threshold: freed blocks go back to the OS, so the high-water mark sees each round's own peak.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [sys.executable, "-m", module, "--child", *child_args]
    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if child.returncode:
        raise RuntimeError(f"peak-memory child for {what} failed:\n{child.stderr}")
    return int(json.loads(child.stdout.strip().splitlines()[-1])["peak_extra_bytes"])
