"""``hotloop.kernels.postprocess`` against its pure-PyTorch references (interpreted on the host, compiled on a GPU).

Grids: odd 2D/3D shapes, B=1, C=1, C=2, many classes (more than one channel tile of 16), empty tensors; float32,
float16 and bfloat16 with tolerances for the softmax (the discrete outputs must match exactly).
"""

from __future__ import annotations

import os

import pytest
import torch

if not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()):
    pytest.skip("run in Triton's interpreter by test_interpreter.py (see conftest.py)", allow_module_level=True)
pytest.importorskip("triton")
pytestmark = pytest.mark.gpu  # natively compiled on a GPU by ./dev gpu (docs/gpu.md)

from hotloop import ops  # noqa: E402 - after the skip
from hotloop.kernels import postprocess as kernels  # noqa: E402 - after the skip: imports triton

SHAPES = [
    (2, 3, 5, 7),  # 2D, odd
    (1, 1, 4),  # B=1, C=1
    (2, 2, 3, 5, 7),  # 3D, C=2
    (1, 40, 9),  # many classes: three channel tiles
    (2, 3, 0),  # empty volume
    (0, 3, 4),  # empty batch
]
DTYPES = [(torch.float32, 1e-6, 1e-5), (torch.float16, 1e-3, 1e-3), (torch.bfloat16, 8e-3, 1e-2)]


def _scores(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=generator)).to(dtype=dtype, device=device)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPES)
def test_softmax_matches_reference(device, shape, dtype, atol, rtol):
    x = _scores(shape, dtype, device)
    out = kernels.softmax(x, dim=1)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, kernels.softmax_reference(x, 1), atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("keepdim", "one_hot"), [(True, False), (False, False), (True, True)])
def test_argmax_matches_reference_exactly(device, shape, dtype, keepdim, one_hot):
    x = _scores(shape, dtype, device).round()  # rounded: many ties, which must go to the first maximum
    out = kernels.argmax(x, 1, keepdim=keepdim, one_hot=one_hot)
    assert out.dtype == torch.float32
    assert torch.equal(out, kernels.argmax_reference(x, 1, keepdim=keepdim, one_hot=one_hot))


def test_argmax_puts_nan_above_everything_like_torch(device):
    x = _scores((2, 20, 11), torch.float32, device)
    x[0, 3, 2] = float("nan")
    x[1, 17, 5] = float("nan")
    x[1, 19, 5] = float("nan")
    x[1, :, 7] = float("-inf")
    x[0, 18, 9] = float("inf")
    out = kernels.argmax(x, 1, dtype=torch.long)
    assert torch.equal(out, torch.argmax(x, 1, keepdim=True))
    assert out[0, 0, 2] == 3 and out[1, 0, 5] == 17 and out[1, 0, 7] == 0


@pytest.mark.parametrize("shape", [(2, 1, 5, 7), (1, 1, 3, 5, 7), (2, 1, 0)])
@pytest.mark.parametrize("num_classes", [1, 2, 40])
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.uint8, torch.float32])
def test_one_hot_matches_reference(device, shape, num_classes, label_dtype):
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, num_classes + 2, shape, generator=generator).to(dtype=label_dtype, device=device)
    out = kernels.one_hot(labels, num_classes, 1, dtype=torch.float16)
    assert out.dtype == torch.float16 and out.shape[1] == num_classes
    assert torch.equal(out, kernels.one_hot_reference(labels, num_classes, 1, torch.float16))


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 4), (2, 2, 3, 5, 7), (0, 3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("sigmoid", "threshold"), [(False, 0.5), (False, -1.3), (True, 0.3), (True, 0.5)])
def test_threshold_matches_reference_exactly(device, shape, dtype, sigmoid, threshold):
    x = _scores(shape, dtype, device)
    out = kernels.threshold(x, threshold, sigmoid=sigmoid)
    assert torch.equal(out, kernels.threshold_reference(x, threshold, sigmoid=sigmoid))


def test_threshold_is_rounded_to_the_input_dtype_like_torch(device):
    # 0.2999 is 0.2998 in float16: torch compares in float16, where 0.2998 passes; in float32 it would not.
    x = torch.tensor([0.2999, 0.2996, 0.3003], dtype=torch.float16, device=device)
    out = kernels.threshold(x, 0.2999)
    assert out.tolist() == (x >= 0.2999).float().tolist() == [1.0, 0.0, 1.0]
    assert (x.float() >= 0.2999).tolist() == [False, False, True]


@pytest.mark.parametrize("dim", [0, 2, -1])
def test_channel_dim_anywhere(device, dim):
    x = _scores((4, 3, 6), torch.float32, device)
    torch.testing.assert_close(kernels.softmax(x, dim), kernels.softmax_reference(x, dim))
    assert torch.equal(kernels.argmax(x, dim, one_hot=True), kernels.argmax_reference(x, dim, one_hot=True))


def test_non_contiguous_input(device):
    x = _scores((2, 7, 3, 5), torch.float32, device).transpose(2, 3)
    assert torch.equal(kernels.argmax(x, 1), kernels.argmax_reference(x, 1))


def test_launchers_reject_bad_input(device):
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        kernels.softmax(torch.zeros(2, 3, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="dim"):
        kernels.argmax(torch.zeros(2, 3, device=device), dim=2)
    with pytest.raises(ValueError, match="empty channel"):
        kernels.argmax(torch.zeros(2, 0, 3, device=device))
    with pytest.raises(ValueError, match="size 1"):
        kernels.one_hot(torch.zeros(2, 2, 3, dtype=torch.long, device=device), 3)


def test_ops_dispatch_to_the_kernels_with_backend_triton(device):
    x = _scores((2, 5, 4, 6), torch.float16, device)
    labels = torch.randint(0, 5, (2, 1, 4, 6), device=device)
    onehot = ops.softmax_argmax(x, to_onehot=5, backend="triton")
    assert torch.equal(onehot, ops.softmax_argmax(x, to_onehot=5, backend="torch"))
    assert torch.equal(ops.sigmoid_threshold(x, 0.4, backend="triton"), ops.sigmoid_threshold(x, 0.4, backend="torch"))
    assert torch.equal(ops.one_hot(labels, 5, backend="triton"), ops.one_hot(labels, 5, backend="torch"))
    assert torch.equal(ops.argmax(x, backend="triton"), ops.argmax(x, backend="torch"))
    torch.testing.assert_close(ops.softmax(x, backend="triton"), ops.softmax(x, backend="torch"), atol=1e-3, rtol=1e-3)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="checks interpreter mode")
def test_kernels_are_interpreted():
    assert type(kernels._softmax_kernel).__name__ == "InterpretedFunction"
