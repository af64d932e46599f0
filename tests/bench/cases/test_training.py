"""The training benchmark's providers (``hotloop.bench.cases._training``) and its case (``training``).

The providers are checked differentially: Lightning's ``Trainer.fit``, Ignite's and hotloop's trainers and the raw
loop, given the same model, optimizer and batches, must end on the same loss (the case's equal-losses check relies on
it). No timing is asserted.
"""

from __future__ import annotations

import math

import ignite.engine as ie
import pytest
import torch
from torch import nn

import hotloop
from hotloop._optional import DALI
from hotloop.bench.cases import Provider, Round, _training

pytest.importorskip("lightning", reason="the Lightning providers need lightning (pip install 'hotloop[bench]')")

_CPU = torch.device("cpu")


def _setup() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    model = _training.seeded(lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)))()
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss()


def _data(iterations: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 5, generator=generator), torch.randint(0, 3, (4,), generator=generator))] * iterations


def _two_rounds(provider: Provider, iterations: int = 3) -> list[Round]:
    run = provider(iterations)
    return [run(), run()]


def test_every_provider_ends_on_the_raw_loops_loss():
    providers = {
        "raw": _training.raw_loop(_setup, _data, _CPU),
        "ignite": _training.engine(ie.create_supervised_trainer, _setup, _data, _CPU),
        "hotloop": _training.engine(hotloop.create_supervised_trainer, _setup, _data, _CPU),
        "hotloop_nosync": _training.engine(hotloop.create_supervised_trainer, _setup, _data, _CPU, no_sync=True),
        "lightning": _training.lightning(_setup, _data, _CPU),
    }
    rounds = {name: _two_rounds(provider) for name, provider in providers.items()}
    first, second = rounds["raw"]
    assert math.isfinite(second.loss) and second.loss != first.loss  # the second round trained further
    for name, (one, two) in rounds.items():
        assert (one.loss, two.loss) == pytest.approx((first.loss, second.loss), rel=1e-6), name


def test_lightning_times_its_epoch_and_not_its_set_up():
    fits: list[float] = []
    one, two = _two_rounds(_training.lightning(_setup, _data, _CPU, fit_seconds=fits))
    assert len(fits) == 2
    for round_, fit in zip((one, two), fits):
        assert 0 < round_.seconds < fit  # the fit's set-up is outside the epoch
        assert round_.iterations is None


def test_lightning_noop_caps_its_iterations(monkeypatch):
    monkeypatch.setattr(_training, "_NOOP_MAX_ITERATIONS", 7)
    capped, short = _training.lightning_noop(_CPU)(50)(), _training.lightning_noop(_CPU)(5)()
    assert (capped.iterations, short.iterations) == (7, 5)
    assert capped.seconds > 0 and short.seconds > 0 and capped.loss is None


def test_training_scenarios_compare_time_per_step_against_ignite_and_lightning():
    from hotloop.bench.cases import training

    assert training.UNAVAILABLE is None
    assert [scenario.name for scenario in training.SCENARIOS] == ["digits_png", "transformer", "mlp"]
    for scenario in training.SCENARIOS:
        assert (scenario.metric, scenario.original, scenario.candidate, scenario.also) == (
            "throughput",
            "ignite",
            "hotloop_auto",
            ("lightning", "hotloop_eager", "hotloop_compiled"),
        )
        assert set(scenario.same_steps) == {"raw", "ignite", "lightning", "hotloop"}
        assert scenario.batch_size and scenario.quick_iterations < scenario.iterations
        # compile="auto" is held to compile pinned off and on, in full runs: a quick run does not pay the compile.
        assert scenario.full_only == ("hotloop_eager", "hotloop_compiled")
        quick = scenario.for_mode(quick=True)
        assert list(quick.providers) == ["raw", "ignite", "lightning", "hotloop", "hotloop_auto"]
        assert quick.also == ("lightning",) and scenario.for_mode(quick=False) is scenario


@pytest.mark.skipif(not DALI.installed(), reason="compares hotloop's DALI loader with the stock PIL DataLoader")
def test_digits_png_loaders_give_the_same_batches():
    from hotloop.bench.cases import training

    stock, dali = training._stock_loader(2), training._hotloop_loader(2)
    pairs = list(zip(stock, dali))
    assert len(pairs) == 2
    for (x, y), (dx, dy) in pairs:
        assert x.shape == dx.shape == (64, 1, 8, 8)
        torch.testing.assert_close(dx, x, atol=1e-5, rtol=0)
        assert torch.equal(dy.long(), y)


def test_lightning_leaves_a_shared_loaders_workers_running():
    dataset = torch.utils.data.TensorDataset(torch.randn(8, 5), torch.randint(0, 3, (8,)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, persistent_workers=True)
    _training.raw_loop(_setup, lambda iterations: loader, _CPU)(2)()
    workers = loader._iterator
    assert workers is not None
    assert math.isfinite(_training.lightning(_setup, lambda iterations: loader, _CPU)(2)().loss)
    assert loader._iterator is workers  # not shut down by Lightning's teardown: the next reader does not respawn them
