"""Differential tests: hotloop.workflows' trainers against monai.engines' on the same data, nets and handlers."""

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
    describe,
    loader,
    seg_net,
    seg_samples,
)
from monai.handlers import CheckpointSaver, MeanDice, StatsHandler, ValidationHandler, from_engine  # noqa: E402
from monai.losses import DiceLoss  # noqa: E402
from monai.transforms import Activationsd, AsDiscreted, Compose  # noqa: E402

import hotloop.workflows as hl_workflows  # noqa: E402

MODULES = {"monai": monai_engines, "hotloop": hl_workflows}


def _onehot_post() -> Any:
    return Compose(
        [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=2),
        ]
    )


def _dice() -> Any:
    return MeanDice(include_background=True, output_transform=from_engine(["pred", "label"]))


def _run_trainer(which: str, decollate: bool, post: bool, tmp_path: Any, accumulation_steps: int = 1) -> dict:
    mod = MODULES[which]
    net = seg_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    val_rec = Recorder(extra_events=list(mod.IterationEvents))
    val_logs = LogLines(f"stats_val_{which}")
    evaluator = mod.SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader(seg_samples(n=2, seed=7)),
        network=net,
        postprocessing=_onehot_post(),
        key_val_metric={"val_dice": _dice()},
        val_handlers=[
            val_rec,
            StatsHandler(name=f"stats_val_{which}", output_transform=lambda x: None),
            CheckpointSaver(save_dir=str(tmp_path / which / "best"), save_dict={"net": net}, save_key_metric=True),
        ],
    )
    rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
    logs = LogLines(f"stats_train_{which}")
    loss_transform = from_engine(["loss"], first=True) if decollate else (lambda out: out["loss"].item())
    trainer = mod.SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=3,
        train_data_loader=loader(seg_samples(n=6)),
        network=net,
        optimizer=opt,
        loss_function=DiceLoss(to_onehot_y=True, softmax=True),
        postprocessing=_onehot_post() if post else None,
        key_train_metric={"train_dice": _dice()} if post and decollate else None,
        train_handlers=[
            rec,
            ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
            StatsHandler(name=f"stats_train_{which}", tag_name="train_loss", output_transform=loss_transform),
            CheckpointSaver(
                save_dir=str(tmp_path / which / "ckpt"), save_dict={"net": net, "opt": opt}, save_interval=1
            ),
        ],
        decollate=decollate,
        accumulation_steps=accumulation_steps,
    )
    trainer.run()
    logs.close()
    val_logs.close()
    return {
        "calls": rec.calls,
        "val_calls": val_rec.calls,
        "outputs": rec.snapshots,
        "weights": {k: v.clone() for k, v in net.state_dict().items()},
        "metrics": dict(trainer.state.metrics),
        "val_metrics": dict(evaluator.state.metrics),
        "best": (trainer.state.best_metric, trainer.state.best_metric_epoch),
        "val_best": (evaluator.state.best_metric, evaluator.state.best_metric_epoch),
        "stats": trainer.get_stats("best_metric"),
        "logs": logs.lines,
        "val_logs": val_logs.lines,
        "files": sorted(os.listdir(tmp_path / which / "ckpt")) + sorted(os.listdir(tmp_path / which / "best")),
        "ckpt": torch.load(tmp_path / which / "ckpt" / "checkpoint_epoch=3.pt", weights_only=False),
    }


@pytest.mark.parametrize(("decollate", "post", "acc"), [(True, True, 1), (False, False, 1), (True, False, 4)])
def test_supervised_trainer_matches_monai(decollate: bool, post: bool, acc: int, tmp_path: Any) -> None:
    ref = _run_trainer("monai", decollate, post, tmp_path, accumulation_steps=acc)
    got = _run_trainer("hotloop", decollate, post, tmp_path, accumulation_steps=acc)
    assert got["calls"] == ref["calls"]
    assert ("backward_completed", 3, 9) in got["calls"]
    assert got["val_calls"] == ref["val_calls"]
    assert_same(got["outputs"], ref["outputs"])
    assert_same(got["weights"], ref["weights"])
    assert_same(got["metrics"], ref["metrics"])
    assert_same(got["val_metrics"], ref["val_metrics"])
    assert got["best"] == ref["best"]
    assert got["val_best"] == ref["val_best"]
    assert got["stats"] == ref["stats"]
    assert got["logs"] == ref["logs"] and got["logs"]
    assert got["val_logs"] == ref["val_logs"] and got["val_logs"]
    assert got["files"] == ref["files"]
    assert_same(got["ckpt"], ref["ckpt"])


class _Discriminator(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _run_gan(which: str, d_train_steps: int, g_update_latents: bool) -> dict:
    mod = MODULES[which]
    torch.manual_seed(2)
    g_net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh())
    d_net = _Discriminator()
    bce = torch.nn.BCEWithLogitsLoss()

    def d_loss(fakes: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
        real_logits, fake_logits = d_net(reals), d_net(fakes.detach())
        return (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))) / 2

    def g_loss(fakes: torch.Tensor) -> torch.Tensor:
        logits = d_net(fakes)
        return bce(logits, torch.ones_like(logits))

    data = torch.utils.data.DataLoader([{"reals": torch.rand(16)} for _ in range(4)], batch_size=2)
    rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
    trainer = mod.GanTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=data,
        g_network=g_net,
        g_optimizer=torch.optim.Adam(g_net.parameters(), 1e-2),
        g_loss_function=g_loss,
        d_network=d_net,
        d_optimizer=torch.optim.Adam(d_net.parameters(), 1e-2),
        d_loss_function=d_loss,
        d_train_steps=d_train_steps,
        latent_shape=4,
        g_update_latents=g_update_latents,
        train_handlers=[rec],
    )
    torch.manual_seed(5)
    trainer.run()
    return {
        "calls": rec.calls,
        "outputs": rec.snapshots,
        "weights": [g_net.state_dict(), d_net.state_dict()],
        "stats": trainer.get_stats(),
    }


@pytest.mark.parametrize(("d_train_steps", "g_update_latents"), [(1, True), (2, False)])
def test_gan_trainer_matches_monai(d_train_steps: int, g_update_latents: bool) -> None:
    ref = _run_gan("monai", d_train_steps, g_update_latents)
    got = _run_gan("hotloop", d_train_steps, g_update_latents)
    assert got["calls"] == ref["calls"] and len(got["calls"]) > 10
    assert_same(got["outputs"], ref["outputs"])
    assert isinstance(got["outputs"][0]["output"]["g_loss"], float)
    assert_same(got["weights"], ref["weights"])
    assert got["stats"] == ref["stats"]


def test_gan_trainer_needs_a_dataloader() -> None:
    with pytest.raises(ValueError, match="DataLoader"):
        hl_workflows.GanTrainer("cpu", 1, [], seg_net(), None, None, seg_net(), None, None)  # type: ignore[arg-type]


def test_trainer_arguments_are_checked() -> None:
    net = seg_net()
    with pytest.raises(ValueError, match="accumulation_steps"):
        hl_workflows.SupervisedTrainer(
            "cpu", 1, [], net, torch.optim.SGD(net.parameters(), 0.1), None, accumulation_steps=0
        )
    with pytest.raises(TypeError, match="key_metric"):
        hl_workflows.SupervisedTrainer("cpu", 1, [], net, None, None, key_train_metric=[_dice()])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="event_names"):
        hl_workflows.SupervisedTrainer("cpu", 1, [], net, None, None, event_names="custom")  # type: ignore[arg-type]


def test_handler_replacing_pred_and_loss_is_honoured() -> None:
    """A FORWARD_COMPLETED handler that edits ``pred`` changes the loss, in MONAI and in hotloop alike."""
    results = {}
    for which, mod in MODULES.items():
        net = seg_net()
        trainer = mod.SupervisedTrainer(
            "cpu",
            1,
            loader(seg_samples(n=2)),
            net,
            torch.optim.SGD(net.parameters(), 0.1),
            DiceLoss(to_onehot_y=True, softmax=True),
            decollate=False,
        )

        @trainer.on(mod.IterationEvents.FORWARD_COMPLETED)
        def _scale(engine: Any) -> None:
            engine.state.output["pred"] = engine.state.output["pred"] * 3.0

        trainer.run()
        results[which] = (trainer.state.output["loss"].item(), net.state_dict())
    assert results["hotloop"][0] == pytest.approx(results["monai"][0], abs=1e-6)
    assert_same(results["hotloop"][1], results["monai"][1])


def test_trainer_stats() -> None:
    net = seg_net()
    trainer = hl_workflows.SupervisedTrainer("cpu", 2, [], net, torch.optim.SGD(net.parameters(), 0.1), None)
    assert trainer.get_stats("nothing") == {
        "rank": 0,
        "current_epoch": 0,
        "current_iteration": 0,
        "total_epochs": 2,
        "total_iterations": 0,
        "nothing": None,
    }


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_amp_path_matches_monai() -> None:
    """``amp=True`` takes the GradScaler branch (a disabled scaler and autocast on a machine without CUDA)."""
    results = {}
    for which, mod in MODULES.items():
        net = seg_net()
        rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
        trainer = mod.SupervisedTrainer(
            "cpu",
            2,
            loader(seg_samples(n=4)),
            net,
            torch.optim.SGD(net.parameters(), 0.1),
            DiceLoss(to_onehot_y=True, softmax=True),
            amp=True,
            amp_kwargs={"dtype": torch.bfloat16},
            train_handlers=[rec],
        )
        trainer.run()
        assert trainer.scaler is not None
        results[which] = (rec.calls, rec.snapshots, net.state_dict())
    assert results["hotloop"][0] == results["monai"][0]
    assert_same(results["hotloop"][1], results["monai"][1])
    assert_same(results["hotloop"][2], results["monai"][2])


def test_iteration_events_without_handlers_are_not_fired_in_training() -> None:
    net = seg_net()
    trainer = hl_workflows.SupervisedTrainer(
        "cpu",
        1,
        loader(seg_samples(n=2)),
        net,
        torch.optim.SGD(net.parameters(), 0.1),
        DiceLoss(to_onehot_y=True, softmax=True),
        decollate=False,
    )
    trainer.run()
    fired = set(trainer._event_handlers) & set(hl_workflows.IterationEvents)
    assert fired == set()
    assert trainer.state.output["loss"].ndim == 0


# -- MetaTensor batches: networks, inferers and losses get what MONAI gives them ---------------------------------------


def _probe_trainer(which: str, **kwargs: Any) -> dict:
    mod = MODULES[which]
    seen: list = []
    dice = DiceLoss(to_onehot_y=True, softmax=True)

    def loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        seen.append(("loss", describe(pred), describe(label)))
        return dice(pred, label)

    net = ProbeNet(seen)
    rec = Recorder(extra_events=list(mod.IterationEvents), outputs=True)
    trainer = mod.SupervisedTrainer(
        "cpu",
        2,
        loader(seg_samples(n=4)),
        net,
        torch.optim.SGD(net.parameters(), 0.1),
        loss,
        inferer=ProbeInferer(seen),
        postprocessing=_onehot_post(),
        train_handlers=[rec],
        **kwargs,
    )
    views: list = []
    events = mod.IterationEvents
    for event in (events.FORWARD_COMPLETED, events.LOSS_COMPLETED, events.MODEL_COMPLETED):

        @trainer.on(event)
        def _view(engine: Any, event: Any = event) -> None:
            output = engine.state.output  # at MODEL_COMPLETED: decollated and postprocessed, per sample
            output = output[0] if isinstance(output, list) else output
            views.append((str(event.name), {k: describe(v) for k, v in output.items() if isinstance(v, torch.Tensor)}))

    trainer.run()
    return {"seen": seen, "views": views, "calls": rec.calls, "outputs": rec.snapshots, "weights": net.state_dict()}


def test_network_inferer_and_loss_get_monais_metatensors() -> None:
    ref, got = _probe_trainer("monai"), _probe_trainer("hotloop")
    assert got["seen"] == ref["seen"]
    meta = ("MetaTensor", True, "['img0.nii', 'img1.nii']", 2)
    assert got["seen"][0] == got["seen"][1] == meta  # inferer, network
    assert got["seen"][2][0] == "loss" and got["seen"][2][2] == ("MetaTensor", True, "['lbl0.nii', 'lbl1.nii']", 2)
    assert got["views"] == ref["views"]
    assert got["views"][1][1]["loss"][0] == "MetaTensor"  # at LOSS_COMPLETED: a loss of MetaTensors is one too
    assert got["calls"] == ref["calls"]
    assert_same(got["outputs"], ref["outputs"])
    assert_same(got["weights"], ref["weights"])


def test_compiled_trainer_unwraps_and_casts_back_as_monai_does() -> None:
    """Under ``compile`` FORWARD/LOSS_COMPLETED see plain tensors; image, label, pred are MetaTensors again at
    MODEL_COMPLETED and the loss stays plain (MONAI 1.6.1's SupervisedTrainer._iteration)."""
    results = {}
    for which in MODULES:
        with pytest.warns(UserWarning, match="Will convert to PyTorch Tensor if using compile"):
            results[which] = _probe_trainer(which, compile=True, compile_kwargs={"backend": "eager"})
    got, ref = results["hotloop"], results["monai"]
    assert got["seen"] == ref["seen"]
    assert got["views"] == ref["views"]
    forward, loss, model = (dict(view) for _, view in got["views"][:3])
    assert forward["pred"] == forward["image"] == loss["loss"] == ("Tensor",)
    assert model["pred"][0] == model["image"][0] == model["label"][0] == "MetaTensor"  # per sample, decollated
    assert got["calls"] == ref["calls"]
    assert_same(got["outputs"], ref["outputs"])
    assert_same(got["weights"], ref["weights"])


def _gan_on_metatensors(mod: Any) -> tuple[list, list]:
    from monai.data import DataLoader, MetaTensor

    seen: list = []
    torch.manual_seed(2)
    g_net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh())
    d_net = _Discriminator()

    def d_loss(fakes: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
        seen.append(describe(reals))
        return (d_net(reals) - d_net(fakes.detach())).mean()

    samples = [{"reals": MetaTensor(torch.rand(16), meta={"filename_or_obj": f"r{i}"})} for i in range(4)]
    trainer = mod.GanTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(samples, batch_size=2),
        g_network=g_net,
        g_optimizer=torch.optim.SGD(g_net.parameters(), 1e-2),
        g_loss_function=lambda fakes: -d_net(fakes).mean(),
        d_network=d_net,
        d_optimizer=torch.optim.SGD(d_net.parameters(), 1e-2),
        d_loss_function=d_loss,
        latent_shape=4,
    )
    torch.manual_seed(5)
    trainer.run()
    return seen, [g_net.state_dict(), d_net.state_dict()]


def test_gan_trainer_passes_metatensor_reals_as_monai_does() -> None:
    ref_seen, ref_weights = _gan_on_metatensors(monai_engines)
    got_seen, got_weights = _gan_on_metatensors(hl_workflows)
    assert got_seen == ref_seen
    assert got_seen[0] == ("MetaTensor", True, "['r0', 'r1']", 2)
    assert_same(got_weights, ref_weights)
