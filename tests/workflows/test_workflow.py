"""Workflow machinery: batch-level postprocessing wiring, MONAI interop, compile, references, argument checks."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import torch

monai = pytest.importorskip("monai")

import monai.engines as monai_engines  # noqa: E402
from _workflow_scenarios import Recorder, assert_same, loader, seg_net, seg_samples  # noqa: E402
from ignite.engine import Engine as IgniteEngine  # noqa: E402
from monai.handlers import ValidationHandler  # noqa: E402
from monai.transforms import Activationsd, AsDiscreted, Compose  # noqa: E402

import hotloop  # noqa: E402
import hotloop.workflows as hl_workflows  # noqa: E402
from hotloop.workflows import _postprocess as postprocess_module  # noqa: E402


def _sigmoid_batch(data: dict) -> dict:
    return {**data, "pred": torch.sigmoid(data["pred"])}


def _evaluate(mod: Any, **kwargs: Any) -> tuple[Any, Recorder]:
    rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
    evaluator = mod.SupervisedEvaluator(
        torch.device("cpu"), loader(seg_samples()), seg_net(), val_handlers=[rec], **kwargs
    )
    evaluator.run()
    return evaluator, rec


def test_batch_postprocessing_gives_monais_per_sample_results(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []

    def translate(postprocessing: Any, exact: bool) -> Any:
        def run(data: dict) -> dict:
            seen.append(data)
            return _sigmoid_batch(data)

        return run

    monkeypatch.setattr(postprocess_module, "batch_postprocessing", translate)
    _, ref = _evaluate(monai_engines, postprocessing=Activationsd(keys="pred", sigmoid=True))
    got_engine, got = _evaluate(hl_workflows, postprocessing=Activationsd(keys="pred", sigmoid=True))
    assert len(seen) == 2  # one call per batch, not per sample
    assert all(type(v) is torch.Tensor for v in seen[0].values() if isinstance(v, torch.Tensor))
    assert seen[0]["pred"].shape == (2, 2, 8, 8)
    assert got.calls == ref.calls
    assert_same(got.snapshots, ref.snapshots)  # per-sample MetaTensors with MONAI's metadata
    assert isinstance(got_engine.state.output, list) and len(got_engine.state.output) == 2


def test_batch_postprocessing_is_not_used_without_decollate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postprocess_module, "batch_postprocessing", lambda post, exact: pytest.fail("no translation"))
    _, ref = _evaluate(monai_engines, postprocessing=Activationsd(keys="pred", sigmoid=True), decollate=False)
    _, got = _evaluate(hl_workflows, postprocessing=Activationsd(keys="pred", sigmoid=True), decollate=False)
    assert_same(got.snapshots, ref.snapshots)


def test_batch_postprocessing_falls_back_on_a_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postprocess_module, "batch_postprocessing", lambda post, exact: lambda d: d["id_only_in_batch"])
    post = Activationsd(keys="pred", sigmoid=True)
    _, ref = _evaluate(monai_engines, postprocessing=post)
    with pytest.warns(UserWarning, match="per-sample postprocessing"):
        engine, got = _evaluate(hl_workflows, postprocessing=post)
    assert engine._hl_post._batch is None
    assert_same(got.snapshots, ref.snapshots)


@pytest.mark.parametrize("mode, exact", [("fused", False), ("exact", True), ("per_sample", None)])
def test_postprocessing_is_one_handler_and_its_mode_picks_the_path(
    monkeypatch: pytest.MonkeyPatch, mode: str, exact: bool | None
) -> None:
    asked: list[bool] = []
    real = postprocess_module.batch_postprocessing

    def translate(postprocessing: Any, exact: bool) -> Any:
        asked.append(exact)
        return real(postprocessing, exact=exact)

    monkeypatch.setattr(postprocess_module, "batch_postprocessing", translate)
    post = Compose([Activationsd(keys="pred", softmax=True), AsDiscreted(keys="pred", argmax=True, to_onehot=2)])
    _, ref = _evaluate(monai_engines, postprocessing=post)
    engine, got = _evaluate(hl_workflows, postprocessing=post, postprocessing_mode=mode)
    assert asked == ([] if exact is None else [exact])
    handlers = engine._event_handlers[hl_workflows.IterationEvents.MODEL_COMPLETED]
    assert [entry[0] for entry in handlers].count(engine._hl_post) == 1 and handlers[0][0] is engine._hl_post
    assert_same(got.snapshots, ref.snapshots)  # float32 logits without ties: the fused argmax is MONAI's too


def test_postprocessing_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="postprocessing_mode should be one of"):
        hl_workflows.SupervisedEvaluator("cpu", [], seg_net(), postprocessing_mode="fast")


def test_monai_validation_handler_accepts_hotloop_evaluators() -> None:
    net = seg_net(out_channels=1)
    evaluator = hl_workflows.SupervisedEvaluator("cpu", loader(seg_samples(n=2)), net)
    handler = ValidationHandler(interval=1, validator=evaluator)
    trainer = hl_workflows.SupervisedTrainer(
        "cpu",
        2,
        loader(seg_samples(n=2)),
        net,
        torch.optim.SGD(net.parameters(), 0.1),
        torch.nn.MSELoss(),
        prepare_batch=lambda b, d, nb, **kw: (b["image"], b["image"]),
        train_handlers=[handler],
    )
    trainer.run()
    assert evaluator.state.epoch == 2
    with pytest.raises(TypeError, match="Evaluator"):
        ValidationHandler(interval=1, validator=trainer)  # still rejects what is not an evaluator


def test_iteration_events_are_monais_when_installed() -> None:
    assert hl_workflows.IterationEvents is monai_engines.IterationEvents
    assert hl_workflows.CommonKeys.IMAGE == "image" and {"pred": 1}[hl_workflows.CommonKeys.PRED] == 1
    assert [str(k) for k in hl_workflows.GanKeys] == [str(k) for k in monai.utils.GanKeys]


def test_compile_runs_the_forward_through_the_compiled_step() -> None:
    ref, ref_rec = _evaluate(hl_workflows, decollate=False)
    with pytest.warns(UserWarning, match="Will convert to PyTorch Tensor if using compile"):
        got, got_rec = _evaluate(hl_workflows, decollate=False, compile=True, compile_kwargs={"backend": "eager"})
    step = got._hl_step
    assert step.variant == "compiled" and step.body.impl.mode == "whole" and step.it.model is got.network
    assert isinstance(got.network, torch.nn.Module)  # MONAI replaces it by the compiled module; hotloop keeps it
    # Same values; the metadata is MONAI's cast-back under compile (test_evaluator.py compares it with MONAI's).
    assert_same(got_rec.snapshots, ref_rec.snapshots, meta_types=False)


def test_engine_is_freed_without_garbage_collection() -> None:
    gc.disable()
    try:
        evaluator = hl_workflows.SupervisedEvaluator("cpu", [torch.rand(2, 1, 8, 8)], seg_net(), decollate=True)
        evaluator.run()
        ref = weakref.ref(evaluator)
        del evaluator
        assert ref() is None
    finally:
        gc.enable()


def test_event_names_and_custom_events() -> None:
    names: list[Any] = ["custom_event"]
    evaluator = hl_workflows.SupervisedEvaluator("cpu", [], seg_net(), event_names=names)
    assert names == ["custom_event"]  # MONAI appends IterationEvents to the caller's list; hotloop does not
    assert isinstance(evaluator, hotloop.Engine) and isinstance(evaluator, IgniteEngine)
    fired = []
    evaluator.add_event_handler("custom_event", lambda e: fired.append(1))
    evaluator.fire_event("custom_event")
    assert fired == [1]
    with pytest.raises(ValueError, match="event_names"):
        hl_workflows.SupervisedEvaluator("cpu", [], seg_net(), event_names=[3])


def test_distributed_sampler_epoch_is_set() -> None:
    dataset = list(range(8))
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True)
    data = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=2)
    epochs = []
    trainer = hl_workflows.SupervisedTrainer(
        "cpu", 3, data, seg_net(), None, None, iteration_update=lambda e, b: epochs.append(sampler.epoch)
    )
    trainer.run()
    assert epochs == [1, 1, 2, 2, 3, 3]


_CLASSES = [
    "Workflow",
    "Trainer",
    "SupervisedTrainer",
    "GanTrainer",
    "Evaluator",
    "SupervisedEvaluator",
    "EnsembleEvaluator",
    "PrepareBatchExtraInput",
]
_FUNCTIONS = ["default_prepare_batch", "default_make_latent", "default_metric_cmp_fn", "engine_apply_transform"]


# hotloop-only keyword-only options appended after MONAI's arguments (docs/migration-monai.md, "Speed options").
_HOTLOOP_ONLY = {"prefetch", "cuda_graphs", "max_compiled_shapes", "on_nonfinite", "postprocessing_mode"}


def _params(obj: Any) -> list[tuple[str, Any, Any]]:
    import inspect

    out = []
    for p in inspect.signature(obj).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in _HOTLOOP_ONLY:
            continue
        default = p.default
        if callable(default) and hasattr(default, "__name__"):
            default = default.__name__  # MONAI's default_prepare_batch vs hotloop's: same name and behaviour
        elif default is not inspect.Parameter.empty and not isinstance(default, (int, float, type(None))):
            default = str(default)
        out.append((p.name, p.kind, default))
    return out


@pytest.mark.parametrize("name", _CLASSES + _FUNCTIONS + ["get_devices_spec"])
def test_signatures_match_monai(name: str) -> None:
    got, ref = getattr(hl_workflows, name), getattr(monai_engines, name)
    assert _params(got) == _params(ref)
    for method in ("run", "get_stats", "_iteration"):
        if hasattr(ref, method) and isinstance(ref, type):
            assert _params(getattr(got, method)) == _params(getattr(ref, method)), method


def _count_iterations(mod: Any, data: Any, epoch_length: Any) -> tuple:
    seen: list[int] = []

    def update(engine: Any, batch: Any) -> dict:
        seen.append(int(batch["image"].sum()))
        return {"n": len(seen)}

    trainer = mod.SupervisedTrainer(
        "cpu", 2, data, seg_net(), None, None, epoch_length=epoch_length, iteration_update=update
    )
    trainer.run()
    return seen, trainer.state.epoch_length, trainer.state.iteration, trainer.state.output


@pytest.mark.parametrize("epoch_length", [None, 1])
def test_epoch_length_and_iteration_update_match_monai(epoch_length: Any) -> None:
    batches = [{"image": torch.full((1,), float(i))} for i in range(3)]
    assert _count_iterations(hl_workflows, batches, epoch_length) == _count_iterations(
        monai_engines, batches, epoch_length
    )
