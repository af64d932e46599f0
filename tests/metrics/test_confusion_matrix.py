"""``hotloop.metrics.ConfusionMatrix`` against ``ignite.metrics.ConfusionMatrix`` on the same updates."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from ignite.metrics import ConfusionMatrix as IgniteConfusionMatrix
from ignite.metrics import DiceCoefficient, IoU, mIoU

from hotloop.metrics import ConfusionMatrix


def _batches(classes: int, spatial: tuple[int, ...], count: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(2, classes, *spatial, generator=generator),
            torch.randint(-1, classes + 2, (2, *spatial), generator=generator),  # some labels out of range
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize(("classes", "spatial"), [(2, (5, 7)), (3, (4, 5, 6)), (21, (9,)), (4, ())])
@pytest.mark.parametrize("average", [None, "samples", "recall", "precision"])
def test_equals_ignite(classes, spatial, average):
    ours, theirs = ConfusionMatrix(classes, average=average), IgniteConfusionMatrix(classes, average=average)
    for batch in _batches(classes, spatial):
        ours.update(batch)
        theirs.update(batch)
    assert torch.equal(ours.compute(), theirs.compute())
    assert ours._num_examples == theirs._num_examples


def test_ignites_helpers_accept_it_on_an_engine():
    batches = _batches(3, (6, 6))
    engine = Engine(lambda engine, batch: batch)
    for name, metric in (("ours", ConfusionMatrix(3)), ("theirs", IgniteConfusionMatrix(3))):
        IoU(metric).attach(engine, f"iou_{name}")
        mIoU(metric).attach(engine, f"miou_{name}")
        DiceCoefficient(metric).attach(engine, f"dice_{name}")
    state = engine.run(batches, max_epochs=1)
    assert isinstance(ConfusionMatrix(3), IgniteConfusionMatrix)
    for key in ("iou", "miou", "dice"):
        torch.testing.assert_close(
            torch.as_tensor(state.metrics[f"{key}_ours"]), torch.as_tensor(state.metrics[f"{key}_theirs"])
        )


def test_update_reads_nothing_on_the_host(monkeypatch):
    metric = ConfusionMatrix(4)
    batch = _batches(4, (5, 5), count=1)[0]

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in update")

    with monkeypatch.context() as patch:
        for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, forbidden)
        metric.update(batch)
    assert metric.compute().sum() > 0


def test_shape_checks_are_ignites():
    with pytest.raises(ValueError, match="number of classes"):
        ConfusionMatrix(3).update((torch.zeros(2, 4, 5), torch.zeros(2, 5).long()))
