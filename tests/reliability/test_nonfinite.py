"""Non-finite losses: ``on_nonfinite`` acts at the next sync point without a host sync per iteration; ``skip``
leaves parameters and optimizer state as they were; Ignite's ``TerminateOnNan`` behaves as on Ignite."""

from __future__ import annotations

from unittest import mock

import ignite.engine as ie
import pytest
import torch
from ignite.engine import Events
from ignite.handlers import TerminateOnNan

import hotloop
from hotloop.reliability import NonFiniteGuard


def _data(bad: tuple[int, ...] = (), n: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(6, 4, generator=g), torch.randn(6, 1, generator=g)) for _ in range(n)]
    for i in bad:
        batches[i][0][0, 0] = float("nan")
    return batches


def _trainer(mod, optim="sgd", **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    if optim == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, opt, mod.create_supervised_trainer(model, opt, torch.nn.MSELoss(), **kwargs)


class _SyncCounter:
    """Counts host reads of tensors (``item``, ``bool``, ``int``, ``float``) made while it is active."""

    def __init__(self) -> None:
        self.count = 0

    def _wrap(self, name):
        original = getattr(torch.Tensor, name)

        def counted(t, *args):
            self.count += 1
            return original(t, *args)

        return mock.patch.object(torch.Tensor, name, counted)

    def __enter__(self):
        self._patches = [self._wrap(n) for n in ("item", "tolist", "__bool__", "__int__", "__float__")]
        for p in self._patches:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self._patches:
            p.stop()


@pytest.mark.parametrize("optim", ["sgd", "adam"])
@pytest.mark.parametrize("bad", [(0,), (3,), (3, 4, 9)])
def test_skip_leaves_parameters_and_optimizer_state_unchanged(optim, bad):
    model, opt, trainer = _trainer(hotloop, optim, no_sync=True, on_nonfinite="skip")
    with pytest.warns(UserWarning, match=f"skipped {len(bad)} step"):
        trainer.run(_data(bad), max_epochs=1)
    ref_model, ref_opt, ref_trainer = _trainer(hotloop, optim, no_sync=True)
    ref_trainer.run([b for i, b in enumerate(_data()) if i not in bad], max_epochs=1)
    for ours, theirs in zip(model.state_dict().values(), ref_model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    for index, state in ref_opt.state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(opt.state_dict()["state"][index][key], value), (index, key)


@pytest.mark.parametrize("bad", [2, 3])  # the first or the second micro-batch of the window (iterations 3, 4)
def test_skip_with_gradient_accumulation_skips_the_window(bad):
    model, opt, trainer = _trainer(hotloop, no_sync=True, on_nonfinite="skip", gradient_accumulation_steps=2)
    with pytest.warns(UserWarning, match="skipped 1 step"):
        trainer.run(_data((bad,)), max_epochs=1)
    ref_model, ref_opt, ref_trainer = _trainer(hotloop, no_sync=True, gradient_accumulation_steps=2)
    ref_trainer.run([b for i, b in enumerate(_data()) if i not in (2, 3)], max_epochs=1)
    for ours, theirs in zip(model.state_dict().values(), ref_model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    for index, state in ref_opt.state_dict()["state"].items():
        assert torch.equal(opt.state_dict()["state"][index]["momentum_buffer"], state["momentum_buffer"])


def test_no_host_sync_per_iteration():
    _, _, trainer = _trainer(hotloop, no_sync=True, on_nonfinite=NonFiniteGuard("terminate", every=50))
    with _SyncCounter() as syncs:
        trainer.run(_data(n=10), max_epochs=4)  # 40 iterations
    assert syncs.count <= 4 + 1  # one read per check: 4 epoch ends and COMPLETED


@pytest.mark.parametrize("every", [2, 100])
def test_terminate_at_next_check(every):
    _, _, trainer = _trainer(hotloop, no_sync=True, on_nonfinite=NonFiniteGuard("terminate", every=every))
    trainer.run(_data(bad=(2,)), max_epochs=3)  # the bad loss is iteration 3
    assert trainer.state.iteration == (4 if every == 2 else 10)
    assert trainer.should_terminate


def test_raise_names_first_bad_iteration():
    _, _, trainer = _trainer(hotloop, no_sync=True, on_nonfinite="raise")
    with pytest.raises(FloatingPointError, match="at iteration 5 .detected at iteration 10"):
        trainer.run(_data(bad=(4, 6)), max_epochs=2)


def test_invalid_option():
    with pytest.raises(ValueError, match="on_nonfinite should be one of"):
        _trainer(hotloop, on_nonfinite="ignore")
    with pytest.raises(TypeError, match="on_nonfinite should be None"):
        _trainer(hotloop, on_nonfinite=1)


@pytest.mark.parametrize("bad", [(), (3,)])
def test_terminate_on_nan_as_on_ignite(bad):
    runs = []
    for mod in (ie, hotloop):
        model, _, trainer = _trainer(mod)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
        outputs = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e, out=outputs: out.append(e.state.output))
        trainer.run(_data(bad), max_epochs=2)
        runs.append((trainer.state.iteration, trainer.state.epoch, outputs, [p.detach() for p in model.parameters()]))
    (it_a, ep_a, out_a, par_a), (it_b, ep_b, out_b, par_b) = runs
    assert (it_a, ep_a) == (it_b, ep_b) == ((4, 1) if bad else (20, 2))
    torch.testing.assert_close(torch.tensor(out_a), torch.tensor(out_b), rtol=0, atol=0, equal_nan=True)
    for a, b in zip(par_a, par_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
