"""hotloop.step.prefetch: a pass-through on the CPU; on CUDA (marked gpu), batches copied ahead on a side stream."""

from __future__ import annotations

import pytest
import torch

from hotloop.step import DevicePrefetcher, prefetch_enabled


def _batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(4, 3, generator=generator), "y": torch.arange(4) + i} for i in range(5)]


def test_prefetch_is_enabled_only_for_an_available_cuda_device() -> None:
    assert not prefetch_enabled(True, "cpu")
    assert not prefetch_enabled(False, "cuda")
    assert prefetch_enabled(True, "cuda") == torch.cuda.is_available()
    with pytest.raises(TypeError, match="prefetch should be True or False"):
        prefetch_enabled("yes", "cpu")  # type: ignore[arg-type]


def test_on_the_cpu_batches_pass_through_unchanged() -> None:
    batches = _batches()
    assert all(got is expected for got, expected in zip(DevicePrefetcher(batches, "cpu"), batches, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="prefetching copies to a CUDA device")
@pytest.mark.parametrize("pinned", [False, True])
def test_on_cuda_batches_arrive_on_the_device_equal_and_in_order(pinned: bool) -> None:
    batches = _batches()
    if pinned:
        batches = [{key: value.pin_memory() for key, value in batch.items()} for batch in batches]
    prefetcher = DevicePrefetcher(iter(batches), "cuda")
    assert prefetcher._stream is not None and prefetcher._stream != torch.cuda.current_stream()
    received = []
    for batch in prefetcher:
        assert all(value.is_cuda for value in batch.values())
        received.append({key: (value * 1).cpu() for key, value in batch.items()})  # a step reading the batch
    assert len(received) == len(batches)
    for got, expected in zip(received, batches):
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
