"""``hotloop.step.fused``: which optimizers step through torch's fused implementation, and one such step at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from hotloop.step.fused import fused_blocker, fused_step

_OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
    "SGD": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))


def _train(optimizer_name: str, fused_on: Callable[[int], bool], steps: int = 12) -> tuple[nn.Module, Any]:
    model = _model()
    optimizer = _OPTIMIZERS[optimizer_name](model.parameters())
    gen = torch.Generator().manual_seed(1)
    for index in range(steps):
        optimizer.zero_grad()
        model(torch.randn(4, 6, generator=gen)).square().mean().backward()
        if fused_on(index):
            fused_step(optimizer)
        else:
            optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("name", list(_OPTIMIZERS))
def test_the_torch_optimizers_with_a_fused_implementation_are_accepted_on_the_cpu(name: str) -> None:
    assert fused_blocker(_OPTIMIZERS[name](_model().parameters()), "cpu") is None
    assert fused_blocker(_OPTIMIZERS[name](_model().parameters()), None) is None


class _MyAdam(torch.optim.Adam):
    pass


@pytest.mark.parametrize(
    ("make", "device", "reason"),
    [
        (lambda p: torch.optim.RMSprop(p), "cpu", "RMSprop has no fused implementation"),
        (lambda p: _MyAdam(p), "cpu", "_MyAdam has no fused implementation"),
        (lambda p: torch.optim.Adam(p, foreach=True), "cpu", "foreach or fused set on the optimizer"),
        (lambda p: torch.optim.Adam(p, foreach=False), "cpu", "foreach or fused set on the optimizer"),
        (lambda p: torch.optim.SGD(p, lr=0.1, fused=False), "cpu", "foreach or fused set on the optimizer"),
        (lambda p: torch.optim.Adam(p, differentiable=True), "cpu", "differentiable=True"),
        (lambda p: torch.optim.Adam(p), "cuda", "device cuda (the fused candidate is for CPU steps)"),
        (lambda p: object(), "cpu", "an optimizer of type object (not a torch.optim.Optimizer)"),
    ],
)
def test_what_cannot_step_fused_says_why(make: Callable, device: str, reason: str) -> None:
    blocker = fused_blocker(make(_model().parameters()), device)
    assert blocker is not None and blocker.startswith(reason)


@pytest.mark.parametrize("name", list(_OPTIMIZERS))
def test_fused_steps_mixed_with_plain_ones_give_the_plain_results_within_float_tolerance(name: str) -> None:
    plain_model, plain = _train(name, lambda index: False)
    mixed_model, mixed = _train(name, lambda index: index % 3 != 1)
    for got, expected in zip(mixed_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for got, expected in zip(mixed.state.values(), plain.state.values()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)  # the same state, alike laid out
    assert mixed.state_dict()["param_groups"] == plain.state_dict()["param_groups"]  # fused put back
    assert [g["fused"] for g in mixed.param_groups] == [None]


def test_the_fused_flag_is_put_back_when_the_step_raises() -> None:
    optimizer = torch.optim.Adam(_model().parameters())

    def broken(hook_optimizer: Any, args: Any, kwargs: Any) -> None:
        assert hook_optimizer.param_groups[0]["fused"] is True
        raise RuntimeError("a hook failed")

    optimizer.register_step_pre_hook(broken)
    with pytest.raises(RuntimeError, match="a hook failed"):
        fused_step(optimizer)
    assert optimizer.param_groups[0]["fused"] is None
