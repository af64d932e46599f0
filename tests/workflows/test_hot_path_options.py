"""Tests of the workflows' hot-path options: ``prefetch`` and ``cuda_graphs`` for SupervisedTrainer/Evaluator.

CUDA graphs are tested on CPU through the fake backend of ``tests/step/test_graphed.py`` (a capture records the
step and runs none of it, a replay re-runs it on the static buffers), installed as ``hotloop.step.graphed._backend``.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import MeanSquaredError
from torch import nn

from hotloop import workflows as hl_workflows
from hotloop.engine import Engine
from hotloop.step import graphed
from hotloop.step import options as step_options
from hotloop.step.graphed import CudaGraphWarning
from hotloop.workflows import IterationEvents, SupervisedEvaluator, SupervisedTrainer


def _load_fake_backend() -> type:
    name = "_hotloop_tests_step_graphed"
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).resolve().parents[1] / "step" / "test_graphed.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module.FakeBackend


FakeBackend = _load_fake_backend()


# -- a tiny segmentation problem -----------------------------------------------------------------------------------


def _batches(n: int = 6, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randn(2, 1, 6, 6, generator=gen), "label": torch.rand(2, 2, 6, 6, generator=gen)}
        for _ in range(n)
    ]


def _net_and_sgd(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)


def _mse() -> MeanSquaredError:
    return MeanSquaredError(output_transform=lambda out: (out["pred"], out["label"]))


class _Outputs:
    """Keeps each iteration's ``pred`` and ``loss`` as ``state.output`` holds them (no copy: aliasing would show)."""

    def __init__(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []

    def __call__(self, engine: Engine) -> None:
        self.preds.append(engine.state.output["pred"])
        if "loss" in engine.state.output:
            self.losses.append(engine.state.output["loss"])


def _trainer(data: Any, epochs: int = 2, **kwargs: Any) -> tuple[SupervisedTrainer, _Outputs]:
    net, opt = _net_and_sgd()
    trainer = SupervisedTrainer(
        "cpu", epochs, data, net, opt, nn.MSELoss(), decollate=False, key_train_metric={"mse": _mse()}, **kwargs
    )
    outputs = _Outputs()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, outputs)
    return trainer, outputs


def _evaluator(data: Any, net: nn.Module, device: str = "cpu", **kwargs: Any) -> tuple[SupervisedEvaluator, _Outputs]:
    evaluator = SupervisedEvaluator(device, data, net, decollate=False, key_val_metric={"mse": _mse()}, **kwargs)
    outputs = _Outputs()
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, outputs)
    return evaluator, outputs


def _assert_same_run(engine: Any, outputs: _Outputs, ref_engine: Any, ref_outputs: _Outputs) -> None:
    for name, value in ref_engine.network.state_dict().items():
        torch.testing.assert_close(engine.network.state_dict()[name], value, msg=f"weight {name} differs")
    assert len(outputs.preds) == len(ref_outputs.preds)
    for pred, ref in zip(outputs.preds, ref_outputs.preds):
        torch.testing.assert_close(pred.detach(), ref.detach())
    for loss, ref in zip(outputs.losses, ref_outputs.losses):
        torch.testing.assert_close(loss.detach(), ref.detach())
    assert engine.state.metrics["mse"] == pytest.approx(ref_engine.state.metrics["mse"], rel=1e-6)
    assert engine.state.best_metric == pytest.approx(ref_engine.state.best_metric, rel=1e-6)


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    """Every CudaGraphWarning, duplicates included, so that "warned once" is the workflow's doing."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield records


def _graph_warnings(records: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in records if issubclass(w.category, CudaGraphWarning)]


def _fake(monkeypatch: pytest.MonkeyPatch, engine: Any) -> Any:
    fake = FakeBackend(engine.network, getattr(engine, "optimizer", None))
    monkeypatch.setattr(graphed, "_backend", fake)
    return fake


def _graphed_trainer(monkeypatch: pytest.MonkeyPatch, data: Any, **kwargs: Any) -> tuple[Any, _Outputs, Any]:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())  # so that cuda_graphs=True resolves on "cpu"
    trainer, outputs = _trainer(data, cuda_graphs=True, **kwargs)
    return trainer, outputs, _fake(monkeypatch, trainer)


# -- prefetch ------------------------------------------------------------------------------------------------------


class _CountingPrefetcher(step_options.DevicePrefetcher):
    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).made += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def prefetch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> type[_CountingPrefetcher]:
    """Makes ``prefetch=True`` install the prefetcher on CPU, where it is a pass-through, and counts them."""
    monkeypatch.setattr(step_options, "prefetch_enabled", lambda option, device: option)
    monkeypatch.setattr(step_options, "DevicePrefetcher", _CountingPrefetcher)
    _CountingPrefetcher.made = 0
    return _CountingPrefetcher


def test_prefetch_wraps_each_epochs_data_and_changes_no_result(prefetch_on_cpu: type[_CountingPrefetcher]) -> None:
    data = _batches()
    ref, ref_out = _trainer(data)
    ref.run()
    trainer, out = _trainer(data, prefetch=True)
    iterators: list[type] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterators.append(type(e._dataloader_iter)))
    trainer.run()
    assert prefetch_on_cpu.made >= 2  # one per epoch's data iterator (the first may be made at setup)
    assert iterators == [_CountingPrefetcher] * 12
    _assert_same_run(trainer, out, ref, ref_out)


def test_prefetch_in_the_evaluator(prefetch_on_cpu: type[_CountingPrefetcher]) -> None:
    data = _batches()
    net, _ = _net_and_sgd()
    ref, ref_out = _evaluator(data, net)
    ref.run()
    evaluator, out = _evaluator(data, net, prefetch=True)
    evaluator.run()
    assert prefetch_on_cpu.made >= 1
    _assert_same_run(evaluator, out, ref, ref_out)


def test_prefetch_is_off_by_default_and_a_no_op_without_cuda() -> None:
    net, opt = _net_and_sgd()
    assert SupervisedTrainer("cpu", 1, _batches(1), net, opt, nn.MSELoss())._hl_data_wrapper is None
    evaluator = SupervisedEvaluator("cpu", _batches(1), net, prefetch=True)
    assert evaluator.prefetch is True
    assert evaluator._hl_data_wrapper is None  # CPU: nothing to overlap


def test_prefetch_must_be_a_bool() -> None:
    net, _ = _net_and_sgd()
    with pytest.raises(TypeError, match="prefetch should be True or False, got 'yes'"):
        SupervisedEvaluator("cpu", _batches(1), net, prefetch="yes")  # type: ignore[arg-type]


# -- cuda_graphs: options ------------------------------------------------------------------------------------------


def test_cuda_graphs_is_off_by_default_and_auto_is_off_without_cuda() -> None:
    net, opt = _net_and_sgd()
    assert SupervisedTrainer("cpu", 1, _batches(1), net, opt, nn.MSELoss())._hl_step.graphed is None
    assert SupervisedEvaluator("cpu", _batches(1), net, cuda_graphs="auto")._hl_step.graphed is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without CUDA")
def test_cuda_graphs_true_without_cuda_raises() -> None:
    net, opt = _net_and_sgd()
    with pytest.raises(RuntimeError, match="cuda_graphs=True needs a CUDA device"):
        SupervisedTrainer("cpu", 1, _batches(1), net, opt, nn.MSELoss(), cuda_graphs=True)


@pytest.mark.parametrize("option", ["always", 1, None])
def test_cuda_graphs_rejects_other_values(option: Any) -> None:
    net, _ = _net_and_sgd()
    with pytest.raises(ValueError, match="cuda_graphs should be False, True or 'auto'"):
        SupervisedEvaluator("cpu", _batches(1), net, cuda_graphs=option)


@pytest.mark.parametrize(
    ("kwargs", "cause"), [({"amp": True}, "amp=True"), ({"accumulation_steps": 2}, "accumulation_steps > 1")]
)
def test_unsupported_trainer_settings_run_eagerly_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage], kwargs: dict, cause: str
) -> None:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    net, opt = _net_and_sgd()
    trainer = SupervisedTrainer("cpu", 1, _batches(1), net, opt, nn.MSELoss(), cuda_graphs=True, **kwargs)
    assert trainer._hl_step.graphed is None
    assert [m for m in _graph_warnings(caught) if cause in m] == [
        f"SupervisedTrainer: cuda_graphs is not supported with {cause}; every iteration runs eagerly."
    ]


def test_a_non_torch_optimizer_is_not_graphed(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage]
) -> None:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    net, _ = _net_and_sgd()
    assert SupervisedTrainer("cpu", 1, _batches(1), net, None, None, cuda_graphs=True)._hl_step.graphed is None
    assert len(_graph_warnings(caught)) == 1 and "NoneType" in _graph_warnings(caught)[0]


def test_a_graphed_workflow_is_freed_without_the_garbage_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer, _, _ = _graphed_trainer(monkeypatch, _batches(5), epochs=1)
    trainer.run()
    assert trainer._hl_step.graphed is not None and trainer._hl_step.graphed.num_graphs == 1
    ref = weakref.ref(trainer)
    gc.disable()
    try:
        del trainer
        assert ref() is None  # the graphed step holds the parts, not the trainer: no reference cycle
    finally:
        gc.enable()


def test_evaluator_in_train_mode_runs_eagerly_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage]
) -> None:
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    net, _ = _net_and_sgd()
    assert SupervisedEvaluator("cpu", _batches(1), net, mode="train", cuda_graphs=True)._hl_step.graphed is None
    assert len(_graph_warnings(caught)) == 1 and "mode='train'" in _graph_warnings(caught)[0]


# -- cuda_graphs: the trainer ----------------------------------------------------------------------------------------


def test_graphed_trainer_matches_eager_and_captures_after_warm_up(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage]
) -> None:
    data = _batches()
    ref, ref_out = _trainer(data)
    ref.run()
    trainer, out, fake = _graphed_trainer(monkeypatch, data)
    captures: list[int] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: captures.append(fake.n_captures))
    trainer.run()
    _assert_same_run(trainer, out, ref, ref_out)
    # Three eager warm-up iterations, then one capture (replayed once), then replays only.
    assert captures == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert fake.n_replays == 9
    assert _graph_warnings(caught) == []


def test_graphed_outputs_are_copies_that_later_replays_leave_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _batches()
    trainer, out, _ = _graphed_trainer(monkeypatch, data)
    trainer.run()
    preds = {id(p) for p in out.preds} | {p.data_ptr() for p in out.preds}
    assert len(preds) == 2 * len(out.preds)  # a new tensor, in new memory, every iteration
    assert all(not p.requires_grad for p in out.preds)  # detached, where MONAI's pred carries its graph


def test_graphed_trainer_fires_only_model_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    fired: list[Any] = []
    original = Engine.fire_event

    def spy(self: Engine, event: Any, *args: Any) -> None:
        if isinstance(event, IterationEvents):
            fired.append(event)
        original(self, event, *args)

    # On the class that defines it: the engine still sees its own fire_event and keeps its fast loop.
    monkeypatch.setattr(Engine, "fire_event", spy)
    trainer, _, fake = _graphed_trainer(monkeypatch, _batches(5), epochs=1)
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda _: None)
    trainer.run()
    assert fake.n_captures == 1
    assert fired == [IterationEvents.MODEL_COMPLETED] * 5


@pytest.mark.parametrize("event", ["FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED"])
def test_handlers_inside_the_graphed_step_make_it_eager_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage], event: str
) -> None:
    data = _batches()
    ref, ref_out = _trainer(data)
    ref_calls: list[int] = []
    ref.add_event_handler(getattr(IterationEvents, event), lambda e: ref_calls.append(e.state.iteration))
    ref.run()
    trainer, out, fake = _graphed_trainer(monkeypatch, data)
    calls: list[int] = []
    trainer.add_event_handler(getattr(IterationEvents, event), lambda e: calls.append(e.state.iteration))
    trainer.run()
    _assert_same_run(trainer, out, ref, ref_out)
    assert calls == ref_calls == list(range(1, 13))
    assert fake.n_captures == 0
    messages = _graph_warnings(caught)
    assert len(messages) == 1 and f"IterationEvents.{event} has handlers" in messages[0]


def test_a_replaced_network_runs_eagerly(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage]
) -> None:
    trainer, _, fake = _graphed_trainer(monkeypatch, _batches(2), epochs=1)
    trainer.network = nn.Conv2d(1, 2, 1)
    trainer.optimizer = torch.optim.SGD(trainer.network.parameters(), lr=0.1)
    before = trainer.network.weight.detach().clone()
    trainer.run()
    assert fake.n_captures == 0
    assert not torch.equal(trainer.network.weight, before)  # the new network was trained
    assert len(_graph_warnings(caught)) == 1 and "replaced" in _graph_warnings(caught)[0]


def test_a_second_run_captures_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _batches()
    ref, ref_out = _trainer(data, epochs=2)
    ref.run()
    ref.state.max_epochs = 3
    ref.run()
    trainer, out, fake = _graphed_trainer(monkeypatch, data, epochs=2)
    trainer.run()
    trainer.state.max_epochs = 3
    trainer.run()
    assert fake.n_captures == 2
    _assert_same_run(trainer, out, ref, ref_out)


def test_an_overridden_fire_event_makes_iterations_eager_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage]
) -> None:
    fired: list[Any] = []

    class Faithful(SupervisedTrainer):
        def fire_event(self, event_name: Any) -> None:
            if isinstance(event_name, IterationEvents):
                fired.append(event_name)
            super().fire_event(event_name)

    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    net, opt = _net_and_sgd()
    trainer = Faithful("cpu", 1, _batches(5), net, opt, nn.MSELoss(), decollate=False, cuda_graphs=True)
    fake = _fake(monkeypatch, trainer)
    trainer.run()
    assert fake.n_captures == 0
    assert len(fired) == 5 * 4  # every IterationEvents member of every iteration, as MONAI fires them
    assert len(_graph_warnings(caught)) == 1 and "every event is fired" in _graph_warnings(caught)[0]


def test_graphed_trainer_matches_monais_trainer_with_decollation_and_metatensors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monai_engines = pytest.importorskip("monai.engines")
    from monai.data import MetaTensor

    def data() -> list[dict[str, Any]]:
        return [
            {"image": MetaTensor(b["image"], meta={"tag": i}), "label": MetaTensor(b["label"])}
            for i, b in enumerate(_batches())
        ]

    def run(module: Any, **kwargs: Any) -> tuple[Any, list[torch.Tensor]]:
        net, opt = _net_and_sgd()
        trainer = module.SupervisedTrainer("cpu", 2, data(), net, opt, nn.MSELoss(), **kwargs)
        losses: list[torch.Tensor] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss"]))
        trainer.run()
        return trainer, losses

    ref, ref_losses = run(monai_engines)
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    original = SupervisedTrainer._hl_build_step

    def with_fake_backend(self: SupervisedTrainer, options: Any) -> Any:
        monkeypatch.setattr(graphed, "_backend", FakeBackend(self.network, self.optimizer))
        return original(self, options)

    monkeypatch.setattr(SupervisedTrainer, "_hl_build_step", with_fake_backend)
    trainer, losses = run(hl_workflows, cuda_graphs=True)
    assert graphed._backend.n_captures == 1
    for name, value in ref.network.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], value, msg=f"weight {name} differs")
    assert type(losses[0]) is type(ref_losses[0])
    assert [float(v) for v in losses] == pytest.approx([float(v) for v in ref_losses], rel=1e-6)
    pred = trainer.state.output[1]["pred"]
    assert isinstance(pred, MetaTensor) and pred.meta["tag"] == 5  # the image's metadata, as MONAI propagates it
    torch.testing.assert_close(pred.as_tensor(), ref.state.output[1]["pred"].as_tensor().detach())


# -- cuda_graphs: the evaluator ------------------------------------------------------------------------------------


def test_graphed_evaluator_matches_eager_and_forward_completed_costs_no_graph(
    monkeypatch: pytest.MonkeyPatch, caught: list[warnings.WarningMessage]
) -> None:
    data = _batches()
    net, _ = _net_and_sgd()
    ref, ref_out = _evaluator(data, net)
    ref.run()
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    evaluator, out = _evaluator(data, net, cuda_graphs=True)
    fake = _fake(monkeypatch, evaluator)
    seen: list[torch.Tensor] = []
    evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(e.state.output["pred"]))
    evaluator.run()
    _assert_same_run(evaluator, out, ref, ref_out)
    assert fake.n_captures == 1 and fake.n_replays == 3
    assert len(seen) == 6 and all(s is p for s, p in zip(seen, out.preds))
    assert _graph_warnings(caught) == []
    assert net.training  # the evaluator's eval mode was undone


def test_graphed_evaluator_keeps_its_graph_across_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    net, _ = _net_and_sgd()
    monkeypatch.setattr(graphed, "_backend", FakeBackend())
    evaluator, _ = _evaluator(_batches(2), net, cuda_graphs=True)
    fake = _fake(monkeypatch, evaluator)
    for epoch in (1, 2, 3):
        evaluator.run(epoch)
    assert fake.n_captures == 1 and fake.n_replays == 3  # warm-up 3, capture + replay at the 4th, 2 replays


# -- compile, max_compiled_shapes, on_nonfinite: the same options as every API's -------------------------------------


class _CountingBackend:
    """A torch.compile backend that runs the FX graph as is and counts compilations."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gm: Any, example_inputs: Any) -> Any:
        self.calls += 1
        return gm.forward


def test_compile_runs_the_whole_step_unless_an_event_splits_it() -> None:
    torch._dynamo.reset()
    data = _batches(4)
    ref, ref_out = _trainer(data)
    ref.run()
    trainer, out = _trainer(data, compile={"backend": _CountingBackend()})
    trainer.run()
    step = trainer._hl_step
    assert step.variant == "compiled" and step.body.impl.mode == "whole" and len(step.body.impl._shapes) == 1
    assert not step.compiled_model.step._shapes  # the network alone was never compiled
    _assert_same_run(trainer, out, ref, ref_out)

    split, split_out = _trainer(data, compile={"backend": _CountingBackend()})
    split.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda engine: None)
    split.run()
    assert not split._hl_step.body.impl._shapes and len(split._hl_step.compiled_model.step._shapes) == 1
    _assert_same_run(split, split_out, ref, ref_out)


def test_max_compiled_shapes_caps_the_workflows_compiled_step(caught: list[warnings.WarningMessage]) -> None:
    torch._dynamo.reset()
    data = [{"image": torch.randn(n, 1, 6, 6), "label": torch.rand(n, 2, 6, 6)} for n in (2, 3, 2)]
    net, _ = _net_and_sgd()
    evaluator, _ = _evaluator(data, net, compile={"backend": _CountingBackend()}, max_compiled_shapes=1)
    evaluator.run()
    messages = [str(w.message) for w in caught if "input shapes already" in str(w.message)]
    assert messages == [
        "hotloop: the compiled SupervisedEvaluator has code for 1 input shapes already; further shapes run eagerly "
        "(raise max_compiled_shapes, or pad batches to a fixed shape)"
    ]
    with pytest.raises(ValueError, match="max_compiled_shapes should be a positive integer"):
        _evaluator(data, net, max_compiled_shapes=0)


def _bad_batch_data() -> list[dict[str, torch.Tensor]]:
    data = _batches(4)
    data[2] = {"image": torch.full_like(data[2]["image"], float("nan")), "label": data[2]["label"]}
    return data


def test_on_nonfinite_skip_undoes_the_bad_step_in_the_supervised_trainer(
    caught: list[warnings.WarningMessage],
) -> None:
    data = _bad_batch_data()
    ref, _ = _trainer([b for i, b in enumerate(data) if i != 2], epochs=1)
    ref.run()
    trainer, _ = _trainer(data, epochs=1, on_nonfinite="skip")
    trainer.run()
    for name, value in ref.network.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], value, msg=name)
    assert [str(w.message) for w in caught if "skipped" in str(w.message)] == [
        "hotloop: skipped 1 step(s) for 1 non-finite loss(es), the first at iteration 3 (detected at iteration 4)"
    ]


def test_on_nonfinite_raise_with_events_between_the_pieces() -> None:
    trainer, _ = _trainer(_bad_batch_data(), epochs=1, on_nonfinite="raise")
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda engine: None)  # MONAI's pieces run
    with pytest.raises(FloatingPointError, match="Non-finite loss at iteration 3"):
        trainer.run()


# -- a real GPU ----------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_on_gpu_graphed_trainer_and_evaluator_match_eager() -> None:
    data = [{k: v.cuda() for k, v in batch.items()} for batch in _batches()]

    def train(**kwargs: Any) -> tuple[Any, _Outputs]:
        net, opt = _net_and_sgd()
        net.cuda()
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        trainer = SupervisedTrainer("cuda", 2, data, net, opt, nn.MSELoss(), decollate=False, **kwargs)
        outputs = _Outputs()
        trainer.add_event_handler(Events.ITERATION_COMPLETED, outputs)
        trainer.run()
        return trainer, outputs

    ref, ref_out = train()
    trainer, out = train(cuda_graphs=True, prefetch=True)
    assert trainer._hl_step.graphed.num_graphs == 1
    for name, value in ref.network.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    for pred, expected in zip(out.preds, ref_out.preds):
        torch.testing.assert_close(pred, expected.detach(), rtol=1e-4, atol=1e-5)
    ev_ref, ev_ref_out = _evaluator(data, ref.network, "cuda")
    ev_ref.run()
    evaluator, ev_out = _evaluator(data, ref.network, "cuda", cuda_graphs="auto", prefetch=True)
    evaluator.run()
    assert evaluator._hl_step.graphed.num_graphs == 1
    for pred, expected in zip(ev_out.preds, ev_ref_out.preds):
        torch.testing.assert_close(pred, expected, rtol=1e-4, atol=1e-5)


# -- compile="auto": measured on the workflows' own iterations -----------------------------------------------------


def test_auto_measures_the_workflows_steps_and_trains_as_eager_does(
    monkeypatch: pytest.MonkeyPatch, step_clock: Any
) -> None:
    """The trainer's candidates (eager, fused, graphed here: the run is too short to compile) take turns on its
    iterations; the choice is ``trainer.step_choice`` and the weights are the eager run's, within float tolerance."""
    data = _batches(4)
    ref, ref_out = _trainer(data, epochs=15)
    ref.run()
    monkeypatch.setattr(graphed, "_backend", FakeBackend())  # so that graphs apply on "cpu"
    trainer, out = _trainer(data, epochs=15, compile="auto")
    _fake(monkeypatch, trainer)
    clock = step_clock(eager=3, fused=2, graphed=2.5)
    clock.step = trainer._hl_step
    trainer.run()
    choice = trainer.step_choice
    assert choice.variant == "fused" and list(choice.times_ms) == ["fused", "graphed", "eager"]
    assert choice.skipped["compiled"].startswith("54 iterations left × 3 ms × 10% (the best gain compiling has")
    assert set(choice.skipped) == {"compiled", "compiled_fused", "eager"}  # eager: > 1.3× fused after 2 chunks
    for name, value in ref.network.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    assert [loss.item() for loss in out.losses] == pytest.approx([loss.item() for loss in ref_out.losses], rel=1e-4)

    evaluator, _ = _evaluator(data, trainer.network, compile="auto")
    clock.step = evaluator._hl_step
    for _ in range(12):  # one epoch of 4 iterations each: the measurement goes on from run to run
        evaluator.run()
    assert evaluator.step_choice.variant == "graphed" and list(evaluator.step_choice.times_ms) == ["graphed", "eager"]
