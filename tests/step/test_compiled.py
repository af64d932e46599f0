"""``hotloop.step.compiled``: the ``compile`` option, per-shape compiled steps with a cap and a safe fallback, and the
model compiled alone."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from hotloop.step.compiled import CompiledModel, CompiledStep, resolve_compile


class _CountingBackend:
    """A torch.compile backend that runs the FX graph as is and counts compilations."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gm: Any, example_inputs: Any) -> Any:
        self.calls += 1
        return gm.forward


@pytest.mark.parametrize(
    ("option", "device", "expected"),
    [
        (False, "cuda", None),
        (None, "cuda", None),
        (True, "cpu", {"dynamic": False}),
        ("eager", "cuda", None),
        ("fused", "cpu", None),
        ("compiled", "cpu", {"dynamic": False}),
        ("compiled_fused", "cpu", {"dynamic": False}),
        ("auto", "cpu", {"dynamic": False}),  # what the compiled candidates use, where the measurement tries them
        ("auto", "cuda:0", {"dynamic": False}),
        ({"mode": "max-autotune"}, "cpu", {"dynamic": False, "mode": "max-autotune"}),
        ({"dynamic": True}, "cpu", {"dynamic": True}),
    ],
)
def test_resolve_compile(option: Any, device: Any, expected: Any) -> None:
    assert resolve_compile(option, device) == expected


@pytest.mark.parametrize("option", ["yes", 1, ["dynamic"], "graphed"])
def test_resolve_compile_rejects_other_values(option: Any) -> None:
    pinned = "one of the pinned builds 'eager', 'fused', 'compiled', 'compiled_fused'"
    with pytest.raises(ValueError, match=f"compile should be False, True, 'auto', {pinned} or a dict of torch.comp"):
        resolve_compile(option, "cpu")


def test_each_shape_compiles_once_up_to_the_cap_then_runs_eagerly_with_one_warning() -> None:
    torch._dynamo.reset()
    backend = _CountingBackend()
    eager_calls: list[int] = []

    def fallback(x: torch.Tensor) -> torch.Tensor:
        eager_calls.append(len(x))
        return x * 2

    step = CompiledStep(lambda x: x * 2, {"backend": backend, "dynamic": False}, fallback=fallback, max_shapes=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in (3, 4, 3, 5, 4, 6, 5):
            torch.testing.assert_close(step(torch.ones(n)), torch.full((n,), 2.0))
    assert backend.calls == 2 and eager_calls == [5, 6, 5]
    messages = [str(w.message) for w in caught if "input shapes already" in str(w.message)]
    assert len(messages) == 1 and "the compiled step has code for 2 input shapes" in messages[0]


def test_a_step_that_does_not_compile_is_restored_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def half_step_then_fail(fn: Any, **kwargs: Any) -> Any:
        def run(*args: Any) -> Any:
            with torch.no_grad():
                model.weight.add_(1.0)  # part of the step ran ...
            raise RuntimeError("pretend dynamo failed")  # ... then compiling failed

        return run

    monkeypatch.setattr(torch, "compile", half_step_then_fail)
    step = CompiledStep(
        lambda x: model(x),
        {},
        fallback=lambda x: pytest.fail("fallback_fn comes first"),
        fallback_fn=model,
        state=(model,),
    )
    with caplog.at_level(logging.WARNING, logger="hotloop.step.compiled"):
        out = step(torch.ones(1, 2))
        step(torch.ones(1, 2))
    assert step.mode == "fallback"
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])  # the half-run step was undone
    torch.testing.assert_close(out, model(torch.ones(1, 2)))
    assert [r.getMessage() for r in caplog.records].count(
        "hotloop: compiling the whole step failed (RuntimeError: pretend dynamo failed); falling back"
    ) == 1


def test_max_shapes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_shapes should be a positive integer"):
        CompiledStep(lambda x: x, {}, fallback=lambda x: x, max_shapes=0)


def test_compiled_model_is_the_model_compiled_alone() -> None:
    torch._dynamo.reset()
    backend = _CountingBackend()
    model = nn.Linear(3, 2)
    compiled = CompiledModel(model, {"backend": backend}, max_shapes=1)
    x = torch.randn(4, 3)
    torch.testing.assert_close(compiled(x), model(x))
    assert backend.calls == 1 and compiled.step.mode == "whole"
    assert compiled.weight is model.weight and compiled.in_features == 3  # attributes are the model's
    compiled(x, **{})  # no keyword arguments: still compiled
    assert backend.calls == 1
