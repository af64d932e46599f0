"""``hotloop.ops.postprocess`` against MONAI's ``Activations`` / ``AsDiscrete`` applied per sample.

Values and dtypes must equal MONAI's. Logits are drawn so that no two classes of a voxel are closer than 1: MONAI
takes the argmax of softmax probabilities rounded to the input dtype, which can tie where the logits do not (the one
documented difference of ``softmax_argmax``).
"""

from __future__ import annotations

import pytest
import torch

from hotloop import ops

monai = pytest.importorskip("monai")
from monai.transforms import Activations, AsDiscrete  # noqa: E402 - after the importorskip

SHAPES = [(2, 3, 5, 7), (1, 1, 4, 6), (2, 2, 3, 5, 7), (1, 20, 3, 4, 5), (3, 4, 9)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _logits(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Logits whose classes differ by at least 1 per voxel: a random permutation of 0..C-1 per voxel, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    channels = shape[1]
    order = torch.rand(shape, generator=generator).argsort(dim=1).float()
    return (order + 0.2 * torch.rand(shape, generator=generator) - channels / 2).to(dtype)


def _per_sample(transform, batch: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.as_tensor(transform(sample)) for sample in batch])


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, exact: bool = True) -> None:
    theirs = theirs.as_tensor() if hasattr(theirs, "as_tensor") else theirs
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if exact:
        assert torch.equal(ours, theirs)
    else:  # torch's kernels on a batch and on one sample take other vectorized / scalar paths: 1 ulp apart
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_match_monai(shape, dtype):
    x = _logits(shape, dtype)
    _assert_same(ops.sigmoid(x), _per_sample(Activations(sigmoid=True), x), exact=False)
    _assert_same(ops.softmax(x), _per_sample(Activations(softmax=True), x), exact=False)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_discretisations_match_monai(shape, dtype):
    x = _logits(shape, dtype)
    channels = shape[1]
    _assert_same(ops.argmax(x), _per_sample(AsDiscrete(argmax=True), x))
    _assert_same(ops.threshold(x, 0.3), _per_sample(AsDiscrete(threshold=0.3), x))
    labels = ops.argmax(x, dtype=torch.long)
    _assert_same(ops.one_hot(labels, channels), _per_sample(AsDiscrete(to_onehot=channels), labels))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_chains_match_monai_chains(shape, dtype):
    x = _logits(shape, dtype)
    channels = shape[1]
    softmax = Activations(softmax=True)
    to_classes = AsDiscrete(argmax=True, to_onehot=channels)
    _assert_same(ops.softmax_argmax(x, to_onehot=channels), _per_sample(lambda s: to_classes(softmax(s)), x))
    to_index = AsDiscrete(argmax=True)
    _assert_same(ops.softmax_argmax(x), _per_sample(lambda s: to_index(softmax(s)), x))
    sigmoid, binarize = Activations(sigmoid=True), AsDiscrete(threshold=0.6)
    _assert_same(ops.sigmoid_threshold(x, 0.6), _per_sample(lambda s: binarize(sigmoid(s)), x))


def test_keepdim_dtype_and_channel_dim_options_match_monai():
    x = _logits((2, 4, 3, 5), torch.float32).transpose(1, 3)  # channels at dim 3: [2, 5, 3, 4]
    ours = ops.argmax(x, dim=3, keepdim=False, dtype=torch.int32)
    theirs = _per_sample(AsDiscrete(argmax=True, dim=2, keepdim=False, dtype=torch.int32), x)
    _assert_same(ours, theirs)
    _assert_same(ops.softmax(x, dim=3), _per_sample(Activations(softmax=True, dim=2), x), exact=False)
    labels = torch.randint(0, 4, (2, 1, 6))
    _assert_same(
        ops.one_hot(labels, 4, dtype=torch.uint8), _per_sample(AsDiscrete(to_onehot=4, dtype=torch.uint8), labels)
    )


def test_softmax_argmax_to_a_different_class_count_matches_monai():
    x = _logits((2, 3, 4, 4), torch.float32)
    chain = AsDiscrete(argmax=True, to_onehot=5)
    _assert_same(ops.softmax_argmax(x, to_onehot=5), _per_sample(chain, x))


def test_softmax_argmax_takes_the_argmax_of_the_logits():
    # Two logits 1e-4 apart: float16 probabilities tie (MONAI's chain picks class 0); the logits do not.
    x = torch.tensor([[[0.0], [1e-4]]], dtype=torch.float32).half()
    assert ops.softmax_argmax(x).item() == 1.0


def test_one_hot_of_out_of_range_labels_is_zero():
    labels = torch.tensor([[[0, 2, -1, 3, 7]]])
    out = ops.one_hot(labels, 3)
    assert out[0].T.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 4)])
def test_empty_inputs(shape):
    x = torch.zeros(shape)
    assert ops.softmax(x).shape == shape
    assert ops.softmax_argmax(x, to_onehot=3).shape == shape
    assert ops.argmax(x).shape == (shape[0], 1, shape[2])
    assert ops.sigmoid_threshold(x).dtype == torch.float32


def test_nan_logits_follow_torch_argmax():
    x = torch.randn(1, 4, 6)
    x[0, 2, 3] = float("nan")
    assert torch.equal(ops.argmax(x, dtype=torch.long), torch.argmax(x, 1, keepdim=True))


def test_bad_arguments_are_rejected():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="dim"):
        ops.softmax(x, dim=3)
    with pytest.raises(ValueError, match="num_classes"):
        ops.one_hot(torch.zeros(2, 1, 4), 0)
    with pytest.raises(ValueError, match="size 1"):
        ops.one_hot(x, 3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        ops.argmax([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        ops.softmax(x, backend="cuda")  # type: ignore[arg-type]
