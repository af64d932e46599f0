"""Runs the kernel test modules in Triton's interpreter, in a child pytest process (see ``conftest.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
_HERE = Path(__file__).resolve().parent
_MODULES = ("test_postprocess_kernels.py", "test_stats_kernels.py")


@pytest.mark.skipif(_INTERPRETING, reason="this process interprets already: the kernel modules run in it directly")
def test_kernel_modules_pass_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(_HERE / m) for m in _MODULES)]
    child = subprocess.run(command, env=env, cwd=_HERE.parents[1], capture_output=True, text=True, timeout=280)
    report = child.stdout[-6000:] + child.stderr[-2000:]
    assert child.returncode == 0, report
    passed = re.search(r"(\d+) passed", child.stdout)
    assert passed is not None and int(passed.group(1)) > 100, report
    assert " skipped" not in child.stdout.splitlines()[-1], report
