"""Workflow tests run tiny networks: one intra-op thread each.

On a loaded 2-core machine a second thread makes the backward pass of an 8x8 convolution ~8x slower (measured
0.55 s vs 4.4 s for a three-epoch differential trainer run), and results do not depend on the thread count here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
