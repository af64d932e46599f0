"""``hotloop.metrics.Accuracy`` against ``ignite.metrics.Accuracy`` on the same updates."""

from __future__ import annotations

import pytest
import torch
from ignite.metrics import Accuracy as IgniteAccuracy

from hotloop.metrics import Accuracy


def _run(metric, batches):
    for batch in batches:
        metric.update(batch)
    return metric.compute()


@pytest.mark.parametrize(("classes", "spatial"), [(2, ()), (5, (7,)), (3, (4, 5, 6)), (30, (3, 3))])
def test_multiclass_equals_ignite(classes, spatial):
    generator = torch.Generator().manual_seed(classes)
    batches = [
        (
            torch.randn(4, classes, *spatial, generator=generator),
            torch.randint(0, classes, (4, *spatial), generator=generator),
        )
        for _ in range(3)
    ]
    batches[0][0][0, 0] = batches[0][0][0, 1]  # ties: the first maximum, as torch.argmax
    assert _run(Accuracy(), batches) == pytest.approx(_run(IgniteAccuracy(), batches), rel=1e-12)


@pytest.mark.parametrize("is_multilabel", [False, True])
def test_binary_and_multilabel_take_ignites_update(is_multilabel):
    generator = torch.Generator().manual_seed(7)
    shape = (6, 3, 4) if is_multilabel else (6, 4)
    batches = [(torch.randint(0, 2, shape, generator=generator), torch.randint(0, 2, shape, generator=generator))]
    ours = _run(Accuracy(is_multilabel=is_multilabel), batches)
    assert ours == _run(IgniteAccuracy(is_multilabel=is_multilabel), batches)


def test_multiclass_update_reads_nothing_on_the_host(monkeypatch):
    metric = Accuracy()
    batch = (torch.randn(3, 4, 5, 5), torch.randint(0, 4, (3, 5, 5)))

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in update")

    with monkeypatch.context() as patch:
        for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, forbidden)
        metric.update(batch)
    assert metric.compute() == pytest.approx((batch[0].argmax(1) == batch[1]).float().mean().item())
