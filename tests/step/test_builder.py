"""``hotloop.step.builder``: the candidates of a step, the one selector, the host logic, the per-iteration checks.

CUDA graphs run on the CPU through the fake backend (:mod:`hotloop.step._fake_graphs`), installed as
``hotloop.step.graphed._backend``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step import CompiledModel, CompiledStep, CudaGraphWarning, GraphedStep, Iteration, StepOptions, graphed
from hotloop.step._fake_graphs import FakeBackend
from hotloop.step.builder import EvalStep, TrainStep, backward, eval_candidates, select, train_candidates


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield records


def _graph_warnings(records: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in records if issubclass(w.category, CudaGraphWarning)]


def _model_and_sgd(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _batches(n: int, size: int = 5, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 4, generator=gen), torch.randn(size, 3, generator=gen)) for _ in range(n)]


def _iteration(model: nn.Module, optimizer: Any, **kwargs: Any) -> Iteration:
    return Iteration(model, loss=F.mse_loss, optimizer=optimizer, **kwargs)


def _train(step: TrainStep, batches: list, accumulation: int = 1) -> list[torch.Tensor]:
    losses = []
    for index, (x, y) in enumerate(batches, start=1):
        zero, last = (index - 1) % accumulation == 0, index % accumulation == 0
        step.begin(zero)
        _, loss = step.run(x, y)
        step.finish(loss, index, zero, last)
        losses.append(loss.detach().clone())
    return losses


def _eager_reference(batches: list, accumulation: int = 1) -> tuple[nn.Module, list[torch.Tensor]]:
    model, optimizer = _model_and_sgd()
    losses = []
    for index, (x, y) in enumerate(batches, start=1):
        if (index - 1) % accumulation == 0:
            optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        (loss / accumulation if accumulation > 1 else loss).backward()
        if index % accumulation == 0:
            optimizer.step()
        losses.append(loss.detach())
    return model, losses


# -- candidates and the selector ----------------------------------------------------------------------------------


def test_candidates_are_made_only_when_asked_for_and_graphed_only_where_it_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, optimizer = _model_and_sgd()
    candidates = train_candidates(_iteration(model, optimizer), StepOptions(), "cpu")
    assert set(candidates.builds) == {"eager", "fused", "compiled", "compiled_fused"}  # no CUDA here
    assert candidates.graph_blocker() == "device cpu"
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, optimizer))
    candidates = train_candidates(_iteration(model, optimizer), StepOptions(), "cpu")
    assert list(candidates.builds) == ["eager", "fused", "compiled", "compiled_fused", "graphed"]
    bodies = {name: make() for name, make in candidates.builds.items()}
    assert isinstance(bodies["compiled"].impl, CompiledStep) and isinstance(bodies["graphed"].impl, GraphedStep)
    assert isinstance(bodies["compiled_fused"].impl, CompiledStep) and bodies["fused"].steps_optimizer
    assert bodies["eager"].impl is None and bodies["eager"].steps_optimizer and not bodies["eager"].zeroes_grad
    assert bodies["graphed"].zeroes_grad and bodies["graphed"].steps_optimizer
    assert candidates.compiled_model() is candidates.compiled_model()  # one compiled model, shared


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (StepOptions(), "eager"),
        (StepOptions(compile=True), "compiled"),
        (StepOptions(compile="auto"), "auto"),  # measured
        (StepOptions(compile="fused"), "fused"),
        (StepOptions(compile="compiled_fused"), "compiled_fused"),
        (StepOptions(compile="eager", cuda_graphs="auto"), "graphed"),  # the fake backend's device
        (StepOptions(cuda_graphs=True), "graphed"),
        (StepOptions(cuda_graphs=True, compile=True), "graphed"),
    ],
)
def test_the_selector_picks_what_the_options_ask_for(
    monkeypatch: pytest.MonkeyPatch, options: StepOptions, expected: str
) -> None:
    model, optimizer = _model_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, optimizer))
    assert select(train_candidates(_iteration(model, optimizer), options, "cpu"), options, "cpu") == expected


@pytest.mark.parametrize(
    ("kwargs", "cause"),
    [
        ({"accumulation": 2}, "gradient_accumulation_steps > 1"),
        ({"accumulation": 2, "accumulation_name": "accumulation_steps"}, "accumulation_steps > 1"),
        ({"scaler": lambda: None}, "a GradScaler"),
        ({"graph_blocker": "amp=True", "scaler": lambda: None}, "amp=True"),
    ],
)
def test_cuda_graphs_that_cannot_apply_warn_once_and_the_next_choice_runs(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage], kwargs: dict, cause: str
) -> None:
    model, optimizer = _model_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, optimizer))
    step = TrainStep(_iteration(model, optimizer, name="my step", **kwargs), StepOptions(cuda_graphs=True), "cpu")
    assert step.variant == "eager" and step.graphed is None
    assert _graph_warnings(caught) == [
        f"my step: cuda_graphs is not supported with {cause}; every iteration runs eagerly."
    ]


def test_a_non_torch_optimizer_blocks_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = _model_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, None))
    candidates = train_candidates(_iteration(model, object()), StepOptions(), "cpu")
    assert "graphed" not in candidates.builds and "object" in str(candidates.graph_blocker())


# -- the host logic ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accumulation", [1, 3])
@pytest.mark.parametrize("compile", [False, {"backend": "eager"}])
def test_train_step_gives_the_eager_loops_results(accumulation: int, compile: Any) -> None:
    torch._dynamo.reset()
    batches = _batches(6)
    ref_model, ref_losses = _eager_reference(batches, accumulation)
    model, optimizer = _model_and_sgd()
    step = TrainStep(_iteration(model, optimizer, accumulation=accumulation), StepOptions(compile=compile), "cpu")
    losses = _train(step, batches, accumulation)
    assert step.variant == ("compiled" if compile else "eager")
    torch.testing.assert_close(losses, ref_losses)
    for got, expected in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(got, expected)


class _Recorder(torch.optim.SGD):
    def __init__(self, params: Any, calls: list) -> None:
        super().__init__(params, lr=0.1)
        self.calls = calls

    def zero_grad(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("zero_grad", args, kwargs))
        super().zero_grad(*args, **kwargs)

    def step(self, closure: Any = None) -> Any:
        self.calls.append(("step",))
        return super().step(closure)


@pytest.mark.parametrize(("set_to_none", "call"), [(None, {}), (False, {"set_to_none": False})])
def test_gradients_are_zeroed_as_the_api_asks_and_the_optimizer_steps_at_a_windows_end(
    set_to_none: bool | None, call: dict
) -> None:
    calls: list = []
    model = nn.Linear(4, 3)
    step = TrainStep(
        _iteration(model, _Recorder(model.parameters(), calls), accumulation=2, set_to_none=set_to_none),
        StepOptions(),
        "cpu",
    )
    _train(step, _batches(4), accumulation=2)
    assert calls == [("zero_grad", (), call), ("step",)] * 2


def test_the_pieces_of_an_api_use_the_same_host_logic() -> None:
    """``fused=False``: the API runs its own forward and loss; begin/backward/finish do the rest, on its optimizer."""
    batches = _batches(4)
    ref_model, ref_losses = _eager_reference(batches, accumulation=2)
    model, optimizer = _model_and_sgd()
    step = TrainStep(_iteration(model, None, accumulation=2), StepOptions(), "cpu")
    for index, (x, y) in enumerate(batches, start=1):
        zero, last = (index - 1) % 2 == 0, index % 2 == 0
        step.begin(zero, fused=False, optimizer=optimizer)
        loss = F.mse_loss(model(x), y)
        step.backward(loss)
        step.finish(loss, index, zero, last, fused=False, optimizer=optimizer)
        torch.testing.assert_close(loss, ref_losses[index - 1])
    for got, expected in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(got, expected)


def test_backward_divides_by_the_accumulation_and_goes_through_the_scaler() -> None:
    class Scaler:
        def scale(self, loss: torch.Tensor) -> torch.Tensor:
            return loss * 8

    weight = torch.ones(1, requires_grad=True)
    backward((weight * 3).sum(), accumulation=2, scaler=Scaler())
    assert weight.grad is not None and weight.grad.item() == pytest.approx(3 / 2 * 8)


def test_the_non_finite_guard_skips_a_bad_window_for_every_api() -> None:
    batches = _batches(4)
    batches[1] = (torch.full_like(batches[1][0], float("nan")), batches[1][1])
    ref_model, _ = _eager_reference([b for i, b in enumerate(batches) if i != 1])
    model, optimizer = _model_and_sgd()
    guard = NonFiniteGuard("skip")
    step = TrainStep(_iteration(model, optimizer), StepOptions(on_nonfinite=guard), "cpu")
    _train(step, batches)
    for got, expected in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(got, expected)


# -- graphed steps -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ddp", "first_capture"), [(False, 4), (True, 12)])
def test_ddp_models_warm_up_eleven_iterations_before_capture(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, ddp: bool, first_capture: int
) -> None:
    """PyTorch's CUDA notes: DDP needs at least 11 eager iterations before its step is captured (the default is 3).
    Every API's step is a TrainStep, so this holds for Ignite's factories, the MONAI workflows and delira alike."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model, optimizer = _model_and_sgd()
        if ddp:
            model = nn.parallel.DistributedDataParallel(model)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        fake = FakeBackend(model, optimizer)
        monkeypatch.setattr(graphed, "_backend", fake)
        step = TrainStep(_iteration(model, optimizer), StepOptions(cuda_graphs=True), "cpu")
        captures = []
        for index, (x, y) in enumerate(_batches(14, size=4), start=1):
            step.begin(True)
            _, loss = step.run(x, y)
            step.finish(loss, index, True, True)
            captures.append(fake.n_captures)
    finally:
        dist.destroy_process_group()
    assert step.variant == "graphed"
    assert captures.index(1) + 1 == first_capture


def test_graphed_train_step_matches_eager_and_returns_detached_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = _batches(8)
    ref_model, ref_losses = _eager_reference(batches)
    model, optimizer = _model_and_sgd()
    fake = FakeBackend(model, optimizer)
    monkeypatch.setattr(graphed, "_backend", fake)
    step = TrainStep(_iteration(model, optimizer, clone_outputs=True), StepOptions(cuda_graphs=True), "cpu")
    outputs = []
    for index, (x, y) in enumerate(batches, start=1):
        step.begin(True)
        outputs.append(step.run(x, y))
        step.finish(outputs[-1][1], index, True, True)
    assert fake.n_captures == 1 and all(not t.requires_grad for pair in outputs for t in pair)
    torch.testing.assert_close([loss for _, loss in outputs], ref_losses)
    for got, expected in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(got, expected)
    step.reset()
    assert step.graphed is not None and step.graphed.num_graphs == 0


def test_eval_step_candidates_give_the_same_predictions(monkeypatch: pytest.MonkeyPatch) -> None:
    torch._dynamo.reset()
    model, _ = _model_and_sgd()
    batches = _batches(5)
    expected = [model(x).detach() for x, _ in batches]
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, None))
    for options in (StepOptions(), StepOptions(compile={"backend": "eager"}), StepOptions(cuda_graphs=True)):
        step = EvalStep(Iteration(model, clone_outputs=True), options, "cpu")
        with torch.no_grad():
            got = [step(x) for x, _ in batches]
        torch.testing.assert_close(got, expected)
    assert set(eval_candidates(Iteration(model), StepOptions(), "cpu").builds) == {"eager", "compiled", "graphed"}


# -- which iterations take the chosen body ------------------------------------------------------------------------


class _Engine:
    """What ``takes`` asks of an engine: whether every event is fired, whether one has handlers."""

    def __init__(self, handled: tuple = (), every: bool = False) -> None:
        self.handled = handled
        self.every = every

    def _every_event_fired(self) -> bool:
        return self.every

    def _has_handlers(self, event: Any) -> bool:
        return event in self.handled


@pytest.mark.parametrize(
    ("engine", "now", "replaced", "cause"),
    [
        (_Engine(every=True), ((), {}), False, "every event is fired"),
        (_Engine(handled=("LOSS",)), ((), {}), False, "IterationEvents.LOSS has handlers"),
        (_Engine(), ((1,), {}), False, "prepare_batch returns extra arguments"),
        (_Engine(), ((), {"k": 1}), False, "prepare_batch returns extra arguments"),
        (_Engine(), ((), {}), True, "was replaced"),
    ],
)
def test_an_iteration_the_body_cannot_take_runs_the_pieces_and_a_graph_warns_once(
    monkeypatch: pytest.MonkeyPatch,
    caught: list[warnings.WarningMessage],
    engine: _Engine,
    now: tuple,
    replaced: bool,
    cause: str,
) -> None:
    model, optimizer = _model_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, optimizer))
    parts = (model, optimizer)
    step = TrainStep(_iteration(model, optimizer, name="W"), StepOptions(cuda_graphs=True), "cpu", parts)
    current = (nn.Linear(4, 3), optimizer) if replaced else parts
    assert step.takes(_Engine(), ("LOSS",), parts, ((), {})) is True
    for _ in range(3):
        assert step.takes(engine, ("LOSS",), current, now) is False
    messages = _graph_warnings(caught)
    assert len(messages) == 1 and cause in messages[0] and messages[0].startswith("W: ")

    compiled = TrainStep(_iteration(model, optimizer), StepOptions(compile=True), "cpu", parts)
    assert compiled.takes(engine, ("LOSS",), current, now) is False and len(_graph_warnings(caught)) == 1
    assert isinstance(compiled.compiled_model, CompiledModel)  # what the pieces call instead
    eager = TrainStep(_iteration(model, optimizer), StepOptions(), "cpu", parts)
    assert eager.takes(_Engine(), (), parts, ((), {})) is False and eager.compiled_model is None
