"""``MeanDice`` / ``MeanIoU`` against MONAI's ``DiceMetric`` / ``MeanIoU`` (and its Ignite handlers) on the same data.

MONAI gets what its users feed it: ``Activations`` + ``AsDiscrete`` per sample, one-hot labels; hotloop gets the
logits and label maps. The batches include classes absent from the labels (NaN scores with ``ignore_empty``), from
the predictions, and from both.
"""

from __future__ import annotations

import copy
import math

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError

from hotloop.metrics import MeanDice, MeanIoU

monai = pytest.importorskip("monai")
from monai.handlers import MeanDice as MonaiMeanDice  # noqa: E402 - after the importorskip
from monai.metrics import DiceMetric  # noqa: E402
from monai.metrics import MeanIoU as MonaiMeanIoU  # noqa: E402
from monai.transforms import Activations, AsDiscrete  # noqa: E402

REDUCTIONS = ["mean", "sum", "mean_batch", "sum_batch", "mean_channel", "sum_channel", "none"]
CLASSES = 4


def _exclusive_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logits [2, 4, 6, 7] and label maps [2, 1, 6, 7]; empty classes in labels and predictions."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for step in range(2):
        logits = torch.randn(2, CLASSES, 6, 7, generator=generator)
        labels = torch.randint(0, CLASSES, (2, 1, 6, 7), generator=generator)
        labels[0][labels[0] == 3] = 0  # class 3 absent from sample 0's labels
        logits[1, 2] -= 10  # class 2 never predicted in sample 1
        if step == 1:
            labels[1][labels[1] == 2] = 1  # ...and absent from its labels: empty in both
        batches.append((logits, labels))
    return batches


def _multilabel_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        logits = torch.randn(2, 3, 6, 7, generator=generator)
        labels = (torch.rand(2, 3, 6, 7, generator=generator) > 0.6).float()
        labels[0, 1] = 0  # channel 1 empty in sample 0
        batches.append((logits, labels))
    return batches


def _monai_inputs(activation, logits, labels):
    """What a MONAI user passes to the metric: per-sample postprocessing, one-hot labels."""
    if activation == "sigmoid":
        post = [AsDiscrete(threshold=0.5)(Activations(sigmoid=True)(x)) for x in logits]
        return torch.stack([torch.as_tensor(p) for p in post]), labels
    post = [AsDiscrete(argmax=True, to_onehot=CLASSES)(Activations(softmax=True)(x)) for x in logits]
    hot_labels = [AsDiscrete(to_onehot=CLASSES)(y) for y in labels]
    return torch.stack([torch.as_tensor(p) for p in post]), torch.stack([torch.as_tensor(y) for y in hot_labels])


def _batches(activation):
    return _multilabel_batches() if activation == "sigmoid" else _exclusive_batches()


def _hotloop_inputs(activation, logits, labels):
    if activation is None:  # binarized input, as MONAI's metric takes it
        return _monai_inputs("softmax", logits, labels)
    return logits, labels


def _as_handler_result(result):
    """What MONAI's Ignite handler makes of ``aggregate()``: squeezed, a float when one element."""
    result = torch.as_tensor(result).squeeze()
    return result.item() if result.ndim == 0 else result


def _assert_equal_results(ours, theirs):
    if isinstance(theirs, float):
        assert isinstance(ours, float)
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-7) or (math.isnan(ours) and math.isnan(theirs))
    else:
        torch.testing.assert_close(ours, theirs.as_tensor() if hasattr(theirs, "as_tensor") else theirs, equal_nan=True)


def _run(metric, activation):
    for logits, labels in _batches(activation):
        metric.update(_hotloop_inputs(activation, logits, labels))
    return metric.compute()


def _run_monai(metric, activation):
    for logits, labels in _batches(activation):
        metric(*_monai_inputs(activation, logits, labels))
    return _as_handler_result(metric.aggregate())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", None])
def test_mean_dice_equals_monai_dice_metric(reduction, include_background, ignore_empty, activation):
    kwargs = {"include_background": include_background, "reduction": reduction}
    ours = MeanDice(**kwargs, ignore_empty=ignore_empty, activation=activation, save_details=False)
    theirs = DiceMetric(**kwargs, ignore_empty=ignore_empty)
    _assert_equal_results(_run(ours, activation), _run_monai(theirs, activation))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", None])
def test_mean_iou_equals_monai_mean_iou(reduction, include_background, ignore_empty, activation):
    kwargs = {"include_background": include_background, "reduction": reduction}
    ours = MeanIoU(**kwargs, ignore_empty=ignore_empty, activation=activation, save_details=False)
    theirs = MonaiMeanIoU(**kwargs, ignore_empty=ignore_empty)
    _assert_equal_results(_run(ours, activation), _run_monai(theirs, activation))


@pytest.mark.parametrize("ignore_index", [0, 2, 255])
@pytest.mark.parametrize("metric_cls", [MeanDice, MeanIoU])
def test_ignore_index_equals_monai(ignore_index, metric_cls):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, CLASSES, 6, 7, generator=generator)
    labels = torch.randint(0, CLASSES, (2, 1, 6, 7), generator=generator)
    labels[:, :, ::3] = ignore_index
    pred_hot = torch.nn.functional.one_hot(logits.argmax(1), CLASSES).permute(0, 3, 1, 2).float()
    theirs_cls, theirs_input = DiceMetric, labels  # DiceMetric reads label maps; MeanIoU wants one-hot labels
    if metric_cls is MeanIoU:
        theirs_cls = MonaiMeanIoU
        theirs_input = (labels == torch.arange(CLASSES).view(1, -1, 1, 1)).float()
    theirs = theirs_cls(reduction="mean_batch", ignore_index=ignore_index)
    theirs(pred_hot, theirs_input)
    ours = metric_cls(reduction="mean_batch", activation="softmax", ignore_index=ignore_index, save_details=False)
    ours.update((logits, labels))
    torch.testing.assert_close(ours.compute(), theirs.aggregate(), equal_nan=True)


def test_label_map_predictions_and_one_channel_input_equal_monai():
    generator = torch.Generator().manual_seed(4)
    predicted = torch.randint(0, 3, (2, 1, 5, 6), generator=generator)
    labels = torch.randint(0, 3, (2, 1, 5, 6), generator=generator)
    ours = MeanDice(num_classes=3, reduction="none", save_details=False)
    ours.update((predicted, labels))
    theirs = DiceMetric(num_classes=3, reduction="none")
    theirs(predicted, labels)
    torch.testing.assert_close(ours.compute(), theirs.aggregate(), equal_nan=True)
    binary_pred, binary_label = (predicted > 1).float(), (labels > 1).float()
    for include_background in (True, False):
        ours = MeanDice(include_background=include_background, reduction="none", save_details=False)
        ours.update((binary_pred, binary_label))
        theirs = DiceMetric(include_background=include_background, reduction="none")
        theirs(binary_pred, binary_label)
        torch.testing.assert_close(ours.compute(), theirs.aggregate().squeeze(), equal_nan=True)


@pytest.mark.parametrize("return_with_label", [True, ["liver", "spleen", "kidney"]])
def test_return_with_label_equals_monai(return_with_label):
    batches = _exclusive_batches()
    ours = MeanDice(
        include_background=False,
        reduction="mean_batch",
        return_with_label=return_with_label,
        activation="softmax",
        save_details=False,
    )
    theirs = DiceMetric(include_background=False, reduction="mean_batch", return_with_label=return_with_label)
    for logits, labels in batches:
        ours.update((logits, labels))
        theirs(*_monai_inputs("softmax", logits, labels))
    assert ours.compute() == theirs.aggregate()


def test_attached_to_an_engine_it_equals_monai_handler_with_details():
    batches = [(logits, labels) for logits, labels in _exclusive_batches()]
    engine = Engine(lambda engine, batch: batch)
    MeanDice(activation="softmax").attach(engine, "hotloop_dice")
    MonaiMeanDice(output_transform=lambda batch: _monai_inputs("softmax", *batch)).attach(engine, "monai_dice")
    state = engine.run(batches, max_epochs=2)
    assert state.metrics["hotloop_dice"] == pytest.approx(state.metrics["monai_dice"], rel=1e-6)
    details, monai_details = state.metric_details["hotloop_dice"], state.metric_details["monai_dice"]
    assert details.shape == (4, CLASSES)  # the last epoch's 2 batches of 2 samples, as MONAI's buffer
    torch.testing.assert_close(details, torch.as_tensor(monai_details), equal_nan=True)


def test_update_reads_nothing_on_the_host(monkeypatch):
    metrics = [
        MeanDice(activation="softmax", reduction="none", save_details=False),
        MeanIoU(activation="sigmoid", reduction="mean_batch", save_details=False),
        MeanDice(activation=None, ignore_index=1, save_details=False),
    ]
    inputs = [_exclusive_batches()[0], _multilabel_batches()[0], _monai_inputs("softmax", *_exclusive_batches()[0])]

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in update")

    unpatched = [copy.deepcopy(m) for m in metrics]
    for metric, batch in zip(unpatched, inputs):
        metric.update(batch)
    with monkeypatch.context() as patch:
        for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, forbidden)
        for metric, batch in zip(metrics, inputs):
            metric.update(batch)  # raises on any host read
    for metric, reference in zip(metrics, unpatched):
        # compute may read: it runs once, at the end
        torch.testing.assert_close(
            torch.as_tensor(metric.compute()), torch.as_tensor(reference.compute()), equal_nan=True
        )


def test_sums_across_processes_with_ignite(monkeypatch):
    """Two ranks with the same data: the all-reduced / gathered result equals one rank that saw the data twice."""
    batch = _exclusive_batches()[0]
    reduced: list[str] = []
    monkeypatch.setattr(idist, "all_reduce", lambda value, op="SUM": reduced.append(op) or value * 2)
    monkeypatch.setattr(idist, "all_gather", lambda tensor: torch.cat([tensor, tensor]))
    monkeypatch.setattr(idist, "all_gather_tensors_with_shapes", lambda tensor, shapes: [tensor, tensor])
    for reduction in ("mean", "sum", "mean_batch", "mean_channel", "none"):
        reference = MeanDice(activation="softmax", reduction=reduction, save_details=False)
        reference.update(batch)
        reference.update(batch)
        expected = reference.compute()
        metric = MeanDice(activation="softmax", reduction=reduction, save_details=False)
        metric.update(batch)
        with monkeypatch.context() as two_ranks:
            two_ranks.setattr(idist, "get_world_size", lambda: 2)
            result = metric.compute()
        _assert_equal_results(result, expected)
    assert reduced and set(reduced) == {"SUM"}
    assert metric._num_samples == 2  # the reduced values were only borrowed for compute


def test_per_sample_rows_gather_uneven_counts_across_processes(monkeypatch):
    """Exact sharding gives processes different sample counts: rows are gathered with each process's own shape."""
    from hotloop.metrics.overlap import _gather_uneven_rows

    mine, theirs = torch.rand(3, 4), torch.rand(1, 4)
    asked: list[list[list[int]]] = []

    def gather_with_shapes(tensor, shapes):
        asked.append(shapes)
        return [tensor, theirs]

    monkeypatch.setattr(idist, "all_gather", lambda tensor: torch.cat([tensor, torch.tensor([1])]))
    monkeypatch.setattr(idist, "all_gather_tensors_with_shapes", gather_with_shapes)
    torch.testing.assert_close(_gather_uneven_rows(mine), torch.cat([mine, theirs]))
    assert asked == [[[3, 4], [1, 4]]]


def test_state_follows_the_inputs_device_and_resets():
    metric = MeanDice(activation="softmax", reduction="mean_batch", save_details=False)
    with pytest.raises(NotComputableError):
        metric.compute()
    metric.update(_exclusive_batches()[0])
    first = metric.compute()
    metric.reset()
    metric.update(_exclusive_batches()[0])
    torch.testing.assert_close(metric.compute(), first)
    assert metric._class_sum.device == torch.device("cpu")


def test_compute_with_details_needs_an_engine():
    metric = MeanDice(activation="softmax")
    metric.update(_exclusive_batches()[0])
    with pytest.raises(RuntimeError, match="attach"):
        metric.compute()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="reduction"):
        MeanDice(reduction="median")
    with pytest.raises(ValueError, match="activation"):
        MeanIoU(activation="relu")  # type: ignore[arg-type]
    metric = MeanDice(activation="softmax", save_details=False)
    with pytest.raises(ValueError, match=r"\(y_pred, y\)"):
        metric.update((torch.zeros(1, 2, 3),))
    metric.update((torch.zeros(1, 2, 3), torch.zeros(1, 1, 3)))
    with pytest.raises(ValueError, match="changed from 2 to 3"):
        metric.update((torch.zeros(1, 3, 3), torch.zeros(1, 1, 3)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend_has_triton", [True, False])
def test_cuda_updates_never_synchronize(monkeypatch, backend_has_triton):
    from hotloop.ops import _dispatch

    monkeypatch.setattr(_dispatch, "HAS_TRITON", backend_has_triton and _dispatch.HAS_TRITON)
    logits, labels = (t.cuda() for t in _exclusive_batches()[0])
    metrics = [
        MeanDice(activation="softmax", reduction="mean_batch", save_details=False),
        MeanIoU(activation="sigmoid", ignore_index=2, save_details=False),
    ]
    for metric in metrics:  # the first update compiles kernels and sizes the state
        metric.update((logits, labels))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for metric in metrics:
            metric.update((logits, labels))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    host = MeanDice(activation="softmax", reduction="mean_batch", save_details=False)
    host.update(_exclusive_batches()[0])
    host.update(_exclusive_batches()[0])
    torch.testing.assert_close(metrics[0].compute().cpu(), host.compute())
