"""Tests of hotloop.step.graphed: capture/replay logic on CPU through a fake backend, real CUDA graphs on a GPU.

The fake backend (:mod:`hotloop.step._fake_graphs`) behaves like CUDA graphs where it matters to the wrapper: a
capture records the step function and runs none of its work; a replay re-runs it on the static buffers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hotloop.step import graphed
from hotloop.step._fake_graphs import FakeBackend
from hotloop.step.graphed import CudaGraphWarning, GraphedStep, cuda_graphs_supported, resolve_cuda_graphs


@pytest.fixture
def warn_all() -> Iterator[list[warnings.WarningMessage]]:
    """Records every CudaGraphWarning, duplicates included, so that "warned once" is the wrapper's doing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _graph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, CudaGraphWarning)]


# -- a tiny training problem -------------------------------------------------------------------------------------


def _model_and_sgd(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _train_fns(
    model: nn.Module, optimizer: torch.optim.Optimizer, log: list[Any] | None = None
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def compute(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if log is not None:
            log.append("compute")
        y_pred = model(x)
        loss = F.mse_loss(y_pred, y)
        loss.backward()
        optimizer.step()
        return y_pred.detach(), loss.detach()

    def eager_step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if log is not None:
            log.append("eager")
        optimizer.zero_grad(set_to_none=True)
        y_pred = model(x)
        loss = F.mse_loss(y_pred, y)
        loss.backward()
        optimizer.step()
        return y_pred.detach(), loss.detach()

    return compute, eager_step


def _batches(sizes: list[int], seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 4, generator=gen), torch.randn(n, 3, generator=gen)) for n in sizes]


def _eager_reference(sizes: list[int]) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    model, optimizer = _model_and_sgd()
    _, eager_step = _train_fns(model, optimizer)
    outputs = [tuple(t.clone() for t in eager_step(x, y)) for x, y in _batches(sizes)]
    return model, outputs


def _graphed_training(
    monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[nn.Module, torch.optim.Optimizer, FakeBackend, GraphedStep]:
    model, optimizer = _model_and_sgd()
    fake = FakeBackend(model, optimizer, fail_capture=kwargs.pop("fail_capture", None))
    monkeypatch.setattr(graphed, "_backend", fake)
    compute, eager_step = _train_fns(model, optimizer)
    step = GraphedStep(
        compute,
        pre_capture=lambda: optimizer.zero_grad(set_to_none=True),
        eager_step=eager_step,
        optimizer=optimizer,
        **kwargs,
    )
    return model, optimizer, fake, step


def _assert_same_model(model: nn.Module, reference: nn.Module) -> None:
    for (name, param), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(param, expected, msg=f"parameter {name} differs from eager training")


def _run(step: GraphedStep, sizes: list[int]) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(t.clone() for t in step(x, y)) for x, y in _batches(sizes)]


# -- capture and replay --------------------------------------------------------------------------------------------


def test_warm_up_then_capture_then_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[Any] = []
    model, optimizer = _model_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend(model, optimizer, log=log))
    compute, eager_step = _train_fns(model, optimizer, log)
    step = GraphedStep(
        compute, pre_capture=lambda: log.append("pre_capture"), eager_step=eager_step, warmup_iters=2, max_graphs=1
    )
    x, y = _batches([8])[0]
    outputs = [step(x, y) for _ in range(4)]

    warm_up = [("wait", "side", "current"), ("enter", "side"), "eager", ("exit", "side"), ("wait", "current", "side")]
    capture = ["pre_capture", ("capture", "side"), "compute", "replay", "compute"]
    assert log == [*warm_up, *warm_up, *capture, "replay", "compute"]
    assert step.num_graphs == 1
    assert outputs[3][0] is outputs[2][0]  # replays return the same graph-owned outputs


def test_new_shape_is_captured_in_its_own_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, fake, step = _graphed_training(monkeypatch, warmup_iters=1)
    _run(step, [8, 8, 5, 5, 5, 8])
    assert fake.n_captures == 2  # calls 2 (size 8) and 4 (size 5)
    assert fake.n_replays == 2 + 2  # one after each capture, then size 5 once and size 8 once
    assert step.num_graphs == 2
    assert fake.n_streams == 1  # one side stream per device, reused


def test_training_matches_eager_including_a_shape_change(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = [8, 8, 8, 8, 5, 5, 5, 5, 8, 8]
    reference, expected = _eager_reference(sizes)
    model, _, fake, step = _graphed_training(monkeypatch, warmup_iters=2)
    got = _run(step, sizes)
    assert fake.n_captures == 2 and fake.n_replays == 6  # the graphs did run
    for index, (out, exp) in enumerate(zip(got, expected)):
        torch.testing.assert_close(out, exp, msg=f"outputs of step {index} differ from eager")
    _assert_same_model(model, reference)


def test_nested_inputs_with_constants_are_captured_and_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeBackend()
    monkeypatch.setattr(graphed, "_backend", fake)

    def compute(x: dict[str, Any], y: None) -> tuple[torch.Tensor, None]:
        a, (b, scale) = x["a"], x["b"]
        return a * scale + b.sum(), None

    step = GraphedStep(compute, warmup_iters=1)
    for i in range(4):
        x = {"a": torch.full((2, 3), float(i)), "b": [torch.arange(3.0) + i, 2.0]}
        out, none = step(x, None)
        torch.testing.assert_close(out, compute(x, None)[0])
        assert none is None
    assert fake.n_captures == 1 and fake.n_replays == 3


# -- fallbacks ------------------------------------------------------------------------------------------------------


def test_cache_limit_runs_new_shapes_eagerly_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, warn_all: list[warnings.WarningMessage]
) -> None:
    sizes = [n for n in (2, 3, 4, 5, 6) for _ in range(3)] + [6, 2]
    reference, expected = _eager_reference(sizes)
    model, _, fake, step = _graphed_training(monkeypatch, warmup_iters=1, max_graphs=2)
    got = _run(step, sizes)

    messages = _graph_warnings(warn_all)
    assert len(messages) == 1, messages
    assert "max_graphs=2" in messages[0]
    assert fake.n_captures == 2 and step.num_graphs == 2
    for out, exp in zip(got, expected):
        torch.testing.assert_close(out, exp)
    _assert_same_model(model, reference)


def test_failed_capture_runs_eagerly_with_one_warning_and_correct_weights(
    monkeypatch: pytest.MonkeyPatch, warn_all: list[warnings.WarningMessage]
) -> None:
    sizes = [8] * 6
    reference, expected = _eager_reference(sizes)
    error = RuntimeError("operation not permitted when stream is capturing")
    model, _, fake, step = _graphed_training(monkeypatch, warmup_iters=2, fail_capture=error)
    got = _run(step, sizes)

    messages = _graph_warnings(warn_all)
    assert len(messages) == 1, messages
    assert "operation not permitted when stream is capturing" in messages[0]
    assert fake.n_captures == 1 and fake.n_replays == 0  # never retried, never replayed
    assert step.num_graphs == 0
    for out, exp in zip(got, expected):
        torch.testing.assert_close(out, exp)
    _assert_same_model(model, reference)  # no NaN garbage gradients, no lost or doubled step


def test_non_tensor_outputs_are_refused_at_capture(
    monkeypatch: pytest.MonkeyPatch, warn_all: list[warnings.WarningMessage]
) -> None:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    step = GraphedStep(lambda x, y: (x * 2, float(y.sum())), warmup_iters=1)
    x, y = torch.ones(2), torch.ones(2)
    results = [step(x * i, y * i) for i in range(3)]
    assert [r[1] for r in results] == [0.0, 2.0, 4.0]  # not frozen at the capture-time value
    messages = _graph_warnings(warn_all)
    assert len(messages) == 1 and "returned a float" in messages[0]


@pytest.mark.parametrize(
    ("make_inputs", "backend_type", "reason"),
    [
        pytest.param(lambda i: ((torch.ones(2), object()), torch.ones(2)), "cpu", "of type object", id="object"),
        pytest.param(lambda i: (torch.ones(2), torch.ones(2, device="meta")), "cpu", "mixed devices", id="mixed"),
        pytest.param(lambda i: (torch.ones(2), torch.ones(2)), "cuda", "not on a cuda device", id="cpu-on-cuda"),
        pytest.param(lambda i: (torch.ones(2, requires_grad=True), torch.ones(2)), "cpu", "requires grad", id="grad"),
        pytest.param(lambda i: (nn.Parameter(torch.ones(2)), torch.ones(2)), "cpu", "subclass", id="subclass"),
        pytest.param(lambda i: ("text", i), "cpu", "no tensor inputs", id="no-tensor"),
        pytest.param(lambda i: ((torch.ones(2), i), torch.ones(2)), "cpu", "changes between calls", id="varying"),
    ],
)
def test_uncapturable_inputs_run_eagerly_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
    warn_all: list[warnings.WarningMessage],
    make_inputs: Callable[[int], tuple[Any, Any]],
    backend_type: str,
    reason: str,
) -> None:
    fake = FakeBackend()
    fake.device_type = backend_type
    monkeypatch.setattr(graphed, "_backend", fake)
    eager_calls: list[Any] = []
    step = GraphedStep(lambda x, y: pytest.fail("compute must not run"), eager_step=lambda x, y: eager_calls.append(x))
    for i in range(6):
        step(*make_inputs(i))
    assert len(eager_calls) == 6
    assert fake.n_captures == 0
    messages = _graph_warnings(warn_all)
    assert len(messages) == 1, messages
    assert reason in messages[0]


def test_constant_non_tensor_inputs_are_captured(
    monkeypatch: pytest.MonkeyPatch, warn_all: list[warnings.WarningMessage]
) -> None:
    fake = FakeBackend()
    monkeypatch.setattr(graphed, "_backend", fake)
    step = GraphedStep(lambda x, y: (x[0] * x[1],), warmup_iters=1)
    for i in range(4):
        (out,) = step((torch.full((2,), float(i)), 3), None)
        torch.testing.assert_close(out, torch.full((2,), 3.0 * i))
    assert fake.n_captures == 1 and not _graph_warnings(warn_all)


def test_input_on_another_device_than_the_steps_is_eager(
    monkeypatch: pytest.MonkeyPatch, warn_all: list[warnings.WarningMessage]
) -> None:
    fake = FakeBackend()
    monkeypatch.setattr(graphed, "_backend", fake)
    step = GraphedStep(lambda x, y: (x,), warmup_iters=1, device="cpu:1")
    for _ in range(3):
        step(torch.ones(2), None)
    assert fake.n_captures == 0
    assert "the step's device is cpu:1" in _graph_warnings(warn_all)[0]


def test_optimizer_state_off_the_parameter_device_refuses_capture(
    monkeypatch: pytest.MonkeyPatch, warn_all: list[warnings.WarningMessage]
) -> None:
    sizes = [8] * 4
    reference, _ = _eager_reference(sizes)
    model, optimizer, fake, step = _graphed_training(monkeypatch, warmup_iters=1)
    batches = _batches(sizes)
    step(*batches[0])  # warm-up creates the state; then a CPU-side counter, as Adagrad keeps one
    optimizer.state[next(model.parameters())]["step"] = torch.tensor(1.0, device="meta")
    for x, y in batches[1:]:
        step(x, y)
    assert fake.n_captures == 0
    messages = _graph_warnings(warn_all)
    assert len(messages) == 1 and "'step' on meta" in messages[0]
    _assert_same_model(model, reference)


# -- optimizer hyper-parameters ------------------------------------------------------------------------------------


def _lr_schedule(step: Callable[..., Any], optimizer: torch.optim.Optimizer, sizes: list[int], every: int) -> None:
    for index, (x, y) in enumerate(_batches(sizes)):
        if index and index % every == 0:
            optimizer.param_groups[0]["lr"] *= 0.5
        step(x, y)


@pytest.mark.parametrize(("every", "n_captures", "n_warnings"), [(20, 2, 0), (3, 1, 1)])
def test_hyper_parameter_changes_recapture_or_go_eager(
    monkeypatch: pytest.MonkeyPatch,
    warn_all: list[warnings.WarningMessage],
    every: int,
    n_captures: int,
    n_warnings: int,
) -> None:
    sizes = [8] * 30
    reference, ref_optimizer = _model_and_sgd()
    _lr_schedule(_train_fns(reference, ref_optimizer)[1], ref_optimizer, sizes, every)
    model, optimizer, fake, step = _graphed_training(monkeypatch, warmup_iters=1)
    _lr_schedule(step, optimizer, sizes, every)

    assert fake.n_captures == n_captures
    messages = _graph_warnings(warn_all)
    assert len(messages) == n_warnings and all("'lr' changed" in m for m in messages)
    _assert_same_model(model, reference)


def test_replaced_param_groups_recapture(monkeypatch: pytest.MonkeyPatch) -> None:
    model, optimizer, fake, step = _graphed_training(monkeypatch, warmup_iters=1)
    batches = _batches([8] * 20)
    for x, y in batches[:18]:
        step(x, y)
    optimizer.load_state_dict(optimizer.state_dict())  # new group dicts and state tensors
    for x, y in batches[18:]:
        step(x, y)
    assert fake.n_captures == 2


def test_capturable_is_set_before_the_first_warm_up_for_adam(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    model = nn.Linear(4, 3)
    groups: list[dict[str, Any]] = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.1}]
    adam = torch.optim.Adam(groups)
    assert not any(group["capturable"] for group in adam.param_groups)
    seen: list[list[bool]] = []
    step = GraphedStep(
        lambda x, y: (x,),
        eager_step=lambda x, y: seen.append([group["capturable"] for group in adam.param_groups]),
        optimizer=adam,
    )
    step(torch.ones(2), None)
    assert seen == [[True, True]]


def test_parameters_off_the_graph_device_stay_non_capturable_and_refuse_capture(
    monkeypatch: pytest.MonkeyPatch, warn_all: list[warnings.WarningMessage]
) -> None:
    fake = FakeBackend()
    fake.device_type = "meta"  # the graph's device; one parameter group lives on the CPU instead
    monkeypatch.setattr(graphed, "_backend", fake)
    on_device, on_cpu = nn.Parameter(torch.ones(2, device="meta")), nn.Parameter(torch.ones(2))
    groups: list[dict[str, Any]] = [{"params": [on_device]}, {"params": [on_cpu]}]
    adam = torch.optim.Adam(groups)
    step = GraphedStep(lambda x, y: (x,), eager_step=lambda x, y: None, optimizer=adam, warmup_iters=1)
    for _ in range(3):
        step(torch.ones(2, device="meta"), None)
    assert [group["capturable"] for group in adam.param_groups] == [True, False]
    assert fake.n_captures == 0
    messages = _graph_warnings(warn_all)
    assert len(messages) == 1 and "updates a parameter on cpu" in messages[0]


def test_sgd_param_groups_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model, optimizer, _, step = _graphed_training(monkeypatch, warmup_iters=1)
    before = [dict(group, params=None) for group in optimizer.param_groups]
    _run(step, [8, 8, 8])
    assert [dict(group, params=None) for group in optimizer.param_groups] == before
    assert "capturable" not in optimizer.param_groups[0]


# -- outputs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clone_outputs", [False, True])
def test_outputs_alias_graph_memory_unless_cloned(monkeypatch: pytest.MonkeyPatch, clone_outputs: bool) -> None:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    step = GraphedStep(lambda x, y: (x + 1,), warmup_iters=1, clone_outputs=clone_outputs)
    step(torch.zeros(2), None)  # warm-up
    (first,) = step(torch.zeros(2), None)  # capture
    (second,) = step(torch.ones(2), None)  # replay
    torch.testing.assert_close(second, torch.full((2,), 2.0))
    assert (first is second) is not clone_outputs
    torch.testing.assert_close(first, torch.full((2,), 1.0 if clone_outputs else 2.0))


def test_replay_path_does_not_sync_with_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, fake, step = _graphed_training(monkeypatch, warmup_iters=1)
    batches = _batches([8] * 5)
    for x, y in batches[:2]:
        step(x, y)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync in the replay path")

    for name in ("item", "tolist", "cpu", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for x, y in batches[2:]:
        step(x, y)
    monkeypatch.undo()
    assert fake.n_replays == 4


def test_reset_drops_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, fake, step = _graphed_training(monkeypatch, warmup_iters=1)
    _run(step, [8, 8, 8])
    step.reset()
    assert step.num_graphs == 0
    _run(step, [8, 8])
    assert fake.n_captures == 2


# -- arguments and probes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"compute": None}, TypeError, "compute should be a callable"),
        ({"eager_step": 3}, TypeError, "eager_step should be a callable or None; got int"),
        ({"warmup_iters": 0}, ValueError, "warmup_iters should be at least 1; got 0"),
        ({"max_graphs": True}, TypeError, "max_graphs should be an int; got bool"),
        ({"optimizer": object()}, TypeError, "torch.optim.Optimizer or None; got object"),
    ],
)
def test_arguments_are_checked(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    args = {"compute": lambda x, y: x, **kwargs}
    compute = args.pop("compute")
    with pytest.raises(error, match=match):
        GraphedStep(compute, **args)


@pytest.mark.parametrize(
    ("available", "device", "expected"),
    [(True, "cuda:0", True), (True, "cuda", True), (True, "cpu", False), (False, "cuda", False), (True, None, False)],
)
def test_cuda_graphs_supported(monkeypatch: pytest.MonkeyPatch, available: bool, device: Any, expected: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert cuda_graphs_supported(device) is expected


@pytest.mark.parametrize(
    ("option", "available", "device", "expected"),
    [
        (False, True, "cuda", False),
        ("auto", True, "cuda:0", True),
        ("auto", False, "cuda", False),
        ("auto", True, "cpu", False),
        (True, True, "cuda", True),
    ],
)
def test_resolve_cuda_graphs(
    monkeypatch: pytest.MonkeyPatch, option: Any, available: bool, device: str, expected: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_cuda_graphs(option, device) is expected


@pytest.mark.parametrize(
    ("available", "device", "match"),
    [
        (True, "cpu", r"cuda_graphs=True needs a CUDA device; got device=cpu\. Use cuda_graphs='auto'"),
        (False, "cuda", r"got device=cuda\. CUDA is not available on this machine"),
        (True, None, r"got device=None\."),
    ],
)
def test_resolve_cuda_graphs_forced_without_cuda_raises(
    monkeypatch: pytest.MonkeyPatch, available: bool, device: Any, match: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    with pytest.raises(RuntimeError, match=match):
        resolve_cuda_graphs(True, device)


@pytest.mark.parametrize("option", ["yes", "AUTO", 1, 0, None])
def test_resolve_cuda_graphs_rejects_other_values(option: Any) -> None:
    with pytest.raises(ValueError, match=r"cuda_graphs should be False, True or 'auto'; got "):
        resolve_cuda_graphs(option, "cpu")


# -- real CUDA graphs -------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
class TestOnGPU:
    @staticmethod
    def _train(optimizer_cls: type[torch.optim.Optimizer], graphs: bool, sizes: list[int]) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).cuda()
        optimizer = optimizer_cls(model.parameters(), lr=0.01)  # type: ignore[call-arg]
        if "capturable" in optimizer.defaults:  # the same update math in both runs
            for group in optimizer.param_groups:
                group["capturable"] = True
        compute, eager_step = _train_fns(model, optimizer)
        step: Callable[..., Any] = eager_step
        if graphs:
            step = GraphedStep(
                compute,
                pre_capture=lambda: optimizer.zero_grad(set_to_none=True),
                eager_step=eager_step,
                optimizer=optimizer,
            )
        gen = torch.Generator().manual_seed(1)
        for n in sizes:
            x, y = torch.randn(n, 16, generator=gen).cuda(), torch.randn(n, 4, generator=gen).cuda()
            step(x, y)
        torch.cuda.synchronize()
        return model

    @pytest.mark.parametrize("optimizer_cls", [torch.optim.SGD, torch.optim.Adam])
    def test_training_matches_eager(self, optimizer_cls: type[torch.optim.Optimizer]) -> None:
        sizes = [32] * 8 + [17] * 6 + [32] * 4
        eager = self._train(optimizer_cls, False, sizes)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CudaGraphWarning)  # no silent fallback to eager
            graphed_model = self._train(optimizer_cls, True, sizes)
        for got, expected in zip(graphed_model.parameters(), eager.parameters()):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)

    def test_outputs_follow_the_inputs(self) -> None:
        step = GraphedStep(lambda x, y: (x * 2 + y,), warmup_iters=1)
        for i in range(5):
            x, y = torch.full((8,), float(i), device="cuda"), torch.ones(8, device="cuda")
            (out,) = step(x, y)
            torch.testing.assert_close(out, x * 2 + y)
        assert step.num_graphs == 1

    def test_sync_in_capture_falls_back(self) -> None:
        step = GraphedStep(lambda x, y: (x * float(x.sum()),), warmup_iters=1)
        x = torch.ones(4, device="cuda")
        with pytest.warns(CudaGraphWarning, match="capture failed"):
            for _ in range(3):
                (out,) = step(x, None)
        torch.testing.assert_close(out, x * 4)
