"""Differential tests: hotloop.workflows' evaluators against monai.engines' on the same data, nets and handlers."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

monai = pytest.importorskip("monai")

import monai.engines as monai_engines  # noqa: E402
from _log_capture import LogLines  # noqa: E402
from _workflow_scenarios import (  # noqa: E402
    ProbeInferer,
    ProbeNet,
    Recorder,
    assert_same,
    loader,
    seg_net,
    seg_samples,
)
from monai.handlers import CheckpointSaver, MeanDice, StatsHandler, from_engine  # noqa: E402
from monai.inferers import SlidingWindowInferer  # noqa: E402
from monai.transforms import Activationsd, AsDiscreted, Compose, MeanEnsembled  # noqa: E402

import hotloop.workflows as hl_workflows  # noqa: E402

MODULES = {"monai": monai_engines, "hotloop": hl_workflows}


def _post(kind: str | None, pred_key: str = "pred") -> Any:
    if kind is None:
        return None
    if kind == "sigmoid":
        return Activationsd(keys=pred_key, sigmoid=True)
    return Compose(
        [
            Activationsd(keys=pred_key, softmax=True),
            AsDiscreted(keys=[pred_key, "label"], argmax=[True, False], to_onehot=2),
        ]
    )


def _perturb(net: torch.nn.Module, step: int) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.0 + 0.5 * step).add_(0.05 * step)


def _run_supervised(
    which: str, decollate: bool, post: str | None, tmp_path: Any, inferer: Any = None, mode: str = "eval"
) -> dict:
    mod = MODULES[which]
    net = seg_net()
    rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
    logs = LogLines(f"stats_eval_{which}")
    handlers: list[Any] = [rec, StatsHandler(name=f"stats_eval_{which}", output_transform=lambda x: None)]
    metric = None
    if post == "onehot" and decollate:
        metric = {"dice": MeanDice(include_background=True, output_transform=from_engine(["pred", "label"]))}
        handlers.append(
            CheckpointSaver(save_dir=str(tmp_path / which), save_dict={"net": net}, save_key_metric=True, n_saved=3)
        )
    evaluator = mod.SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader(seg_samples()),
        network=net,
        inferer=inferer,
        postprocessing=_post(post),
        key_val_metric=metric,
        val_handlers=handlers,
        decollate=decollate,
        mode=mode,
    )
    for epoch in (1, 2, 3):
        evaluator.run(global_epoch=epoch)
        _perturb(net, epoch)
    logs.close()
    files = sorted(os.listdir(tmp_path / which)) if metric else []
    return {
        "calls": rec.calls,
        "outputs": rec.snapshots,
        "metrics": dict(evaluator.state.metrics),
        "best": (evaluator.state.best_metric, evaluator.state.best_metric_epoch),
        "stats": evaluator.get_stats("iteration"),
        "logs": logs.lines,
        "files": files,
        "state": (evaluator.state.epoch, evaluator.state.iteration, evaluator.state.max_epochs),
    }


@pytest.mark.parametrize(
    ("decollate", "post"), [(True, None), (False, None), (True, "onehot"), (True, "sigmoid"), (False, "sigmoid")]
)
def test_supervised_evaluator_matches_monai(decollate: bool, post: str | None, tmp_path: Any) -> None:
    ref = _run_supervised("monai", decollate, post, tmp_path)
    got = _run_supervised("hotloop", decollate, post, tmp_path)
    assert got["calls"] == ref["calls"]
    assert any(c[0] == "model_completed" for c in got["calls"])
    assert_same(got["outputs"], ref["outputs"])
    assert_same(got["metrics"], ref["metrics"])
    assert got["best"] == ref["best"]
    assert got["stats"] == ref["stats"]
    assert got["logs"] == ref["logs"]
    assert got["files"] == ref["files"]
    assert got["state"] == ref["state"] == (3, 2, 3)
    if post == "onehot":
        assert got["logs"] and got["files"] and "dice" in got["metrics"]


def test_supervised_evaluator_sliding_window_and_train_mode(tmp_path: Any) -> None:
    inferer = SlidingWindowInferer(roi_size=(4, 4), sw_batch_size=2, overlap=0.25)
    ref = _run_supervised("monai", True, "sigmoid", tmp_path, inferer=inferer, mode="train")
    got = _run_supervised("hotloop", True, "sigmoid", tmp_path, inferer=inferer, mode="train")
    assert got["calls"] == ref["calls"]
    assert_same(got["outputs"], ref["outputs"])


def _run_ensemble(which: str, decollate: bool, post: bool, pred_keys: Any) -> dict:
    mod = MODULES[which]
    nets = [seg_net(seed=1), seg_net(seed=2)]
    rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
    keys = pred_keys or ["pred_0", "pred_1"]
    postprocessing = None
    metric = None
    if post:
        postprocessing = Compose(
            [
                MeanEnsembled(keys=keys, output_key="pred"),
                Activationsd(keys="pred", softmax=True),
                AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=2),
            ]
        )
        metric = {"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))}
    evaluator = mod.EnsembleEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader(seg_samples(n=3)),
        networks=nets,
        pred_keys=pred_keys,
        postprocessing=postprocessing,
        key_val_metric=metric,
        val_handlers=[rec],
        decollate=decollate,
    )
    evaluator.run()
    return {"calls": rec.calls, "outputs": rec.snapshots, "metrics": dict(evaluator.state.metrics)}


@pytest.mark.parametrize(
    ("decollate", "post", "pred_keys"), [(True, True, ["a", "b"]), (False, False, None), (True, False, None)]
)
def test_ensemble_evaluator_matches_monai(decollate: bool, post: bool, pred_keys: Any) -> None:
    ref = _run_ensemble("monai", decollate, post, pred_keys)
    got = _run_ensemble("hotloop", decollate, post, pred_keys)
    assert got["calls"] == ref["calls"]
    assert_same(got["outputs"], ref["outputs"])
    assert_same(got["metrics"], ref["metrics"])
    if post:
        assert "dice" in got["metrics"]


def _record_all_events(cls: type) -> type:
    """A subclass that records every event through an overridden ``_fire_event`` (Ignite's RecordedEngine)."""

    def _fire_event(self: Any, event_name: Any, *args: Any, **kwargs: Any) -> None:
        self.fired.append(
            (str(getattr(event_name, "name", event_name)).lower(), self.state.epoch, self.state.iteration)
        )
        return cls._fire_event(self, event_name, *args, **kwargs)

    return type(f"Recorded{cls.__name__}", (cls,), {"_fire_event": _fire_event, "fired": None})


def test_every_event_reaches_an_overridden_fire_event() -> None:
    fired = {}
    for which, mod in MODULES.items():
        cls = _record_all_events(mod.SupervisedEvaluator)
        evaluator = cls(torch.device("cpu"), loader(seg_samples()), seg_net(), decollate=False)
        evaluator.fired = []
        evaluator.run()
        fired[which] = evaluator.fired
    assert fired["hotloop"] == fired["monai"]
    assert ("forward_completed", 1, 1) in fired["hotloop"]


def test_iteration_events_without_handlers_are_not_fired() -> None:
    evaluator = hl_workflows.SupervisedEvaluator(torch.device("cpu"), loader(seg_samples()), seg_net(), decollate=False)
    evaluator.run()
    events = hl_workflows.IterationEvents
    # Ignite's dispatch creates the key of every event it fires (a defaultdict): absent keys were never fired.
    assert events.FORWARD_COMPLETED not in evaluator._event_handlers
    assert events.MODEL_COMPLETED not in evaluator._event_handlers
    assert evaluator.state.output["pred"].shape == (2, 2, 8, 8)


def test_get_stats_and_mode_validation() -> None:
    evaluator = hl_workflows.SupervisedEvaluator("cpu", [], seg_net())
    assert evaluator.get_stats("missing") == {
        "rank": 0,
        "best_validation_epoch": -1,
        "best_validation_metric": -1,
        "missing": None,
    }
    with pytest.warns(UserWarning, match="skip the `run`"):
        evaluator.run()
    with pytest.raises(ValueError, match="eval"):
        hl_workflows.SupervisedEvaluator("cpu", [], seg_net(), mode="test")
    with pytest.raises(ValueError, match="pred_keys"):
        hl_workflows.EnsembleEvaluator("cpu", [], [seg_net()], pred_keys=["a", "b"])


# -- MetaTensor batches: networks, inferers and postprocessing get what MONAI gives them ------------------------------


class _AssertAppliedOps(torch.nn.Module):
    """MONAI's network from ``tests/transforms/inverse/test_invertd.py::test_workflow`` (1.5.0): it reads the
    batch's ``applied_operations``, so it needs the MetaTensor itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(x.applied_operations) == x.shape[0]
        assert all(len(a) > 0 for a in x.applied_operations)
        return x


@pytest.mark.parametrize("use_threads", [True, False])
def test_invertd_over_metatensor_batches_matches_monai(use_threads: bool) -> None:
    """MONAI's own engine scenario: ``Invertd`` postprocessing over a (Thread)DataLoader of MetaTensor batches."""
    import numpy as np
    from monai.data import DataLoader, Dataset, MetaTensor, ThreadDataLoader, create_test_image_2d
    from monai.transforms import EnsureChannelFirstd, Invertd, Spacingd

    img, _ = create_test_image_2d(60, 60, 2, 10, num_seg_classes=2, random_state=np.random.RandomState(0))
    image = MetaTensor(img, meta={"original_channel_dim": float("nan"), "pixdim": [1.0, 1.0]})
    preprocessing = Compose([EnsureChannelFirstd("image"), Spacingd("image", pixdim=[2.0, 2.0])])
    postprocessing = Compose([Invertd("pred", transform=preprocessing, orig_keys="image")])
    results = {}
    for which, mod in MODULES.items():
        dataset = Dataset([{"image": image.clone()} for _ in range(4)], transform=preprocessing)
        data = (ThreadDataLoader if use_threads else DataLoader)(dataset, num_workers=0, batch_size=2)
        rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
        evaluator = mod.SupervisedEvaluator(
            device=torch.device("cpu"),
            network=_AssertAppliedOps(),
            postprocessing=postprocessing,
            val_data_loader=data,
            val_handlers=[rec],
        )
        evaluator.run()
        assert evaluator.state.output[0]["pred"].shape == (1, 60, 60)  # inverted back to the original size
        results[which] = rec
    assert results["hotloop"].calls == results["monai"].calls
    assert_same(results["hotloop"].snapshots, results["monai"].snapshots)


def _probe_evaluator(which: str, post: str | None, ensemble: bool, **kwargs: Any) -> dict:
    mod = MODULES[which]
    seen: list = []
    rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
    common: dict[str, Any] = {
        "device": torch.device("cpu"),
        "val_data_loader": loader(seg_samples(n=4)),
        "inferer": ProbeInferer(seen),
        "postprocessing": _post(post),
        "val_handlers": [rec],
        **kwargs,
    }
    if ensemble:
        nets = [ProbeNet(seen, seed=1), ProbeNet(seen, seed=2)]
        evaluator = mod.EnsembleEvaluator(networks=nets, pred_keys=["pred", "pred_b"], **common)
    else:
        evaluator = mod.SupervisedEvaluator(network=ProbeNet(seen), **common)
    evaluator.run()
    return {"seen": seen, "calls": rec.calls, "outputs": rec.snapshots}


@pytest.mark.parametrize(("post", "ensemble"), [("onehot", False), (None, False), ("sigmoid", True)])
def test_networks_and_inferers_get_monais_metatensors(post: str | None, ensemble: bool) -> None:
    ref = _probe_evaluator("monai", post, ensemble)
    got = _probe_evaluator("hotloop", post, ensemble)
    assert got["seen"] == ref["seen"]
    assert got["seen"][:2] == [("MetaTensor", True, "['img0.nii', 'img1.nii']", 2)] * 2  # inferer, then network
    assert got["calls"] == ref["calls"]
    assert_same(got["outputs"], ref["outputs"])


def test_compiled_forward_unwraps_and_casts_back_as_monai_does() -> None:
    """Under ``compile`` MONAI hands the network plain tensors, warns, and casts image/label/pred back afterwards."""
    results = {}
    for which in MODULES:
        with pytest.warns(UserWarning) as caught:
            results[which] = _probe_evaluator(which, "onehot", False, compile=True, compile_kwargs={"backend": "eager"})
        results[which]["warnings"] = [str(w.message) for w in caught if "compile" in str(w.message)]
    got, ref = results["hotloop"], results["monai"]
    assert got["seen"] == ref["seen"]
    assert len(got["seen"]) >= 2 and set(got["seen"]) == {("Tensor",)}  # plain tensors into inferer and network
    assert got["warnings"] == ref["warnings"] and len(got["warnings"]) == 2  # once per iteration
    assert got["calls"] == ref["calls"]
    assert_same(got["outputs"], ref["outputs"])  # per-sample MetaTensors rebuilt from MONAI's cast-back batch
