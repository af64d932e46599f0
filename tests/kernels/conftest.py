"""Kernel tests: in Triton's interpreter in a child process on machines without a GPU, compiled on CUDA otherwise.

triton chooses interpreter or compiler when ``@triton.jit`` runs, and its own library functions (``tl.max``,
``tl.sigmoid``…) are ``@triton.jit`` functions decorated when triton is imported, so ``TRITON_INTERPRET=1`` must be
set before triton is first imported and it then holds for the whole process. Setting it here would leak into every
other test module of the session (they share the process), so the kernel modules skip themselves unless the variable
is already set (or a GPU is present), and ``test_interpreter.py`` runs them in a child pytest process with the
variable set. The ``device`` fixture gives CUDA when the kernels run compiled, the host under the interpreter.
"""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture
def device() -> torch.device:
    """Where the kernels' inputs live: the host under the interpreter, the GPU otherwise."""
    return torch.device("cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")
