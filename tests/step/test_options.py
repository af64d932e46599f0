"""``hotloop.step.options``: the step options, checked and applied in one place for every API."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from ignite.engine import Events

from hotloop import Engine
from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step import StepOptions
from hotloop.step import options as options_module


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"compile": "yes"}, ValueError, "compile should be False, True, 'auto', one of the pinned builds 'eager'"),
        ({"cuda_graphs": "sometimes"}, ValueError, "cuda_graphs should be False, True or 'auto', got 'sometimes'"),
        ({"cuda_graphs": 1}, ValueError, "cuda_graphs should be False, True or 'auto', got 1"),
        ({"no_sync": 1}, TypeError, "no_sync should be True or False, got 1"),
        ({"prefetch": "cuda"}, TypeError, "prefetch should be True or False, got 'cuda'"),
        ({"max_compiled_shapes": 0}, ValueError, "max_compiled_shapes should be a positive integer, got 0"),
        ({"max_compiled_shapes": True}, ValueError, "max_compiled_shapes should be a positive integer, got True"),
        ({"on_nonfinite": 3}, TypeError, "on_nonfinite should be None, 'terminate', 'skip', 'raise' or a Non"),
        ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite should be one of"),
    ],
)
def test_bad_options_are_refused_with_the_fix(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        StepOptions(**kwargs)


def test_defaults_and_resolution() -> None:
    assert StepOptions().default and not StepOptions(no_sync=True).default
    options = StepOptions(compile="auto", cuda_graphs="auto")
    assert options.compile_kwargs("cpu") == options.compile_kwargs("cuda") == {"dynamic": False}
    assert [StepOptions(compile=c).variant for c in (False, True, {"mode": "x"}, "auto", "fused", "eager")] == [
        "eager",
        "compiled",
        "compiled",
        "auto",
        "fused",
        "eager",
    ]
    assert options.graphs("cpu") is False
    with pytest.raises(RuntimeError, match="cuda_graphs=True needs a CUDA device"):
        StepOptions(cuda_graphs=True).graphs("cpu")


def test_the_guard_is_made_once_and_a_given_one_is_kept() -> None:
    guard = NonFiniteGuard("raise", every=7)
    assert StepOptions(on_nonfinite=guard).guard is guard
    made = StepOptions(on_nonfinite="skip").guard
    assert isinstance(made, NonFiniteGuard) and made.action == "skip"
    assert dataclasses.replace(StepOptions(on_nonfinite="skip"), on_nonfinite=None).guard is None


def test_attach_installs_the_prefetcher_and_the_guards_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(lambda e, b: None)
    StepOptions(prefetch=True).attach(engine, "cpu")
    assert engine._hl_data_wrapper is None  # nothing to overlap on a CPU

    made: list[Any] = []
    monkeypatch.setattr(options_module, "prefetch_enabled", lambda option, device: option)
    monkeypatch.setattr(options_module, "DevicePrefetcher", lambda data, device: made.append(device) or data)
    options = StepOptions(prefetch=True, on_nonfinite="terminate")
    options.attach(engine, torch.device("cpu"))
    engine.run([1, 2], max_epochs=1)
    assert made and set(made) == {torch.device("cpu")}  # every data iterator the run made
    assert engine.has_event_handler(options.guard.check, Events.EPOCH_COMPLETED)
