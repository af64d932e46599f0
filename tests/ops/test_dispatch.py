"""Backend choice of the ops, with the availability probes patched so that the GPU logic runs on the host."""

from __future__ import annotations

import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

from hotloop import ops
from hotloop.ops import _dispatch, postprocess, stats


@pytest.fixture
def on_cuda(monkeypatch):
    """Host tensors look like CUDA tensors to the dispatcher; the one-warning latch is reset."""
    monkeypatch.setattr(_dispatch, "_on_cuda", lambda tensor: True)
    monkeypatch.setattr(_dispatch, "_warned_no_triton", False)
    monkeypatch.setattr(_dispatch, "_interpreting", lambda: False)


@pytest.fixture
def fake_kernels(monkeypatch):
    """Records launcher calls instead of running Triton."""
    calls: list[str] = []

    def recorder(name):
        def launch(*args, **kwargs):
            calls.append(name)
            return getattr(postprocess_reference, name)(*args, **kwargs)

        return launch

    postprocess_reference = SimpleNamespace(
        softmax=lambda x, dim: torch.softmax(x.float(), dim).to(x.dtype),
        argmax=lambda x, dim, keepdim=True, one_hot=False, dtype=torch.float32: torch.argmax(x, dim, True).to(dtype),
    )
    fake = SimpleNamespace(softmax=recorder("softmax"), argmax=recorder("argmax"))
    monkeypatch.setattr(postprocess, "_kernels", lambda: fake)
    monkeypatch.setattr(stats, "_kernels", lambda: SimpleNamespace(class_counts=recorder("class_counts")))
    return calls


def test_cuda_with_triton_takes_the_kernels(on_cuda, fake_kernels, monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", True)
    x = torch.randn(2, 3, 4)
    ops.softmax(x)
    ops.argmax(x)
    assert fake_kernels == ["softmax", "argmax"]


def test_cuda_with_triton_keeps_unsupported_dtypes_on_the_torch_path(on_cuda, fake_kernels, monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", True)
    out = ops.softmax(torch.randn(2, 3, 4, dtype=torch.float64))
    assert fake_kernels == [] and out.dtype == torch.float64


def test_cuda_without_triton_warns_once_and_takes_the_torch_path(on_cuda, fake_kernels, monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", False)
    x = torch.randn(2, 3, 4)
    with pytest.warns(RuntimeWarning, match=r"hotloop\[triton\]") as record:
        first = ops.softmax(x)
        ops.class_counts(x, torch.randint(0, 3, (2, 1, 4)))
        ops.argmax(x)
    assert len(record) == 1
    assert fake_kernels == []
    torch.testing.assert_close(first, torch.softmax(x, 1))


def test_host_tensors_never_warn(fake_kernels, monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", False)
    monkeypatch.setattr(_dispatch, "_warned_no_triton", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.softmax(torch.randn(2, 3, 4))
    assert fake_kernels == []


def test_asking_for_triton_without_it_names_the_extra(monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'hotloop\[triton\]'"):
        ops.softmax(torch.randn(2, 3), backend="triton")


def test_asking_for_triton_on_host_tensors_outside_the_interpreter_is_an_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", True)
    monkeypatch.setattr(_dispatch, "_interpreting", lambda: False)
    with pytest.raises(ValueError, match="CUDA tensors"):
        ops.argmax(torch.randn(2, 3), backend="triton")


def test_asking_for_triton_with_unsupported_input_is_an_error(monkeypatch, on_cuda):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", True)
    with pytest.raises(ValueError, match="does not handle"):
        ops.softmax(torch.randn(2, 3, dtype=torch.float64), backend="triton")


def test_backend_torch_never_launches(on_cuda, fake_kernels, monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", True)
    ops.softmax(torch.randn(2, 3), backend="torch")
    assert fake_kernels == []


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="'auto', 'torch', 'triton'"):
        _dispatch.use_triton("cuda", torch.zeros(1))  # type: ignore[arg-type]


def test_importing_ops_does_not_import_triton():
    code = "import sys, hotloop.ops, hotloop.metrics; print('triton' in sys.modules)"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "False"
