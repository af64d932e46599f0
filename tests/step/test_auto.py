"""``hotloop.step.auto``: ``compile="auto"`` measures the candidate builds on the run's first iterations and keeps the
fastest.

The selector's logic runs on a fake clock (each candidate costs what the test says), never on the machine's timing;
the steps it switches between are real (compiled with the ``"eager"`` backend, CUDA graphs through the fake backend
of :mod:`hotloop.step._fake_graphs`), so that their results are compared with an eager run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hotloop import create_supervised_evaluator, create_supervised_trainer
from hotloop.step import Iteration, StepChoice, StepOptions, auto, graphed
from hotloop.step._fake_graphs import FakeBackend
from hotloop.step.auto import AutoSelector, iterations_left
from hotloop.step.builder import Body, EvalStep, TrainStep

# -- the selector on a fake clock ---------------------------------------------------------------------------------


class _Run:
    """An :class:`AutoSelector` over fake bodies: a call of candidate ``name`` costs ``cost(name, n)`` seconds on the
    fake clock, ``n`` counting that candidate's calls from 1."""

    def __init__(
        self,
        cost: Callable[[str, int], float],
        names: tuple[str, ...] = ("eager", "fused"),
        compiled: tuple[str, ...] = (),
        left: int | None = 10_000_000,
        warmup: dict[str, int] | None = None,
        device: str = "cpu",
        scale: Callable[[Any], float] = lambda x: 1.0,
    ) -> None:
        self.now = 0.0
        self.scale = scale
        self.ran: list[str] = []
        self.cost = cost
        self.counts: dict[str, int] = {}
        self.made: list[str] = []
        self.body: Body | None = None
        self.choice = StepChoice("auto")
        warmup = warmup or {}

        def make(name: str) -> Body:
            self.made.append(name)
            return Body(lambda x: self._call(name, x), warmup=warmup.get(name, 1))

        self.selector = AutoSelector(
            names, compiled, make, self._switch, lambda: left, self.choice, device, True, "test step", self.clock
        )

    def clock(self) -> float:
        return self.now

    def _switch(self, name: str, body: Body) -> None:
        self.body = body

    def _call(self, name: str, x: Any) -> str:
        self.counts[name] = self.counts.get(name, 0) + 1
        self.now += self.cost(name, self.counts[name]) * self.scale(x)
        self.ran.append(name)
        return name

    def until_chosen(self, x: Any = 0, limit: int = 1000) -> str:
        for _ in range(limit):
            if self.choice.variant is not None:
                return self.choice.variant
            assert self.body is not None
            self.body.fn(x)
        raise AssertionError("no choice")


def _costs(**ms: float) -> Callable[[str, int], float]:
    return lambda name, n: ms[name] / 1e3


def test_it_keeps_the_fastest_taking_turns_in_chunks_of_five_after_one_untimed_iteration_each() -> None:
    run = _Run(_costs(eager=2.0, fused=1.8))
    assert run.until_chosen() == "fused"
    assert run.ran == (["eager"] * 6 + ["fused"] * 6 + (["eager"] * 5 + ["fused"] * 5) * 3)
    assert run.choice.times_ms == pytest.approx({"fused": 1.8, "eager": 2.0})
    assert run.choice.iterations == 42 and run.choice.seconds == pytest.approx(0.021 * 3.8)
    assert list(run.choice.times_ms) == ["fused", "eager"]  # fastest first


def test_a_neighbours_spikes_do_not_change_the_ranking() -> None:
    """Every 4th iteration of either candidate is 10-20x slower (another job on the machine): chunk medians and their
    25th percentile see through it."""

    def cost(name: str, n: int) -> float:
        base = {"eager": 2.0, "fused": 1.8}[name]
        return base * (15 if n % 4 == 0 else 1) / 1e3

    run = _Run(cost)
    assert run.until_chosen() == "fused"
    assert run.choice.times_ms == pytest.approx({"fused": 1.8, "eager": 2.0})


def test_compile_time_is_excluded_and_counted_in_the_budget() -> None:
    run = _Run(
        lambda name, n: 9.0 if n == 1 and name == "compiled" else {"eager": 2e-3, "compiled": 1e-3}[name],
        names=("eager",),
        compiled=("compiled",),
        warmup={"compiled": 2},
    )
    assert run.until_chosen() == "compiled"
    assert run.choice.times_ms == pytest.approx({"compiled": 1.0, "eager": 2.0})
    assert run.choice.compile_seconds == pytest.approx(9.001)
    assert run.ran[:6] == ["eager"] * 6 and run.ran[6:13] == ["compiled"] * 7  # tried after eager's first chunk


@pytest.mark.parametrize(
    ("left", "tried", "why"),
    [
        (100_000, True, None),
        (99_999, False, "99999 iterations left × 2 ms × 10% (the best gain compiling has shown on cpu) < 20 s"),
        (None, False, "the run's planned length is unknown"),
    ],
)
def test_compiled_candidates_are_tried_only_where_the_run_pays_their_compile_back(
    left: int | None, tried: bool, why: str | None
) -> None:
    """On a CPU a training compile must pay 20 s back at a 10 % gain: 2 ms steps need 100,000 iterations left."""
    run = _Run(_costs(eager=2.0, compiled=1.0), names=("eager",), compiled=("compiled",), left=left)
    assert run.until_chosen() == ("compiled" if tried else "eager")
    assert ("compiled" in run.made) is tried
    if why is not None:
        assert run.choice.skipped["compiled"].startswith(why)
        assert run.choice.iterations == 6  # eager's chunk; nothing else to compare


def test_a_much_slower_candidate_is_dropped_after_two_chunks() -> None:
    run = _Run(_costs(eager=2.0, fused=1.0, graphed=3.0), names=("eager", "fused", "graphed"))
    assert run.until_chosen() == "fused"
    assert run.ran.count("graphed") == 11 and run.ran.count("eager") == 11  # 1 untimed + 2 chunks each
    assert run.choice.skipped["eager"] == "dropped after 10 timed iterations: 2 ms > 1.3× fused's 1 ms"
    assert run.choice.times_ms == pytest.approx({"fused": 1.0, "eager": 2.0, "graphed": 3.0})


def test_slow_iterations_end_the_measurement_at_two_chunks_each() -> None:
    run = _Run(_costs(eager=400.0, fused=390.0))  # 10 timed iterations take 4 s: 5 s are spent after the 3rd chunk
    assert run.until_chosen() == "fused"
    assert run.ran.count("eager") == 11 and run.ran.count("fused") == 11


def test_only_the_first_input_shape_is_timed() -> None:
    run = _Run(_costs(eager=2.0, fused=1.8), scale=lambda x: 100.0 if x == 2 else 1.0)  # another shape, 100x slower
    shapes = iter([1, 2] * 100)
    while run.choice.variant is None:
        run.body.fn(next(shapes))  # type: ignore[union-attr]
    assert run.choice.variant == "fused" and run.choice.times_ms == pytest.approx({"fused": 1.8, "eager": 2.0})
    assert run.choice.iterations == 2 * 42 - 1


def test_the_measurement_ends_after_300_iterations_whatever_it_has() -> None:
    run = _Run(_costs(eager=2.0, fused=1.0))
    keys = iter(range(1, 1000))
    run.body.fn(0)  # type: ignore[union-attr]  # the first shape: every later call has another
    while run.choice.variant is None:
        run.body.fn(next(keys))  # type: ignore[union-attr]
    assert run.choice.iterations == 300 and run.choice.variant == "eager" and run.choice.times_ms == {}


def test_one_candidate_is_chosen_at_once() -> None:
    run = _Run(_costs(eager=2.0), names=("eager",))
    assert run.choice.variant == "eager" and run.choice.iterations == 0 and run.ran == []


def test_the_choice_is_logged_once_with_its_times(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hotloop.step"):
        run = _Run(_costs(eager=2.0, fused=1.8))
        run.until_chosen()
        run.body.fn(0)  # type: ignore[union-attr]
    records = [r.getMessage() for r in caplog.records if r.name == "hotloop.step"]
    assert records == [
        "test step: compile='auto' chose 'fused'; ms per iteration: fused 1.8, eager 2; not tried: none; "
        "spent 42 iterations, 0.08 s (compiling 0.00 s)"
    ]
    assert str(run.choice) == "fused (auto: fused 1.8 ms, eager 2 ms; 42 iterations, 0.08 s)"


def test_iterations_left_reads_the_runs_planned_length() -> None:
    class State:
        iteration, max_epochs, epoch_length, max_iters = 30, 5, 20, None

    state = State()
    assert iterations_left(state) == 70
    state.max_iters = 40
    assert iterations_left(state) == 10
    state.max_iters, state.epoch_length = None, None
    assert iterations_left(state) is None


# -- the steps it measures: real iterations -----------------------------------------------------------------------


@pytest.fixture
def cheap_compiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Compiled candidates with the ``"eager"`` backend (no inductor), always worth trying."""
    torch._dynamo.reset()
    monkeypatch.setattr(StepOptions, "compile_kwargs", lambda self, device: {"backend": "eager", "dynamic": False})
    monkeypatch.setattr(auto, "PAYBACK", dict.fromkeys(auto.PAYBACK, auto.Payback(1.0, 0.0)))
    yield
    torch._dynamo.reset()


def _model_and_sgd() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # the fake graphs refuse Adam (capturable)


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(5, 4, generator=gen), torch.randn(5, 3, generator=gen)) for _ in range(n)]


class _Planned:
    """An engine as the step reads it: a run of ``planned`` iterations."""

    class state:  # noqa: N801
        iteration, max_epochs, epoch_length, max_iters = 0, 1, 1_000_000, None

    def _set_data_wrapper(self, wrapper: Any) -> None:
        raise AssertionError("no prefetch here")


@pytest.mark.usefixtures("cheap_compiles")
def test_every_candidate_trains_the_same_model_and_optimizer_as_eager_would(
    monkeypatch: pytest.MonkeyPatch, step_clock: Callable[..., Any]
) -> None:
    """The measurement switches between eager, fused, compiled, compiled_fused and graphed on one model and one
    optimizer: the run ends where an eager run does, within the fused optimizer's float tolerance."""
    batches = _batches(150)
    ref_model, ref_optimizer = _model_and_sgd()
    for x, y in batches:
        ref_optimizer.zero_grad()
        F.mse_loss(ref_model(x), y).backward()
        ref_optimizer.step()

    model, optimizer = _model_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, optimizer))
    clock = step_clock(eager=5, fused=4, compiled=3, compiled_fused=3.5, graphed=2)
    step = TrainStep(Iteration(model, loss=F.mse_loss, optimizer=optimizer), StepOptions(compile="auto"), "cpu")
    clock.step = step
    engine = _Planned()  # the step keeps a weak reference
    step.attach(engine)
    seen, outputs = set(), []
    for index, (x, y) in enumerate(batches, start=1):
        seen.add(step.variant)
        step.begin(True)
        outputs.append(step.run(x, y))
        step.finish(outputs[-1][1], index, True, True)
    assert seen == {"eager", "fused", "compiled", "compiled_fused", "graphed"}
    assert step.choice.variant == step.variant == "graphed" and step.auto is None
    assert list(step.choice.times_ms) == ["graphed", "compiled", "compiled_fused", "fused", "eager"]
    assert outputs[-1][1] is not outputs[-2][1]  # a graph chosen by "auto" returns copies, not its buffers
    for got, expected in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert [g["fused"] for g in optimizer.param_groups] == [None]


def test_the_eval_step_measures_its_own_candidates(
    monkeypatch: pytest.MonkeyPatch, step_clock: Callable[..., Any]
) -> None:
    model, _ = _model_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, None))
    clock = step_clock(eager=2, graphed=1)
    step = EvalStep(Iteration(model), StepOptions(compile="auto"), "cpu")
    clock.step = step
    with torch.no_grad():
        expected = [model(x) for x, _ in _batches(40)]
        got = [step(x).clone() for x, _ in _batches(40)]
    torch.testing.assert_close(got, expected)
    assert step.choice.variant == "graphed"
    assert step.choice.skipped["compiled"] == "the run's planned length is unknown (a compile may not pay back)"


def test_pinning_a_candidate_that_cannot_apply_is_an_error_that_names_why() -> None:
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="compile='fused' steps the optimizer through its fused implementation, whi"):
        TrainStep(Iteration(model, loss=F.mse_loss, optimizer=torch.optim.RMSprop(model.parameters())),
                  StepOptions(compile="fused"), "cpu")  # fmt: skip
    with pytest.raises(ValueError, match="does not apply with gradient_accumulation_steps > 1"):
        optimizer = torch.optim.Adam(model.parameters())
        TrainStep(Iteration(model, loss=F.mse_loss, optimizer=optimizer, accumulation=2),
                  StepOptions(compile="compiled_fused"), "cpu")  # fmt: skip
    step = EvalStep(Iteration(model), StepOptions(compile="fused"), "cpu")  # no optimizer: eager
    assert step.choice.variant == "eager" and step.choice.requested == "fused"


# -- the APIs -----------------------------------------------------------------------------------------------------


def test_the_factories_expose_the_choice_and_a_second_run_keeps_it(caplog: pytest.LogCaptureFixture) -> None:
    model, optimizer = _model_and_sgd()
    data = _batches(8)
    trainer = create_supervised_trainer(model, optimizer, F.mse_loss, compile="auto")
    evaluator = create_supervised_evaluator(model, compile="auto")
    assert trainer.step_choice.requested == "auto" and trainer.step_choice.variant is None
    with caplog.at_level(logging.INFO, logger="hotloop.step"):
        trainer.run(data, max_epochs=10)
        evaluator.run(data, max_epochs=10)
        spent = trainer.step_choice.iterations
        trainer.run(data, max_epochs=20)  # continued: no new measurement
    assert trainer.step_choice.variant in ("eager", "fused") and trainer.step_choice.iterations == spent <= 42
    assert evaluator.step_choice.variant == "eager" and set(evaluator.step_choice.skipped) == {"compiled"}
    assert len([r for r in caplog.records if r.name == "hotloop.step"]) == 2  # one line per step
    default = create_supervised_trainer(model, optimizer, F.mse_loss)
    assert (default.step_choice.requested, default.step_choice.variant) == ("eager", "eager")


# -- ranks of a process group measure together ----------------------------------------------------------------------


def _gloo_ranks() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "reliability" / "_gloo_ranks.py"
    spec = importlib.util.spec_from_file_location("_gloo_ranks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RANKS_SNIPPET = """
from hotloop.step import StepChoice
from hotloop.step.auto import AutoSelector
from hotloop.step.builder import Body

# What a candidate's iteration costs on each rank (seconds on a fake clock): alone, rank 0 would keep eager and rank
# 1 fused; the slowest rank's times (eager 3, fused 2) make it fused on both.
costs = [{"eager": 1.0, "fused": 2.0}, {"eager": 3.0, "fused": 1.0}][rank]
now, ran, current = [0.0], [], [None]
choice = StepChoice("auto")

def make(name):
    def fn(x):
        now[0] += costs[name]
        ran.append(name)
    return Body(fn)

def switch(name, body):
    current[0] = body

selector = AutoSelector(["eager", "fused"], [], make, switch, lambda: 10_000, choice, "cpu", True, "ranks",
                        lambda: now[0], group=dist.group.WORLD)
for index in range(200):
    if choice.variant is not None:
        break
    # Rank 1's inputs change shape on every third iteration: the ranks still count the same iterations.
    shape = (3,) if rank == 1 and index % 3 == 2 else (2,)
    current[0].fn(torch.zeros(shape))
result = {"choice": choice.variant, "ran": ran, "times_ms": choice.times_ms}
"""


def test_ranks_of_a_ddp_step_run_the_same_candidates_and_choose_the_same(tmp_path: Any) -> None:
    rank0, rank1 = _gloo_ranks().run_on_two_ranks("import torch\n" + _RANKS_SNIPPET, tmp_path)
    assert rank0["ran"] == rank1["ran"]  # the same candidate at every iteration
    assert rank0["choice"] == rank1["choice"] == "fused"
    assert rank0["times_ms"] == rank1["times_ms"] == {"fused": 2000.0, "eager": 3000.0}


def test_only_a_ddp_training_step_measures_with_the_other_ranks(tmp_path: Any) -> None:
    """A DDP model's step measures over its process group; a plain model's, or an evaluation step, alone (exact
    distributed evaluation gives ranks different numbers of iterations: a collective per chunk would hang)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = nn.Linear(2, 1)
        assert auto.ranks_together(model) is None
        assert auto.ranks_together(nn.parallel.DistributedDataParallel(model)) is None  # one rank: nothing to agree
    finally:
        dist.destroy_process_group()
