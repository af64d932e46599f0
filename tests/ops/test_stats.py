"""``hotloop.ops.stats`` (the torch path here) against MONAI's ``get_confusion_matrix`` and Ignite's
``ConfusionMatrix``, on one-hot tensors built the way MONAI's chain builds them (``y == c`` per class)."""

from __future__ import annotations

import pytest
import torch
from ignite.metrics import ConfusionMatrix as IgniteConfusionMatrix

from hotloop import ops
from hotloop.ops import stats

monai = pytest.importorskip("monai")
from monai.metrics import get_confusion_matrix  # noqa: E402 - after the importorskip

SHAPES = [(2, 3, 5, 7), (1, 2, 4, 6), (2, 4, 3, 5, 7), (1, 20, 3, 4, 5), (2, 3, 0)]


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _hot(index: torch.Tensor, classes: int) -> torch.Tensor:
    """``[B, 1, *s]`` label values → ``[B, C, *s]`` booleans ``value == c``: MONAI's per-class reading."""
    shape = [1, classes] + [1] * (index.dim() - 2)
    return index == torch.arange(classes).view(shape)


def _monai_counts(pred_hot: torch.Tensor, label_hot: torch.Tensor, keep: torch.Tensor | None = None):
    """(tp, fp, fn) from MONAI's ``get_confusion_matrix`` over one-hot tensors, voxels outside ``keep`` removed."""
    pred_hot, label_hot = pred_hot.float(), label_hot.float()
    if keep is not None:
        pred_hot, label_hot = pred_hot * keep, label_hot * keep
    matrix = get_confusion_matrix(pred_hot, label_hot).long()  # [B, C, 4]: tp, fp, tn, fn
    return matrix[..., 0], pred_hot.flatten(2).sum(-1).long() - matrix[..., 0], matrix[..., 3]


def _assert_counts(counts: ops.ClassCounts, expected) -> None:
    for name, got, want in zip(("tp", "fp", "fn"), counts, expected):
        assert got.dtype == torch.int64, name
        assert torch.equal(got, want), name


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.uint8, torch.float32])
@pytest.mark.parametrize("chunk", [None, 96])
def test_softmax_counts_from_logits_and_label_maps(monkeypatch, shape, label_dtype, chunk):
    if chunk is not None:
        monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", chunk)  # many chunks, the last one short
    batch, classes, *spatial = shape
    logits = torch.randn(shape, generator=_generator())
    labels = torch.randint(0, classes + 2, (batch, 1, *spatial), generator=_generator(1)).to(label_dtype)
    if label_dtype == torch.float32 and labels.numel():
        labels.view(-1)[::7] = 0.5  # not a class
    counts = ops.class_counts(logits, labels)
    _assert_counts(counts, _monai_counts(_hot(logits.argmax(1, keepdim=True), classes), _hot(labels, classes)))


@pytest.mark.parametrize("shape", SHAPES)
def test_label_map_predictions_and_labels_without_channel_dim(shape):
    batch, classes, *spatial = shape
    predicted = torch.randint(-1, classes + 1, (batch, 1, *spatial), generator=_generator(2))
    labels = torch.randint(0, classes, (batch, *spatial), generator=_generator(3))
    counts = ops.class_counts(predicted, labels, num_classes=classes)
    _assert_counts(counts, _monai_counts(_hot(predicted, classes), _hot(labels.unsqueeze(1), classes)))
    # activation=None reads a label map of predictions the same way, as MONAI's DiceMetric does
    _assert_counts(ops.class_counts(predicted, labels, num_classes=classes, activation=None), counts)


@pytest.mark.parametrize("shape", SHAPES)
def test_one_hot_labels_with_unlabelled_voxels(shape):
    batch, classes, *spatial = shape
    logits = torch.randn(shape, generator=_generator(4))
    label_hot = _hot(torch.randint(0, classes + 1, (batch, 1, *spatial), generator=_generator(5)), classes)
    counts = ops.class_counts(logits, label_hot.float())
    _assert_counts(counts, _monai_counts(_hot(logits.argmax(1, keepdim=True), classes), label_hot))


@pytest.mark.parametrize("ignore_index", [0, 2, 255, -1])
def test_ignore_index_with_label_maps_removes_voxels_everywhere(ignore_index):
    logits = torch.randn(2, 3, 6, 7, generator=_generator(6))
    labels = torch.randint(0, 3, (2, 1, 6, 7), generator=_generator(7))
    labels[:, :, ::3] = ignore_index
    keep = (labels != ignore_index).float()
    counts = ops.class_counts(logits, labels, ignore_index=ignore_index)
    _assert_counts(counts, _monai_counts(_hot(logits.argmax(1, keepdim=True), 3), _hot(labels, 3), keep))


@pytest.mark.parametrize("ignore_index", [1, 7])
def test_ignore_index_with_one_hot_labels_follows_create_ignore_mask(ignore_index):
    logits = torch.randn(2, 3, 6, 7, generator=_generator(8))
    label_hot = _hot(torch.randint(0, 4, (2, 1, 6, 7), generator=_generator(9)), 3).float()
    # MONAI: a class index masks that class's voxels; any other value masks voxels with no class
    keep = 1 - label_hot[:, 1:2] if ignore_index == 1 else (label_hot.sum(1, keepdim=True) > 0).float()
    counts = ops.class_counts(logits, label_hot, ignore_index=ignore_index)
    _assert_counts(counts, _monai_counts(_hot(logits.argmax(1, keepdim=True), 3), label_hot, keep))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("label_map", [False, True])
def test_sigmoid_counts_match_the_monai_chain(monkeypatch, shape, dtype, label_map):
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 200)
    batch, classes, *spatial = shape
    logits = torch.randn(shape, generator=_generator(10)).to(dtype)
    if label_map:
        labels = torch.randint(0, classes + 1, (batch, 1, *spatial), generator=_generator(11))
        label_hot = _hot(labels, classes)
    else:
        labels = label_hot = torch.rand(shape, generator=_generator(11)) > 0.6  # multi-hot
    expected_pred = torch.sigmoid(logits.float()).to(dtype) >= 0.4  # Activations(sigmoid) then AsDiscrete(0.4)
    counts = ops.class_counts(logits, labels, activation="sigmoid", threshold=0.4)
    _assert_counts(counts, _monai_counts(expected_pred, label_hot))


@pytest.mark.parametrize("ignore_index", [0, 5])
def test_sigmoid_counts_with_ignore_index_and_multi_hot_labels(ignore_index):
    logits = torch.randn(2, 3, 40, generator=_generator(12))
    label_hot = (torch.rand(2, 3, 40, generator=_generator(13)) > 0.7).float()
    keep = 1 - label_hot[:, :1] if ignore_index == 0 else (label_hot.sum(1, keepdim=True) > 0).float()
    counts = ops.class_counts(logits, label_hot, activation="sigmoid", ignore_index=ignore_index)
    _assert_counts(counts, _monai_counts(torch.sigmoid(logits) >= 0.5, label_hot, keep))


def test_binarized_predictions_with_activation_none():
    pred_hot = torch.rand(2, 4, 30, generator=_generator(14)) > 0.5  # multi-hot predictions
    label_hot = torch.rand(2, 4, 30, generator=_generator(15)) > 0.5
    counts = ops.class_counts(pred_hot.float(), label_hot.long(), activation=None)
    _assert_counts(counts, _monai_counts(pred_hot, label_hot))


def test_nan_logits_take_torch_argmax():
    logits = torch.randn(1, 5, 40, generator=_generator(16))
    logits[0, 3, ::4] = float("nan")
    logits[0, 1, ::8] = float("nan")
    labels = torch.randint(0, 5, (1, 1, 40), generator=_generator(17))
    counts = ops.class_counts(logits, labels)
    _assert_counts(counts, _monai_counts(_hot(torch.argmax(logits, 1, keepdim=True), 5), _hot(labels, 5)))


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_confusion_matrix_matches_ignite(shape):
    batch, classes, *spatial = shape
    logits = torch.randn(shape, generator=_generator(18))
    labels = torch.randint(-1, classes + 2, (batch, *spatial), generator=_generator(19))  # some out of range
    ignite_metric = IgniteConfusionMatrix(num_classes=max(classes, 2))
    if classes > 1:
        ignite_metric.update((logits, labels))
        assert torch.equal(ops.confusion_matrix(logits, labels), ignite_metric.compute())
    per_sample = ops.confusion_matrix(logits, labels, per_sample=True)
    assert per_sample.shape == (batch, classes, classes)
    assert torch.equal(per_sample.sum(0), ops.confusion_matrix(logits, labels))


def test_confusion_matrix_of_an_empty_volume_is_zero():
    assert torch.equal(ops.confusion_matrix(torch.zeros(2, 3, 0), torch.zeros(2, 0)), torch.zeros(3, 3).long())


def test_histogram_by_index_add_equals_bincount(monkeypatch):
    logits = torch.randn(2, 6, 300, generator=_generator(20))
    labels = torch.randint(0, 7, (2, 1, 300), generator=_generator(21))
    expected = ops.confusion_matrix(logits, labels, per_sample=True)
    calls = []
    monkeypatch.setattr(torch, "bincount", lambda *args, **kwargs: calls.append(1))  # must not be reached
    monkeypatch.setattr(stats, "_bincount_syncs", lambda device: True)  # the CUDA choice, taken on the host
    assert torch.equal(ops.confusion_matrix(logits, labels, per_sample=True), expected)
    assert calls == []


def test_the_torch_path_reads_nothing_on_the_host(monkeypatch):
    logits, labels = torch.randn(2, 4, 50), torch.randint(0, 5, (2, 1, 50))

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync")

    def run():
        return (
            ops.class_counts(logits, labels, ignore_index=4),
            ops.class_counts(logits, labels, activation="sigmoid", ignore_index=4),
            ops.confusion_matrix(logits, labels),
        )

    expected = run()
    with monkeypatch.context() as patch:
        for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, forbidden)
        got = run()  # raises on any host read
    for a, b in zip(expected, got):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(x, y)


def test_bad_inputs_are_rejected():
    logits = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="activation"):
        ops.class_counts(logits, torch.zeros(2, 1, 4, 4), activation="relu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 classes"):
        ops.class_counts(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="num_classes=5"):
        ops.class_counts(logits, torch.zeros(2, 1, 4, 4), num_classes=5)
    with pytest.raises(ValueError, match="y should be"):
        ops.class_counts(logits, torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="1 or num_classes=3"):
        ops.class_counts(logits, torch.zeros(2, 2, 4, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ops.confusion_matrix(logits, [0, 1])  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.float32])
def test_inputs_are_left_unchanged(dtype):
    logits = torch.randn(2, 3, 40, generator=_generator(22))
    labels = torch.randint(-1, 5, (2, 1, 40), generator=_generator(23)).clamp(min=0 if dtype == torch.uint8 else -1)
    labels = labels.to(dtype)
    predicted = labels.clone()
    before = [t.clone() for t in (logits, labels, predicted)]
    ops.class_counts(logits, labels, ignore_index=1)
    ops.class_counts(predicted, labels, num_classes=3)
    ops.class_counts(logits, labels, activation="sigmoid")
    ops.confusion_matrix(logits, labels)
    assert all(torch.equal(a, b) for a, b in zip(before, (logits, labels, predicted)))
