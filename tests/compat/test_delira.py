"""hotloop.compat.delira: delira's PyTorchNetworkTrainer API on hotloop's Engine.

delira is not installed; the expected behaviour is the one its documentation (and its 0.3 source) describes.
"""

from __future__ import annotations

import gc
import logging
import os
import weakref

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hotloop import Engine, Events
from hotloop.compat.delira import (
    AbstractCallback,
    AbstractNetworkTrainer,
    InvalidCallbackError,
    PyTorchNetworkTrainer,
    PyTorchSchedulerCallback,
    create_optims_default_pytorch,
)

CE = {"CE": torch.nn.CrossEntropyLoss()}


def _batches(n_batches: int = 4, batch_size: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch_size, 4, generator=g)
        out.append({"data": x, "label": (x[:, 0] > 0).long()})
    return out


def _samples(n: int = 10, seed: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return [{"data": x[i], "label": (x[i, 0] > 0).long()} for i in range(n)]


def _accuracy(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(1) == label).float().mean()


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _trainer(path, **kwargs) -> PyTorchNetworkTrainer:
    args = {
        "network": _net(),
        "save_path": str(path),
        "criterions": CE,
        "optimizer_cls": torch.optim.SGD,
        "optimizer_params": {"lr": 0.1, "momentum": 0.9},
    }
    args.update(kwargs)
    return PyTorchNetworkTrainer(**args)


def _scripted(scores):
    """A metric that returns the next score on every call (one validation batch = one call per epoch)."""
    it = iter(scores)
    return lambda pred, label: torch.tensor(next(it))


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def _model_of(path) -> list[torch.Tensor]:
    return list(PyTorchNetworkTrainer.load_state(path)["model"].values())


class Recorder(AbstractCallback):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def at_epoch_begin(self, trainer, **kwargs):
        self.calls.append(("begin", trainer, dict(kwargs)))
        return {}

    def at_epoch_end(self, trainer, **kwargs):
        self.calls.append(("end", trainer, dict(kwargs)))
        return {}


# -- best model selection -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, scores, best_epoch",
    [
        ("highest", [0.2, 0.9, 0.5, 0.7], 2),
        ("lowest", [0.5, 0.3, 0.1, 0.4], 3),
        ("highest", [-3.0, -1.0, -2.0, -1.5], 2),  # never positive: delira (best starts at 0) would pick none
    ],
)
def test_train_returns_the_best_network(tmp_path, mode, scores, best_epoch):
    trainer = _trainer(tmp_path, metrics={"score": _scripted(scores)})
    best = trainer.train(len(scores), _batches(), _batches(1, seed=5), val_score_key="val_score", val_score_mode=mode)
    assert best is trainer.module
    assert PyTorchNetworkTrainer.load_state(tmp_path / "checkpoint_best.pth")["epoch"] == best_epoch
    _assert_same(_params(best), _model_of(tmp_path / f"checkpoint_epoch_{best_epoch}.pth"))
    last = _model_of(tmp_path / f"checkpoint_epoch_{len(scores)}.pth")
    assert any(not torch.equal(a, b) for a, b in zip(_params(best), last))


def test_a_loss_can_be_the_validation_score(tmp_path):
    trainer = _trainer(tmp_path, metrics={"acc": _accuracy})
    trainer.train(3, _batches(), _batches(2, seed=5), val_score_key="val_CE", val_score_mode="lowest")
    assert os.path.isfile(tmp_path / "checkpoint_best.pth")


def test_unknown_score_key_returns_the_last_network(tmp_path, caplog):
    trainer = _trainer(tmp_path, metrics={"acc": _accuracy})
    with caplog.at_level(logging.WARNING, logger="hotloop.compat.delira"):
        net = trainer.train(3, _batches(), _batches(1, seed=5), val_score_key="val_nope")
    assert not os.path.exists(tmp_path / "checkpoint_best.pth")
    _assert_same(_params(net), _model_of(tmp_path / "checkpoint_epoch_3.pth"))
    assert sum("val_nope" in r.getMessage() for r in caplog.records) == 1  # once per run, not per epoch


def test_a_stale_best_checkpoint_is_not_loaded(tmp_path):
    first = _trainer(tmp_path, metrics={"score": _scripted([1.0, 0.0])})
    first.train(2, _batches(), _batches(1, seed=5), val_score_key="val_score")
    second = _trainer(tmp_path)
    net = second.train(2, _batches())  # no validation: the best of the earlier run must not come back
    _assert_same(_params(net), _model_of(tmp_path / "checkpoint_epoch_2.pth"))


# -- checkpoints and resuming ---------------------------------------------------------------------------------------


def test_checkpoints_every_save_freq_epochs(tmp_path):
    trainer = _trainer(tmp_path, save_freq=2)
    trainer.train(5, _batches())
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint_epoch_0.pth",
        "checkpoint_epoch_2.pth",
        "checkpoint_epoch_4.pth",
    ]
    state = PyTorchNetworkTrainer.load_state(tmp_path / "checkpoint_epoch_2")  # ".pth" is appended
    assert set(state) == {"model", "optimizer", "epoch"}
    assert state["epoch"] == 2 and set(state["optimizer"]) == {"default"}


def test_resumed_trainer_continues_with_the_saved_state(tmp_path):
    data = _batches()
    full = _trainer(tmp_path / "full")
    full.train(4, data)
    saved = PyTorchNetworkTrainer.load_state(tmp_path / "full" / "checkpoint_epoch_2.pth")

    recorder = Recorder()
    resumed = _trainer(tmp_path / "resumed", network=_net(seed=1), callbacks=[recorder])
    assert resumed.update_state(tmp_path / "full" / "checkpoint_epoch_2.pth") is resumed
    assert resumed.start_epoch == 3
    _assert_same(_params(resumed.module), list(saved["model"].values()))
    ours = resumed.optimizers["default"].state_dict()
    assert ours["param_groups"] == saved["optimizer"]["default"]["param_groups"]
    for key, buf in saved["optimizer"]["default"]["state"].items():
        torch.testing.assert_close(ours["state"][key]["momentum_buffer"], buf["momentum_buffer"], rtol=0, atol=0)

    resumed.train(4, data)
    assert [(c[0], c[2]["curr_epoch"]) for c in recorder.calls] == [("begin", 3), ("end", 3), ("begin", 4), ("end", 4)]
    _assert_same(_params(resumed.module), _params(full.module))
    assert sorted(os.listdir(tmp_path / "resumed")) == [
        "checkpoint_epoch_2.pth",  # the state the run started from
        "checkpoint_epoch_3.pth",
        "checkpoint_epoch_4.pth",
    ]


def test_start_epoch_argument_and_finished_schedule(tmp_path):
    recorder = Recorder()
    trainer = _trainer(tmp_path, start_epoch=3, callbacks=[recorder])
    trainer.train(4, _batches())
    assert [c[2]["curr_epoch"] for c in recorder.calls] == [3, 3, 4, 4]
    recorder.calls.clear()
    trainer.start_epoch = 5
    trainer.train(4, _batches())  # nothing left to train: no epoch runs, the network comes back
    assert recorder.calls == []


# -- callbacks and hooks --------------------------------------------------------------------------------------------


def test_callbacks_receive_the_documented_arguments_in_order(tmp_path):
    first, second = Recorder(), Recorder()
    order: list[str] = []
    first.at_epoch_end = lambda trainer, **kw: order.append("first") or {}  # type: ignore[method-assign]
    second.at_epoch_end = lambda trainer, **kw: order.append("second") or {}  # type: ignore[method-assign]
    recorder = Recorder()
    trainer = _trainer(tmp_path, metrics={"score": _scripted([0.5, 0.25])}, callbacks=[recorder, first, second])
    trainer.train(2, _batches(), _batches(1, seed=5), val_score_key="val_score")
    assert order == ["first", "second", "first", "second"]
    kinds = [(c[0], c[2]["curr_epoch"]) for c in recorder.calls]
    assert kinds == [("begin", 1), ("end", 1), ("begin", 2), ("end", 2)]
    assert all(c[1] is trainer for c in recorder.calls)
    assert all(set(c[2]) == {"val_metrics", "val_score_key", "curr_epoch"} for c in recorder.calls)
    assert all(c[2]["val_score_key"] == "val_score" for c in recorder.calls)
    metrics = [c[2]["val_metrics"] for c in recorder.calls]
    assert metrics[0] == {}  # before the first validation
    assert metrics[1]["val_score"] == pytest.approx(0.5) and set(metrics[1]) == {"val_score", "val_CE"}
    assert metrics[2] == metrics[1]  # the next epoch begins with the last validation's metrics
    assert metrics[3]["val_score"] == pytest.approx(0.25)


def test_hooks_are_driven_by_engine_events_with_the_documented_arguments(tmp_path):
    calls: list[tuple] = []

    class Traced(PyTorchNetworkTrainer):
        def _at_training_begin(self, *args, **kwargs):
            calls.append(("training_begin", args, kwargs))
            return super()._at_training_begin(*args, **kwargs)

        def _at_epoch_begin(self, metrics_val, val_score_key, epoch, num_epochs, **kwargs):
            calls.append(("epoch_begin", dict(metrics_val), val_score_key, epoch, num_epochs))
            return super()._at_epoch_begin(metrics_val, val_score_key, epoch, num_epochs, **kwargs)

        def _at_epoch_end(self, metrics_val, val_score_key, epoch, is_best, **kwargs):
            calls.append(("epoch_end", sorted(metrics_val), val_score_key, epoch, is_best))
            return super()._at_epoch_end(metrics_val, val_score_key, epoch, is_best, **kwargs)

        def _at_training_end(self):
            calls.append(("training_end",))
            return super()._at_training_end()

    trainer = Traced(_net(), str(tmp_path), CE, torch.optim.SGD, {"lr": 0.1}, metrics={"s": _scripted([2.0, 1.0])})
    events: list[str] = []
    for event in (Events.STARTED, Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.COMPLETED):
        trainer.engine.add_event_handler(event, lambda e, name=event.name: events.append(name))
    assert isinstance(trainer.engine, Engine)
    trainer.train(2, _batches(), _batches(1, seed=5), val_score_key="val_s")
    assert calls == [
        ("training_begin", (), {}),
        ("epoch_begin", {}, "val_s", 1, 2),
        ("epoch_end", ["val_CE", "val_s"], "val_s", 1, True),
        ("epoch_begin", {"val_s": 2.0, "val_CE": pytest.approx(calls[3][1]["val_CE"])}, "val_s", 2, 2),
        ("epoch_end", ["val_CE", "val_s"], "val_s", 2, False),
        ("training_end",),
    ]
    # The trainer's own handlers run first, then the ones attached by the user.
    assert events == ["STARTED", "EPOCH_STARTED", "EPOCH_COMPLETED", "EPOCH_STARTED", "EPOCH_COMPLETED", "COMPLETED"]


def test_callback_results_update_the_trainer_and_stop_training(tmp_path):
    class StopAt(AbstractCallback):
        def at_epoch_end(self, trainer, **kwargs):
            return {"stop_training": kwargs["curr_epoch"] >= 2, "last_seen": kwargs["curr_epoch"], "__x__": 1}

    recorder = Recorder()
    trainer = _trainer(tmp_path, callbacks=[StopAt(), recorder])
    trainer.train(5, _batches())
    assert trainer.last_seen == 2
    assert not hasattr(trainer, "__x__")
    assert [c[2]["curr_epoch"] for c in recorder.calls if c[0] == "end"] == [1, 2]
    assert trainer.engine.state.epoch == 2


def test_invalid_callbacks_are_rejected(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(InvalidCallbackError, match="Must be instance of AbstractCallback"):
        trainer.register_callback(object())
    with pytest.raises(AssertionError):  # what delira's assert raised
        trainer.register_callback(type("HalfCallback", (), {"at_epoch_begin": lambda self, t, **k: {}})())
    with pytest.raises(TypeError):
        _trainer(tmp_path, callbacks=[lambda: None])

    class Duck:  # not a subclass, but has both methods: accepted, as in delira
        def at_epoch_begin(self, trainer, **kwargs):
            return {}

        def at_epoch_end(self, trainer, **kwargs):
            return {"duck": True}

    trainer.register_callback(Duck())
    trainer.train(1, _batches(1))
    assert trainer.duck is True


# -- predict --------------------------------------------------------------------------------------------------------


def test_predict_with_and_without_artificial_batch_size(tmp_path):
    trainer = _trainer(tmp_path, metrics={"acc": _accuracy})
    samples = _samples(10)
    x = torch.stack([s["data"] for s in samples])
    y = torch.stack([s["label"] for s in samples])
    with torch.no_grad():
        expected = trainer.module(x)
    sizes: list[int] = []
    trainer.module.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))

    preds, labels, metrics = trainer.predict(DataLoader(samples, batch_size=1), batch_size=4)
    assert sizes == [4, 4, 2]
    assert isinstance(preds, np.ndarray) and preds.shape == (10, 2)
    np.testing.assert_allclose(preds, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert len(labels) == 1 and np.array_equal(labels[0], y.numpy())
    assert set(metrics) == {"val_acc", "val_CE"} and all(isinstance(v, float) for v in metrics.values())
    assert metrics["val_acc"] == pytest.approx(_accuracy(expected, y).item())
    assert metrics["val_CE"] == pytest.approx(torch.nn.functional.cross_entropy(expected, y).item(), rel=1e-5)

    sizes.clear()
    preds2, labels2, metrics2 = trainer.predict(DataLoader(samples, batch_size=3))
    assert sizes == [3, 3, 3, 1]
    np.testing.assert_allclose(preds2, preds, rtol=1e-6, atol=1e-6)
    assert np.array_equal(labels2[0], labels[0])
    assert metrics2 == pytest.approx(metrics)  # means over samples do not depend on how batches are grouped


def test_predict_label_order_and_criterion_arguments(tmp_path):
    seen: list[tuple] = []

    def crit(pred, *labels):
        seen.append(tuple(t[0].item() for t in labels))
        return pred.sum() * 0

    trainer = _trainer(tmp_path, criterions={"c": crit})
    batches = [
        {"data": torch.randn(2, 4), "zeta": torch.tensor([1.0, 1.0]), "alpha": torch.tensor([2.0, 2.0]), "id": "x"}
    ]
    _, labels, metrics = trainer.predict(batches)
    assert seen == [(1.0, 2.0)]  # criterions get the labels in the batch's key order, non-arrays left out
    assert [lab[0] for lab in labels] == [2.0, 1.0]  # predict returns them in sorted key order, as delira did
    assert metrics == {"val_c": 0.0}
    preds, labels, metrics = trainer.predict([{"data": torch.randn(3, 4)}])  # no labels: predictions only
    assert preds.shape == (3, 2) and labels == [] and metrics == {}


def test_predict_accepts_numpy_batches_and_data_managers(tmp_path):
    class Manager:
        def __init__(self):
            self.seeds: list = []
            self.finished = 0

        def get_batchgen(self, seed=1):
            self.seeds.append(seed)
            manager = self

            class Gen:
                def __iter__(self):
                    g = np.random.default_rng(0)
                    for _ in range(2):
                        x = g.standard_normal((4, 4)).astype(np.float32)
                        yield {"data": x, "label": (x[:, 0] > 0).astype(np.int64)}

                def _finish(self):
                    manager.finished += 1

            return Gen()

    train_mgr, valid_mgr = Manager(), Manager()
    trainer = _trainer(tmp_path, metrics={"acc": _accuracy})
    trainer.train(3, train_mgr, valid_mgr, val_score_key="val_acc")
    assert train_mgr.seeds == [1, 2, 3]  # get_batchgen(seed=epoch), as delira's train loop
    assert train_mgr.finished == 3 and valid_mgr.finished == 3
    preds, labels, _ = trainer.predict(valid_mgr, batch_size=2)
    assert preds.shape == (8, 2) and labels[0].dtype == np.int64


def test_bad_batches_fail_clearly(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(TypeError, match="should be a dict with a 'data' entry"):
        trainer.train(1, [(torch.randn(2, 4), torch.zeros(2))])
    with pytest.raises(KeyError, match="'data' entry"):
        trainer.predict([{"image": torch.randn(2, 4)}])
    with pytest.raises(TypeError, match="datamgr_train should be a DataLoader"):
        trainer.train(1, 42)
    with pytest.raises(ValueError, match="batch_size should be an integer >= 1"):
        trainer.predict(_batches(1), batch_size=0)


# -- validation-score comparison and bad modes ----------------------------------------------------------------------


def test_is_better_val_scores_and_bad_mode(tmp_path):
    better = PyTorchNetworkTrainer._is_better_val_scores
    assert better(0.1, 0.2, "highest") and not better(0.2, 0.1, "highest")
    assert better(0.2, 0.1, "lowest") and not better(0.1, 0.2, "lowest")
    assert not better(0.2, 0.2, "highest") and not better(0.2, 0.2, "lowest")
    assert better(0.1, 0.2)  # default mode: highest
    with pytest.raises(ValueError, match="Invalid Mode: 'best'. Mode must be in \\['highest', 'lowest'\\]"):
        better(0.1, 0.2, "best")
    trainer = _trainer(tmp_path)
    with pytest.raises(ValueError, match="Invalid Mode"):
        trainer.train(2, _batches(), _batches(1), val_score_key="val_CE", val_score_mode="max")
    assert os.listdir(tmp_path) == []  # rejected before anything ran


# -- constructor checks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"network": "net"}, TypeError, "network should be a torch.nn.Module, got str"),
        ({"criterions": torch.nn.CrossEntropyLoss()}, TypeError, "criterions should be a dict"),
        ({"criterions": {}}, ValueError, "criterions should hold at least one loss"),
        ({"criterions": {"CE": 3}}, TypeError, r"not callable: \['CE'\]"),
        ({"metrics": {"acc": "accuracy"}}, TypeError, r"metrics should map names to callables"),
        ({"optimizer_cls": 0.1}, TypeError, "optimizer_cls should be an optimizer class"),
        ({"optimizer_params": [("lr", 0.1)]}, TypeError, "optimizer_params should be a dict"),
        ({"save_freq": 0}, ValueError, "save_freq should be an integer >= 1, got 0"),
        ({"save_freq": 1.5}, TypeError, "save_freq should be an integer"),
        ({"start_epoch": 0}, ValueError, "start_epoch should be an integer >= 1"),
        ({"gpu_ids": "0"}, TypeError, "gpu_ids should be a list of GPU indices"),
        ({"gpu_ids": [-1]}, ValueError, "every entry of gpu_ids should be an integer >= 0"),
        ({"gpu_ids": [0, 0]}, ValueError, "gpu_ids should not repeat a GPU"),
        ({"fold": "first"}, TypeError, "fold should be an integer, got 'first'"),
        ({"fold": True}, TypeError, "fold should be an integer"),
        ({"mixed_precision": "yes"}, TypeError, "mixed_precision should be True or False"),
        ({"mixed_precision_kwargs": {"opt_level": "O1"}}, ValueError, r"unknown keys \['opt_level'\]"),
        ({"lr_scheduler_cls": object()}, TypeError, "lr_scheduler_cls should be a class"),
        ({"optim_fn": lambda net, cls, **kw: cls(net.parameters(), **kw)}, TypeError, "non-empty dict of optim"),
        ({"optim_fn": lambda net, cls, **kw: {"a": 1}}, TypeError, r"not optimizers: \['a'\]"),
        ({"compile": "always"}, ValueError, "compile should be False, True, 'auto'"),
        ({"no_sync": 1}, TypeError, "no_sync should be True or False"),
        ({"module": None}, ValueError, r"would overwrite the trainer's own attributes"),
        ({"save_path": 3}, TypeError, "save_path should be a directory path"),
    ],
)
def test_bad_constructor_input_is_rejected(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        _trainer(tmp_path, **kwargs)


def test_optim_fn_needs_a_default_optimizer(tmp_path):
    def two(net, cls, **kw):
        return {"enc": cls(net[0].parameters(), **kw), "dec": cls(net[2].parameters(), **kw)}

    with pytest.raises(ValueError, match="without a 'default' one"):
        _trainer(tmp_path, optim_fn=two)


def test_save_path_is_created_and_must_be_a_directory(tmp_path):
    _trainer(tmp_path / "a" / "b")
    assert os.path.isdir(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        _trainer(tmp_path / "file")


def test_extra_keyword_arguments_become_attributes_and_fold_converts(tmp_path):
    trainer = _trainer(tmp_path, val_freq=3, fold="2")
    assert trainer.val_freq == 3 and trainer.fold == 2
    trainer.fold = 4
    assert trainer.fold == 4
    with pytest.raises(TypeError, match="fold should be an integer"):
        trainer.fold = 1.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of gpu_ids and mixed_precision")
def test_gpu_ids_and_mixed_precision_fall_back_to_the_cpu_with_warnings(tmp_path):
    with pytest.warns(UserWarning) as record:
        trainer = _trainer(tmp_path, gpu_ids=[0], mixed_precision=True)
    messages = " ".join(str(w.message) for w in record)
    assert "CUDA is not available" in messages and "mixed_precision=True has no effect on the CPU" in messages
    assert trainer.input_device == torch.device("cpu") and not trainer.use_gpu and trainer.scaler is None
    trainer.train(1, _batches(1))


# -- schedulers, options, abstract base -----------------------------------------------------------------------------


def test_lr_scheduler_class_is_stepped_every_epoch(tmp_path):
    trainer = _trainer(
        tmp_path,
        optimizer_params={"lr": 0.1},
        lr_scheduler_cls=torch.optim.lr_scheduler.StepLR,
        lr_scheduler_params={"step_size": 1, "gamma": 0.5},
    )
    assert isinstance(trainer._callbacks[-1], PyTorchSchedulerCallback)
    trainer.train(3, _batches(1))
    assert trainer.optimizers["default"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)

    resumed = _trainer(
        tmp_path / "r",
        optimizer_params={"lr": 0.1},
        lr_scheduler_cls=torch.optim.lr_scheduler.StepLR,
        lr_scheduler_params={"step_size": 2, "gamma": 0.5},
    )
    resumed.update_state(tmp_path / "checkpoint_epoch_2.pth")  # lr 0.025 after 2 epochs of step_size=1
    resumed.train(3, _batches(1))
    scheduler = resumed._callbacks[-1].scheduler
    assert scheduler.last_epoch == 3  # delira's step(epoch=curr_epoch): the count continues
    assert resumed.optimizers["default"].param_groups[0]["lr"] == pytest.approx(0.025)  # 3 % 2 != 0: no decay


def test_reduce_lr_on_plateau_gets_the_validation_score(tmp_path):
    stepped: list = []

    class Spy(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics, *args, **kwargs):
            stepped.append(metrics)
            return super().step(metrics, *args, **kwargs)

    trainer = _trainer(tmp_path, metrics={"score": _scripted([0.3, 0.6, 0.4])}, lr_scheduler_cls=Spy)
    trainer.train(3, _batches(1), _batches(1, seed=5), val_score_key="val_score")
    assert stepped == pytest.approx([0.3, 0.6, 0.4])

    stepped.clear()
    plain = _trainer(tmp_path / "p", lr_scheduler_cls=Spy)
    with pytest.warns(UserWarning, match="ReduceLROnPlateau is not stepped"):
        plain.train(2, _batches(1))
    assert stepped == []


def test_no_sync_keeps_the_loss_on_the_device(tmp_path):
    outputs: dict[str, object] = {}
    for no_sync in (False, True):
        trainer = _trainer(tmp_path / str(no_sync), no_sync=no_sync)
        trainer.engine.add_event_handler(
            Events.ITERATION_COMPLETED, lambda e, k=no_sync: outputs.__setitem__(k, e.state.output)
        )
        trainer.train(1, _batches(2))
    assert isinstance(outputs[False], float)
    assert isinstance(outputs[True], torch.Tensor) and not outputs[True].requires_grad
    assert outputs[True].item() == pytest.approx(outputs[False])


def test_compiled_step_trains_like_the_eager_one(tmp_path):
    eager = _trainer(tmp_path / "eager")
    eager.train(1, _batches(2))
    compiled = _trainer(tmp_path / "compiled", compile={"backend": "eager"})  # dynamo without inductor: fast
    compiled.train(1, _batches(2))
    assert compiled._train_step is not None and compiled.engine._process_function is compiled._train_step
    for a, b in zip(_params(eager.module), _params(compiled.module)):
        torch.testing.assert_close(a, b)


def test_train_single_epoch_and_default_optim_fn(tmp_path):
    net = _net()
    optims = create_optims_default_pytorch(net, torch.optim.Adam, lr=0.01)
    assert set(optims) == {"default"} and isinstance(optims["default"], torch.optim.Adam)
    trainer = _trainer(tmp_path)
    before = _params(trainer.module)
    trainer._train_single_epoch(_batches(2), 1)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(trainer.module)))

    class Custom(PyTorchNetworkTrainer):
        def _train_single_epoch(self, batchgen, epoch):
            pass

    custom = Custom(_net(), str(tmp_path / "c"), CE, torch.optim.SGD, {"lr": 0.1})
    with pytest.warns(UserWarning, match="_train_single_epoch is not called by train"):
        custom.train(1, _batches(1))


def test_abstract_trainer(tmp_path):
    trainer = AbstractNetworkTrainer(fold=1, callbacks=[Recorder()])
    assert trainer.fold == 1 and trainer.start_epoch == 1 and not trainer.stop_training
    for call in (
        lambda: trainer.train(1, []),
        lambda: trainer.predict([]),
        lambda: trainer.save_state("x"),
        lambda: AbstractNetworkTrainer.load_state("x"),
        lambda: trainer.update_state("x"),
        lambda: trainer._setup(),
        lambda: trainer._train_single_epoch([], 1),
        lambda: trainer._at_training_begin(),
        lambda: trainer._at_training_end(),
        lambda: trainer._at_epoch_begin(),
        lambda: trainer._at_epoch_end(),
    ):
        with pytest.raises(NotImplementedError):
            call()
    assert trainer._update_state({"a": 1, "__b__": 2}) is trainer
    assert trainer.a == 1 and not hasattr(trainer, "__b__")


def test_trainer_is_freed_without_garbage_collection(tmp_path):
    gc.disable()
    try:
        trainer = _trainer(tmp_path)
        trainer.train(1, _batches(1))
        ref = weakref.ref(trainer)
        del trainer
        assert ref() is None  # a cycle would keep it until the collector runs; the engine holds it weakly
    finally:
        gc.enable()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision and gpu_ids need a CUDA device")
def test_mixed_precision_on_the_gpu(tmp_path):
    trainer = _trainer(tmp_path, gpu_ids=[0], mixed_precision=True, mixed_precision_kwargs={"init_scale": 1024.0})
    assert trainer.use_gpu and trainer.scaler is not None and trainer.scaler.get_scale() == 1024.0
    trainer.train(2, _batches(), _batches(1, seed=5), val_score_key="val_CE", val_score_mode="lowest")
    state = PyTorchNetworkTrainer.load_state(tmp_path / "checkpoint_epoch_2.pth")
    assert "scaler" in state
    preds, labels, metrics = trainer.predict(_batches(2, seed=5), batch_size=2)
    assert preds.shape == (16, 2) and np.isfinite(metrics["val_CE"])


def test_a_delira_style_closure_is_reported_as_unused(tmp_path):
    class DeliraNet(torch.nn.Linear):
        @staticmethod
        def closure(model, data_dict, optimizers, criterions=None, metrics=None, fold=0, **kwargs):
            raise AssertionError("not called")

    with pytest.warns(UserWarning, match="the network's closure is not used"):
        trainer = _trainer(tmp_path, network=DeliraNet(4, 2))
    trainer.train(1, _batches(1))


_SYNC_METHODS = ["item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"]


def test_no_host_sync_inside_training_and_prediction_epochs(tmp_path, monkeypatch):
    """Sentinels on the tensor methods that read back to the host, armed for the iterations of both engines."""
    calls: list[str] = []
    originals = {m: getattr(torch.Tensor, m) for m in _SYNC_METHODS}

    def sentinel(name):
        def f(self, *args, **kwargs):
            calls.append(name)
            return originals[name](self, *args, **kwargs)

        return f

    def arm(_):
        for m in _SYNC_METHODS:
            monkeypatch.setattr(torch.Tensor, m, sentinel(m))

    def disarm(_):
        monkeypatch.undo()

    trainer = _trainer(tmp_path, metrics={"acc": _accuracy}, no_sync=True, save_freq=100)
    for engine in (trainer.engine, trainer.eval_engine):
        engine.add_event_handler(Events.EPOCH_STARTED, arm)
        engine.add_event_handler(Events.ITERATION_COMPLETED, disarm)  # runs after the trainer's own handlers
        engine.add_event_handler(Events.ITERATION_STARTED, arm)
    trainer.train(2, _batches(3))
    _, _, metrics = trainer.predict(_batches(3, seed=5), batch_size=2)
    monkeypatch.undo()
    assert calls == [] and set(metrics) == {"val_acc", "val_CE"}

    syncing = _trainer(tmp_path / "sync", save_freq=100)  # the default output is loss.item(), as in Ignite
    syncing.engine.add_event_handler(Events.ITERATION_STARTED, arm)
    syncing.engine.add_event_handler(Events.ITERATION_COMPLETED, disarm)
    syncing.train(1, _batches(1))
    assert "item" in calls


def test_signatures_match_delira():
    import inspect

    params = inspect.signature(PyTorchNetworkTrainer).parameters
    delira_order = [
        "network", "save_path", "criterions", "optimizer_cls", "optimizer_params", "metrics", "lr_scheduler_cls",
        "lr_scheduler_params", "gpu_ids", "save_freq", "optim_fn", "fold", "callbacks", "start_epoch",
        "mixed_precision", "mixed_precision_kwargs",
    ]  # fmt: skip
    assert list(params)[: len(delira_order)] == delira_order
    defaults = {k: params[k].default for k in delira_order if params[k].default is not inspect.Parameter.empty}
    assert defaults["optimizer_params"] == {} and defaults["metrics"] == {} and defaults["lr_scheduler_params"] == {}
    assert list(defaults["gpu_ids"]) == [] and list(defaults["callbacks"]) == []
    assert defaults["optim_fn"] is create_optims_default_pytorch
    assert (defaults["lr_scheduler_cls"], defaults["save_freq"], defaults["fold"]) == (None, 1, 0)
    assert (defaults["start_epoch"], defaults["mixed_precision"]) == (1, False)
    assert defaults["mixed_precision_kwargs"] == {"allow_banned": False, "enable_caching": True, "verbose": False}
    hotloop_only = ["compile", "cuda_graphs", "no_sync", "prefetch", "max_compiled_shapes"]
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in hotloop_only)
    assert list(params)[-1] == "kwargs"

    def names(fn):
        return list(inspect.signature(fn).parameters)

    assert names(PyTorchNetworkTrainer.train) == [
        "self", "num_epochs", "datamgr_train", "datamgr_valid", "val_score_key", "val_score_mode",
    ]  # fmt: skip
    assert names(PyTorchNetworkTrainer.predict) == ["self", "batchgen", "batch_size"]
    assert names(AbstractNetworkTrainer.predict) == ["self", "batchgen", "batchsize"]
    assert names(PyTorchNetworkTrainer.save_state) == ["self", "file_name", "epoch", "kwargs"]
    assert names(PyTorchNetworkTrainer.load_state) == ["file_name", "kwargs"]
    assert names(PyTorchNetworkTrainer._at_epoch_begin) == [
        "self", "metrics_val", "val_score_key", "epoch", "num_epochs", "kwargs",
    ]  # fmt: skip
    assert names(PyTorchNetworkTrainer._at_epoch_end) == [
        "self",
        "metrics_val",
        "val_score_key",
        "epoch",
        "is_best",
        "kwargs",
    ]
    assert names(PyTorchNetworkTrainer._at_training_end) == ["self"]
    assert names(AbstractNetworkTrainer) == ["fold", "callbacks"]
