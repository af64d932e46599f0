"""``hotloop.kernels.stats`` against its pure-PyTorch references (interpreted on the host, compiled on a GPU).

Grids: scores or label-map predictions × label maps or one-hot labels × ``ignore_index`` (none, a class, a value
outside the classes); odd volumes, B=1, C=1 and 2, many classes (several channel tiles; per-voxel atomics for the
confusion matrix), empty volumes; float32 / float16 / bfloat16 scores; integer, byte and float label maps with values
outside ``[0, C)``. Counts are integers: they must match exactly.
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
from hotloop.kernels import stats as kernels  # noqa: E402 - after the skip: imports triton

SIZES = [(2, 3, 37), (1, 2, 64), (2, 40, 23), (1, 5, 0)]  # (B, C, S)


def _inputs(batch, classes, volume, x_index, y_index, device, dtype=torch.float32, label_dtype=torch.int64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    if x_index:
        x = torch.randint(-1, classes + 1, (batch, 1, volume), generator=generator).to(label_dtype)
    else:
        x = torch.randn(batch, classes, volume, generator=generator).to(dtype)
    if y_index:
        y = torch.randint(0, classes + 2, (batch, 1, volume), generator=generator).to(label_dtype)
    else:  # one-hot, some voxels unlabelled
        label = torch.randint(0, classes + 1, (batch, volume), generator=generator)
        y = torch.nn.functional.one_hot(label, classes + 1)[..., :classes].permute(0, 2, 1).to(label_dtype)
    return x.to(device), y.to(device)


def _ignore_values(classes, y_index):
    return [None, 0, classes + 7] if y_index else [None, 1 % classes, classes + 7]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("x_index", "y_index"), [(False, True), (False, False), (True, True), (True, False)])
@pytest.mark.parametrize("which", ["class_counts", "confusion"])
def test_exclusive_counts_match_reference(device, size, x_index, y_index, which):
    batch, classes, volume = size
    x, y = _inputs(batch, classes, volume, x_index, y_index, device)
    launcher, reference = getattr(kernels, which), getattr(kernels, f"{which}_reference")
    for ignore_index in _ignore_values(classes, y_index):
        out = launcher(x, y, classes, x_index, y_index, ignore_index)
        assert out.dtype == torch.int64
        assert torch.equal(out, reference(x, y, classes, x_index, y_index, ignore_index)), ignore_index


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_exclusive_counts_from_half_scores(device, dtype):
    x, y = _inputs(2, 7, 51, False, True, device, dtype=dtype)
    x = x.round()  # ties: the first maximum wins, as torch.argmax
    assert torch.equal(kernels.class_counts(x, y, 7, False, True), kernels.class_counts_reference(x, y, 7, False, True))


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int32, torch.float32])
def test_label_map_dtypes(device, label_dtype):
    x, y = _inputs(2, 4, 45, False, True, device, label_dtype=label_dtype)
    if label_dtype == torch.float32:
        y[0, 0, :5] = 1.5  # not a whole number: no class
    out = kernels.confusion(x, y, 4, False, True, ignore_index=5)
    assert torch.equal(out, kernels.confusion_reference(x, y, 4, False, True, ignore_index=5))


def test_nan_scores_predict_their_first_nan_channel(device):
    x, y = _inputs(1, 20, 9, False, True, device)
    x[0, 3, 2] = float("nan")
    x[0, 17, 4] = float("nan")
    expected = kernels.confusion_reference(x, y, 20, False, True)
    assert torch.equal(kernels.confusion(x, y, 20, False, True), expected)
    assert expected[0, :, 3].sum() >= 1 and expected[0, :, 17].sum() >= 1


@pytest.mark.parametrize("size", [(2, 3, 37), (1, 1, 30), (2, 20, 23), (1, 4, 0)])
@pytest.mark.parametrize("y_index", [True, False])
@pytest.mark.parametrize(("sigmoid", "dtype"), [(True, torch.float32), (True, torch.bfloat16), (False, torch.uint8)])
def test_multilabel_counts_match_reference(device, size, y_index, sigmoid, dtype):
    batch, classes, volume = size
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(batch, classes, volume, generator=generator)
    x = (x if sigmoid else x > 0).to(dtype=dtype, device=device)
    if y_index:
        y = torch.randint(-1, classes + 1, (batch, 1, volume), generator=generator).float().to(device)
    else:
        y = (torch.rand(batch, classes, volume, generator=generator) > 0.6).to(device)
    for ignore_index in [None, 0] if y_index else [None]:
        out = kernels.multilabel_counts(x, y, y_index, sigmoid, 0.3, ignore_index)
        assert torch.equal(out, kernels.multilabel_counts_reference(x, y, y_index, sigmoid, 0.3, ignore_index))


def test_launchers_reject_bad_input(device):
    x = torch.zeros(2, 3, 5, device=device)
    with pytest.raises(ValueError, match="y should be"):
        kernels.class_counts(x, torch.zeros(2, 2, 5, device=device), 3, False, False)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        kernels.confusion(x.double(), torch.zeros(2, 1, 5, device=device), 3, False, True)
    with pytest.raises(ValueError, match="multi-hot"):
        kernels.multilabel_counts(x, torch.zeros(2, 3, 5, device=device), False, True, 0.5, ignore_index=1)


def test_ops_dispatch_to_the_kernels_with_backend_triton(device):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, 7, generator=generator).to(device)
    labels = torch.randint(0, 5, (2, 1, 5, 7), generator=generator).to(device)
    for activation in ("softmax", "sigmoid"):
        fused = ops.class_counts(logits, labels, activation=activation, ignore_index=4, backend="triton")
        torch_path = ops.class_counts(logits, labels, activation=activation, ignore_index=4, backend="torch")
        assert all(torch.equal(a, b) for a, b in zip(fused, torch_path))
    matrix = ops.confusion_matrix(logits, labels, per_sample=True, backend="triton")
    assert torch.equal(matrix, ops.confusion_matrix(logits, labels, per_sample=True, backend="torch"))
