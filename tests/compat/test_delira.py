"""hotloop.compat.delira: delira's PyTorchNetworkTrainer API on hotloop's Engine.

delira is not installable here (its dependencies are too old); the expected behaviour is the one its documentation
(/work/shared/reference, the NetworkTrainer API) and its 0.3 source (``delira/training/pytorch_trainer.py``,
``abstract_trainer.py``, ``delira/io/torch.py``, ``delira/utils/context_managers.py``) describe. Each test that
matches a piece of that source says which behaviour it is.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
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
    DefaultOptimWrapperTorch,
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
    [("highest", [0.2, 0.9, 0.5, 0.7], 2), ("lowest", [0.5, 0.3, 0.1, 0.4], 3)],
)
def test_train_returns_the_best_network(tmp_path, mode, scores, best_epoch):
    trainer = _trainer(tmp_path, metrics={"score": _scripted(scores)})
    best = trainer.train(len(scores), _batches(), _batches(1, seed=5), val_score_key="val_score", val_score_mode=mode)
    assert best is trainer.module
    assert PyTorchNetworkTrainer.load_state(tmp_path / "checkpoint_best.pth")["epoch"] == best_epoch
    _assert_same(_params(best), _model_of(tmp_path / f"checkpoint_epoch_{best_epoch}.pth"))
    last = _model_of(tmp_path / f"checkpoint_epoch_{len(scores)}.pth")
    assert any(not torch.equal(a, b) for a, b in zip(_params(best), last))


def test_highest_mode_starts_at_zero_as_in_delira(tmp_path):
    """delira's train(): ``best_val_score = 0`` in "highest" mode, so a score that is never positive is never best."""
    trainer = _trainer(tmp_path, metrics={"score": _scripted([-3.0, -1.0, -2.0])})
    net = trainer.train(3, _batches(), _batches(1, seed=5), val_score_key="val_score")
    assert not os.path.exists(tmp_path / "checkpoint_best.pth")
    _assert_same(_params(net), _model_of(tmp_path / "checkpoint_epoch_3.pth"))


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
    message = "Validation score key not in metric dict. Logging metrics but can't decide which model is best"
    assert [r.getMessage() for r in caplog.records].count(message) == 3  # delira: every epoch


def test_a_new_trainer_resumes_from_save_path_and_returns_its_best(tmp_path):
    """delira 0.3's _setup loads the latest ``checkpoint_epoch_N.pth`` of ``save_path`` (start_epoch = N), and
    _at_training_end loads ``checkpoint_best.pth`` whenever the file exists, whichever run wrote it."""
    first = _trainer(tmp_path, metrics={"score": _scripted([1.0, 0.5])})
    first.train(2, _batches(), _batches(1, seed=5), val_score_key="val_score")
    epoch_1, epoch_2 = _model_of(tmp_path / "checkpoint_epoch_1.pth"), _model_of(tmp_path / "checkpoint_epoch_2.pth")
    recorder = Recorder()
    second = _trainer(tmp_path, network=_net(seed=7), callbacks=[recorder])
    assert second.start_epoch == 2
    _assert_same(_params(second.module), epoch_2)  # resumed from the latest epoch checkpoint
    net = second.train(2, _batches())  # epoch 2 again, then the best checkpoint of the first run comes back
    assert [c[2]["curr_epoch"] for c in recorder.calls] == [2, 2]
    _assert_same(_params(net), epoch_1)
    assert second.start_epoch == 1  # the best checkpoint's epoch


# -- checkpoints and resuming ---------------------------------------------------------------------------------------


def test_checkpoints_every_save_freq_epochs(tmp_path):
    trainer = _trainer(tmp_path, save_freq=2)
    trainer.train(5, _batches())
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint_epoch_0.pth",
        "checkpoint_epoch_2.pth",
        "checkpoint_epoch_4.pth",
    ]
    state = PyTorchNetworkTrainer.load_state(tmp_path / "checkpoint_epoch_2.pth")
    assert set(state) == {"model", "optimizer", "epoch"}
    assert state["epoch"] == 2 and set(state["optimizer"]) == {"default"}
    assert PyTorchNetworkTrainer.load_state(tmp_path / "checkpoint_epoch_0.pth")["epoch"] == 1  # start_epoch
    trainer.save_state(tmp_path / "named", 7)  # the file name as given, as delira's save_checkpoint
    assert PyTorchNetworkTrainer.load_state(tmp_path / "named")["epoch"] == 7
    torch.save({"state_dict": {"x": 1}}, tmp_path / "other.pt")  # delira's load_checkpoint: else its "state_dict"
    assert PyTorchNetworkTrainer.load_state(tmp_path / "other.pt") == {"x": 1}


def test_resumed_trainer_retrains_the_saved_epoch_as_delira_does(tmp_path):
    """delira's _update_state sets ``start_epoch = state["epoch"]``: a run resumed from ``checkpoint_epoch_2.pth``
    trains epoch 2 again. With the same batches every epoch, 4 epochs resumed from epoch 2 equal 5 straight ones."""
    data = _batches()
    full = _trainer(tmp_path / "full")
    full.train(4, data)
    longer = _trainer(tmp_path / "longer")
    longer.train(5, data)
    saved = PyTorchNetworkTrainer.load_state(tmp_path / "full" / "checkpoint_epoch_2.pth")

    recorder = Recorder()
    resumed = _trainer(tmp_path / "resumed", network=_net(seed=1), callbacks=[recorder])
    assert resumed.update_state(tmp_path / "full" / "checkpoint_epoch_2.pth") is resumed
    assert resumed.start_epoch == 2
    _assert_same(_params(resumed.module), list(saved["model"].values()))
    ours = resumed.optimizers["default"].state_dict()
    assert ours["param_groups"] == saved["optimizer"]["default"]["param_groups"]
    for key, buf in saved["optimizer"]["default"]["state"].items():
        torch.testing.assert_close(ours["state"][key]["momentum_buffer"], buf["momentum_buffer"], rtol=0, atol=0)

    resumed.train(4, data)
    assert [(c[0], c[2]["curr_epoch"]) for c in recorder.calls] == [
        ("begin", 2), ("end", 2), ("begin", 3), ("end", 3), ("begin", 4), ("end", 4)
    ]  # fmt: skip
    _assert_same(_params(resumed.module), _params(longer.module))
    assert sorted(os.listdir(tmp_path / "resumed")) == [
        "checkpoint_epoch_0.pth",  # the state the run started from, with epoch=start_epoch
        "checkpoint_epoch_2.pth",
        "checkpoint_epoch_3.pth",
        "checkpoint_epoch_4.pth",
    ]
    assert PyTorchNetworkTrainer.load_state(tmp_path / "resumed" / "checkpoint_epoch_0.pth")["epoch"] == 2


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


def _pass_means(fn, outputs: list[torch.Tensor], labels: list[torch.Tensor]) -> torch.Tensor:
    """delira's predict: the metric summed over the forward passes, divided by their number."""
    return sum(fn(o, y) for o, y in zip(outputs, labels)) / len(outputs)


def test_predict_with_and_without_artificial_batch_size(tmp_path):
    trainer = _trainer(tmp_path, metrics={"acc": _accuracy})
    samples = _samples(10)
    x = torch.stack([s["data"] for s in samples])
    y = torch.stack([s["label"] for s in samples])
    with torch.no_grad():
        expected = trainer.module(x)
    sizes: list[int] = []
    trainer.module.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    ce = torch.nn.functional.cross_entropy

    preds, labels, metrics = trainer.predict(DataLoader(samples, batch_size=1), batch_size=4)
    assert sizes == [4, 4, 2]
    assert isinstance(preds, list) and len(preds) == 1  # one array per network output, as delira returns them
    assert isinstance(preds[0], np.ndarray) and preds[0].shape == (10, 2)
    np.testing.assert_allclose(preds[0], expected.numpy(), rtol=1e-6, atol=1e-6)
    assert len(labels) == 1 and np.array_equal(labels[0], y.numpy())
    assert set(metrics) == {"val_acc", "val_CE"} and all(isinstance(v, torch.Tensor) for v in metrics.values())
    groups = [slice(0, 4), slice(4, 8), slice(8, 10)]
    outs, ys = [expected[g] for g in groups], [y[g] for g in groups]
    torch.testing.assert_close(metrics["val_acc"], _pass_means(_accuracy, outs, ys))
    torch.testing.assert_close(metrics["val_CE"], _pass_means(ce, outs, ys), rtol=1e-5, atol=1e-6)

    sizes.clear()
    preds2, labels2, metrics2 = trainer.predict(DataLoader(samples, batch_size=3))
    assert sizes == [3, 3, 3, 1]
    np.testing.assert_allclose(preds2[0], preds[0], rtol=1e-6, atol=1e-6)
    assert np.array_equal(labels2[0], labels[0])
    groups = [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    outs, ys = [expected[g] for g in groups], [y[g] for g in groups]
    torch.testing.assert_close(metrics2["val_acc"], _pass_means(_accuracy, outs, ys))
    assert trainer.predict([]) == ([], [], {})


def test_predict_label_order_and_criterion_arguments(tmp_path):
    seen: list[tuple] = []

    def crit(pred, *labels):
        seen.append(tuple(t[0].item() for t in labels))
        return pred.sum() * 0

    trainer = _trainer(tmp_path, criterions={"c": crit})
    batches = [
        {
            "data": torch.randn(2, 4),
            "zeta": torch.tensor([1.0, 1.0]),
            "alpha": torch.tensor([2.0, 2.0]),
            "img_extra": torch.tensor([3.0, 3.0]),
            "id": "x",
        }
    ]
    _, labels, metrics = trainer.predict(batches)
    assert seen == [(1.0, 2.0, 3.0)]  # criterions get the labels in the batch's key order, non-arrays left out
    # predict returns the entries whose key holds neither "data" nor "img", in sorted key order, as delira did
    assert [lab[0] for lab in labels] == [2.0, 1.0]
    assert metrics == {"val_c": 0.0}
    preds, labels, metrics = trainer.predict([{"data": torch.randn(3, 4)}])  # no labels: predictions only
    assert preds[0].shape == (3, 2) and labels == [] and metrics == {}


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
    assert preds[0].shape == (8, 2) and labels[0].dtype == np.int64
    assert valid_mgr.finished == 4


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
        ({"compile": "always"}, ValueError, "compile should be False, True, 'auto', one of the pinned builds"),
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
    messages = [str(w.message) for w in record]  # gpu_ids without CUDA: the CPU without a word, as in delira
    assert messages == ["hotloop: mixed_precision=True has no effect on the CPU; training in full precision"]
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
    resumed.train(3, _batches(1))  # epochs 2 (again, start_epoch = the saved epoch) and 3
    scheduler = resumed._callbacks[-1].scheduler
    assert scheduler.last_epoch == 3  # delira's step(epoch=curr_epoch): the count continues
    assert resumed.optimizers["default"].param_groups[0]["lr"] == pytest.approx(0.0125)  # 2 % 2 == 0; 3 % 2 != 0


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


def test_auto_measures_hotloops_step_and_exposes_the_choice_on_the_engines(tmp_path, step_clock):
    eager = _trainer(tmp_path / "eager")
    eager.train(12, _batches(4))
    measured = _trainer(tmp_path / "auto", compile="auto", save_freq=100)
    clock = step_clock(eager=2, fused=1)
    clock.step = measured._train_step.step
    measured.train(12, _batches(4))
    choice = measured.engine.step_choice
    assert choice.variant == "fused" and list(choice.times_ms) == ["fused", "eager"] and choice.iterations == 22
    assert measured.eval_engine.step_choice.requested == "auto"
    for a, b in zip(_params(eager.module), _params(measured.module)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # the fused optimizer's float tolerance


def test_on_nonfinite_skip_undoes_the_bad_step_of_hotloops_step(tmp_path):
    batches = _batches(4)
    bad = [dict(b) for b in batches]
    bad[2]["data"] = torch.full_like(bad[2]["data"], float("nan"))
    ref = _trainer(tmp_path / "ref")
    ref.train(1, [b for i, b in enumerate(batches) if i != 2])
    guarded = _trainer(tmp_path / "guarded", on_nonfinite="skip")
    with pytest.warns(UserWarning, match=r"skipped 1 step\(s\) for 1 non-finite loss"):
        guarded.train(1, bad)
    _assert_same(_params(guarded.module), _params(ref.module))
    with pytest.raises(TypeError, match="on_nonfinite should be None, 'terminate', 'skip', 'raise'"):
        _trainer(tmp_path / "bad", on_nonfinite=1)


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


@pytest.mark.parametrize("closure", [False, True])
def test_trainer_is_freed_without_garbage_collection(tmp_path, closure):
    gc.disable()
    try:
        if closure:
            trainer = _experiment_trainer(tmp_path, [], stop_at=5)
            trainer.train(1, _DataManager(8, 4, True, 0), _DataManager(4, 2, False, 1))
        else:
            trainer = _trainer(tmp_path)
            trainer.train(1, _batches(1))
        ref = weakref.ref(trainer)
        del trainer
        assert ref() is None  # a cycle would keep it until the collector runs; the engine holds it weakly
    finally:
        gc.enable()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision and gpu_ids need a CUDA device")
def test_mixed_precision_on_the_gpu(tmp_path):
    trainer = _trainer(tmp_path, gpu_ids=[0], mixed_precision=True, mixed_precision_kwargs={"init_scale": 1024.0})
    assert trainer.use_gpu and trainer.scaler is not None and trainer.scaler.get_scale() == 1024.0
    trainer.train(2, _batches(), _batches(1, seed=5), val_score_key="val_CE", val_score_mode="lowest")
    state = PyTorchNetworkTrainer.load_state(tmp_path / "checkpoint_epoch_2.pth")
    assert "scaler" in state
    preds, labels, metrics = trainer.predict(_batches(2, seed=5), batch_size=2)
    assert preds[0].shape == (16, 2) and torch.isfinite(metrics["val_CE"])

    # a delira network: its closure runs under autocast, scale_loss / step go through the GradScaler
    closure = _experiment_trainer(tmp_path / "closure", [], stop_at=5, gpu_ids=[0], mixed_precision=True)
    assert all(o._scaler is closure.scaler for o in closure.optimizers.values())
    closure.train(2, _DataManager(24, 5, True, 0), _DataManager(10, 3, False, 1), val_score_key="val_CE")
    preds, labels, metrics = closure.predict(_DataManager(10, 3, False, 1).get_batchgen(), batch_size=2)
    assert preds[0].shape == (10, 2) and torch.isfinite(metrics["val_CE"]) and metrics["val_CE"].is_cuda


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


# -- a delira experiment, end to end --------------------------------------------------------------------------------
#
# The program below is what a delira 0.3 user runs (``PyTorchExperiment`` builds a ``PyTorchNetworkTrainer`` and calls
# ``train``, then ``predict``): float64 NumPy batches from a data manager's batch generators, a network with delira's
# ``prepare_batch`` (the cast to float32 / int64 tensors on the devices) and ``closure`` (the step), callbacks, a
# ``val_score_key`` and checkpoints. It runs on hotloop's trainer and on ``_reference_run``, a plain loop written from
# delira 0.3's ``delira/training/pytorch_trainer.py``; the two must agree on every observable. The delira behaviour
# matched, step by step:
#
# - ``_setup``: ``optimizers = {k: DefaultOptimWrapperTorch(opt)}`` (apex absent: ``scale_loss`` yields the loss);
#   ``closure_fn = network.closure`` and ``_prepare_batch = network.prepare_batch``; the latest
#   ``checkpoint_epoch_N.pth`` of ``save_path`` (files starting with "checkpoint", not ending with "_best.pth") is
#   loaded, and ``_update_state`` sets ``start_epoch = N``.
# - ``train``: ``_at_training_begin()``; ``module.train()``; best score ``0`` ("highest") or ``inf`` ("lowest");
#   ``save_state("checkpoint_epoch_0.pth", start_epoch)``; then for each epoch from ``start_epoch`` to ``num_epochs``:
#   the callbacks' ``at_epoch_begin(trainer, val_metrics=<last validation>, val_score_key=..., curr_epoch=epoch)``;
#   ``get_batchgen(seed=epoch)``; ``module.train()``; for every ``(batch_nr, batch)``:
#   ``closure_fn(module, prepare_batch(batch, input_device, output_device), optimizers=..., criterions=...,
#   metrics=..., fold=..., batch_nr=batch_nr)``; ``batchgen._finish()``. Validation: the valid manager's batch size
#   set to 1 and ``n_process_augmentation`` to 1, ``predict(get_batchgen(), batch_size=<its batch size>)``, both reset;
#   ``is_best`` when ``val_score_key`` is a metric and better than the best so far. The callbacks' ``at_epoch_end``
#   (their dicts update the trainer); ``checkpoint_epoch_{epoch}.pth`` every ``save_freq`` epochs,
#   ``checkpoint_best.pth`` when best; stop when ``stop_training``. ``_at_training_end`` loads ``checkpoint_best.pth``
#   if it exists and returns the module.
# - ``predict(batchgen, batch_size)``: ``module.eval()``; every batch through ``prepare_batch``; groups of
#   ``batch_size`` concatenated key by key (``torch.cat``, the last group smaller); ``closure_fn(module, batch_dict,
#   optimizers={}, ...)`` returns ``(metric_vals, loss_vals, preds)``; the detached values summed; ``preds`` and the
#   batch entries whose key holds neither "data" nor "img" (sorted) turned into NumPy and stacked along dim 0;
#   ``batchgen._finish()``; returns ``([one array per output], [one array per label], {name: sum / passes})``.


class _BatchGen:
    """A batchgenerators-style generator: fresh float64 NumPy batch dicts, and ``_finish()`` to end its workers."""

    def __init__(self, batches: list[dict], log: list) -> None:
        self.batches = batches
        self.log = log

    def __iter__(self):
        for batch in self.batches:
            yield {k: v.copy() for k, v in batch.items()}

    def _finish(self) -> None:
        self.log.append("finish")


class _DataManager:
    """delira's ``BaseDataManager`` as the trainer uses it: ``batch_size``, ``n_process_augmentation`` and
    ``get_batchgen(seed)`` (shuffled by the seed when ``shuffle``)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int) -> None:
        rng = np.random.RandomState(seed)
        self.x = rng.standard_normal((n, 4))  # float64, as delira's datasets give it
        self.y = (self.x[:, :1] + 0.3 * self.x[:, 1:2] > 0).astype(np.float64)  # [n, 1] float64 labels
        self.batch_size, self.n_process_augmentation, self.shuffle = batch_size, 4, shuffle
        self.requests: list[tuple] = []
        self.log: list = []

    def get_batchgen(self, seed: int = 1) -> _BatchGen:
        self.requests.append((seed, self.batch_size, self.n_process_augmentation))
        order = np.random.RandomState(seed).permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return _BatchGen([{"data": self.x[c], "label": self.y[c]} for c in chunks], self.log)


_PREPARED: list[tuple] = []  # (data dtype, label dtype) of every prepare_batch call


class _DeliraNet(torch.nn.Module):
    """A network written for delira 0.3 (``AbstractPyTorchNetwork``, ``ClassificationNetworkBasePyTorch``'s
    conventions): ``prepare_batch`` and ``closure`` are static methods that the trainer calls."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def prepare_batch(batch: dict, input_device, output_device) -> dict:
        out = {"data": torch.from_numpy(batch.pop("data")).to(input_device).to(torch.float)}
        for key, vals in batch.items():
            out[key] = torch.from_numpy(vals).to(output_device).squeeze(-1).to(torch.long)
        _PREPARED.append((str(batch.get("label", np.empty(0)).dtype), str(out["data"].dtype)))
        return out

    @staticmethod
    def closure(model, data_dict: dict, optimizers: dict, criterions=None, metrics=None, fold=0, **kwargs):
        criterions, metrics = criterions or {}, metrics or {}
        loss_vals, metric_vals, total_loss = {}, {}, 0
        with torch.enable_grad() if optimizers else torch.no_grad():
            inputs = data_dict.pop("data")
            preds = model(inputs)
            for key, crit_fn in criterions.items():
                loss = crit_fn(preds, *data_dict.values())
                loss_vals[key] = loss.detach()
                total_loss += loss
            with torch.no_grad():
                for key, metric_fn in metrics.items():
                    metric_vals[key] = metric_fn(preds, *data_dict.values())
        if optimizers:
            optimizers["default"].zero_grad()
            with optimizers["default"].scale_loss(total_loss) as scaled_loss:
                scaled_loss.backward()
            optimizers["default"].step()
        else:
            loss_vals = {f"val_{k}": v for k, v in loss_vals.items()}
            metric_vals = {f"val_{k}": v for k, v in metric_vals.items()}
        return metric_vals, loss_vals, [preds]


class _StopAfter(AbstractCallback):
    def __init__(self, epoch: int, calls: list) -> None:
        super().__init__()
        self.epoch, self.calls = epoch, calls

    def at_epoch_begin(self, trainer, **kwargs):
        self.calls.append(("begin", kwargs["curr_epoch"], kwargs["val_score_key"], _floats(kwargs["val_metrics"])))
        return {}

    def at_epoch_end(self, trainer, **kwargs):
        self.calls.append(("end", kwargs["curr_epoch"], kwargs["val_score_key"], _floats(kwargs["val_metrics"])))
        return {"stop_training": kwargs["curr_epoch"] >= self.epoch}


def _floats(metrics: dict) -> dict:
    return {k: round(float(v), 6) for k, v in metrics.items()}


class _RefOptim:
    """delira's ``DefaultOptimWrapperTorch`` without apex, for the reference loop."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    @contextlib.contextmanager
    def scale_loss(self, loss):
        yield loss

    def step(self) -> None:
        self.optimizer.step()


def _reference_predict(net, batchgen, batch_size, metrics) -> tuple:
    net.eval()
    prepared = [_DeliraNet.prepare_batch(b, "cpu", "cpu") for b in batchgen]
    groups = [prepared[i : i + batch_size] for i in range(0, len(prepared), batch_size)]
    outputs, labels, sums = [], [], {}
    for group in groups:
        batch = {k: torch.cat([b[k] for b in group]) for k in group[0]}
        met, loss, preds = _DeliraNet.closure(net, batch, optimizers={}, criterions=CE, metrics=metrics, fold=0)
        for key, value in {**met, **loss}.items():
            sums[key] = sums[key] + value.detach() if key in sums else value.detach()
        outputs.append([p.numpy() for p in preds])
        labels.append([batch[k].numpy() for k in sorted(batch) if "data" not in k and "img" not in k])
    batchgen._finish()
    stacked = ([np.concatenate(o) for o in zip(*outputs)], [np.concatenate(lab) for lab in zip(*labels)])
    return stacked[0], stacked[1], {k: v / len(groups) for k, v in sums.items()}


def _reference_run(train_mgr, valid_mgr, num_epochs, stop_at, metrics) -> dict:
    """delira 0.3's train() for this program (the steps listed above), in a plain loop."""
    net = _DeliraNet()
    optimizers = {"default": _RefOptim(torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.5))}
    calls: list = []
    callback = _StopAfter(stop_at, calls)
    files = {"checkpoint_epoch_0.pth": 1}
    best, best_state, metrics_val = math.inf, None, {}
    for epoch in range(1, num_epochs + 1):
        callback.at_epoch_begin(None, val_metrics=metrics_val, val_score_key="val_CE", curr_epoch=epoch)
        net.train()
        batchgen = train_mgr.get_batchgen(seed=epoch)
        for batch_nr, batch in enumerate(batchgen):
            data = _DeliraNet.prepare_batch(batch, "cpu", "cpu")
            _DeliraNet.closure(net, data, optimizers, criterions=CE, metrics=metrics, fold=0, batch_nr=batch_nr)
        batchgen._finish()
        size = valid_mgr.batch_size
        valid_mgr.batch_size, valid_mgr.n_process_augmentation = 1, 1
        _, _, metrics_val = _reference_predict(net, valid_mgr.get_batchgen(), size, metrics)
        valid_mgr.batch_size, valid_mgr.n_process_augmentation = size, 4
        is_best = metrics_val["val_CE"] < best
        if is_best:
            best, best_state = metrics_val["val_CE"], {k: v.clone() for k, v in net.state_dict().items()}
            files["checkpoint_best.pth"] = epoch
        stop = callback.at_epoch_end(None, val_metrics=metrics_val, val_score_key="val_CE", curr_epoch=epoch)
        files[f"checkpoint_epoch_{epoch}.pth"] = epoch
        if stop["stop_training"]:
            break
    last = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)  # _at_training_end: the best checkpoint
    return {"calls": calls, "files": files, "last": last, "net": net}


def _experiment_trainer(save_path, calls: list, stop_at: int, **kwargs) -> PyTorchNetworkTrainer:
    return PyTorchNetworkTrainer(
        network=_DeliraNet(),
        save_path=str(save_path),
        criterions=CE,
        optimizer_cls=torch.optim.SGD,
        optimizer_params={"lr": 0.2, "momentum": 0.5},
        metrics={"acc": _accuracy},
        callbacks=[_StopAfter(stop_at, calls)],
        **kwargs,
    )


def test_a_delira_experiment_runs_as_on_delira(tmp_path):
    _PREPARED.clear()
    ref_train, ref_valid = _DataManager(24, 5, True, 0), _DataManager(10, 3, False, 1)
    ref = _reference_run(ref_train, ref_valid, 4, 3, {"acc": _accuracy})
    ref_prepared = len(_PREPARED)
    _PREPARED.clear()

    train_mgr, valid_mgr = _DataManager(24, 5, True, 0), _DataManager(10, 3, False, 1)
    calls: list = []
    trainer = _experiment_trainer(tmp_path, calls, stop_at=3)
    assert all(isinstance(o, DefaultOptimWrapperTorch) for o in trainer.optimizers.values())
    best = trainer.train(4, train_mgr, valid_mgr, val_score_key="val_CE", val_score_mode="lowest")

    assert calls == ref["calls"]  # callbacks: epochs, score key, validation metrics (delira's "val_" names)
    assert calls[-1][:2] == ("end", 3)  # the callback stopped training after epoch 3
    assert len(_PREPARED) == ref_prepared and set(_PREPARED) == {("float64", "torch.float32")}  # every batch
    assert train_mgr.requests == ref_train.requests and valid_mgr.requests == ref_valid.requests
    assert train_mgr.log == ref_train.log and valid_mgr.log == ref_valid.log  # every batch generator finished
    files = {name: PyTorchNetworkTrainer.load_state(tmp_path / name)["epoch"] for name in os.listdir(tmp_path)}
    assert files == ref["files"]
    _assert_same(_model_of(tmp_path / "checkpoint_epoch_3.pth"), list(ref["last"].values()))
    assert best is trainer.module
    _assert_same(_params(best), _params(ref["net"]))  # the best checkpoint, loaded back

    # predict: delira's types and values
    ref_preds, ref_labels, ref_metrics = _reference_predict(ref["net"], ref_valid.get_batchgen(), 4, {"acc": _accuracy})
    preds, labels, metrics = trainer.predict(valid_mgr.get_batchgen(), batch_size=4)
    assert isinstance(preds, list) and len(preds) == 1 and preds[0].dtype == np.float32 and preds[0].shape == (10, 2)
    np.testing.assert_array_equal(preds[0], ref_preds[0])
    assert len(labels) == 1 and labels[0].dtype == np.int64
    np.testing.assert_array_equal(labels[0], ref_labels[0])
    assert set(metrics) == {"val_acc", "val_CE"} and all(isinstance(v, torch.Tensor) for v in metrics.values())
    torch.testing.assert_close(metrics, ref_metrics)
    assert valid_mgr.log == ref_valid.log

    # save / load: a trainer built on the same save_path resumes from the latest epoch checkpoint (start_epoch 3)
    resumed = _experiment_trainer(tmp_path, [], stop_at=10)
    assert resumed.start_epoch == 3
    _assert_same(_params(resumed.module), list(ref["last"].values()))


def test_hotloop_step_trains_like_the_default_closure(tmp_path):
    """``hotloop_step=True``: the network's prepare_batch still runs, its closure does not; for delira's default
    closure (forward, summed criterions, default optimizer) the result is the same, and compile applies."""
    results = {}
    for name, kwargs in {"closure": {}, "hotloop": {"hotloop_step": True}}.items():
        _PREPARED.clear()
        trainer = _experiment_trainer(tmp_path / name, [], stop_at=10, **kwargs)
        trainer.train(2, _DataManager(24, 5, True, 0), _DataManager(10, 3, False, 1), val_score_key="val_CE")
        _, _, metrics = trainer.predict(_DataManager(10, 3, False, 1).get_batchgen(), batch_size=2)
        results[name] = (_params(trainer.module), metrics, len(_PREPARED))
    assert (trainer._closure is None) and callable(trainer._train_step)
    for a, b in zip(results["closure"][0], results["hotloop"][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results["closure"][1], results["hotloop"][1])
    assert results["closure"][2] == results["hotloop"][2] > 0
    with pytest.raises(ValueError, match="pass hotloop_step=True"):
        _experiment_trainer(tmp_path / "c", [], stop_at=1, compile={"backend": "eager"})
    with pytest.raises(ValueError, match="on_nonfinite apply to hotloop's step"):
        _experiment_trainer(tmp_path / "n", [], stop_at=1, on_nonfinite="raise")


def test_optimizer_wrappers_forward_and_scale(tmp_path):
    net = _net()
    wrapper = DefaultOptimWrapperTorch(torch.optim.SGD(net.parameters(), lr=0.1), num_loss=1)
    assert wrapper.param_groups is wrapper._optimizer.param_groups and repr(wrapper) == repr(wrapper._optimizer)
    loss = net(torch.ones(2, 4)).sum()
    with wrapper.scale_loss(loss) as scaled:
        assert scaled is loss  # delira without apex: the loss itself
    reference = _net()
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    scaled_wrapper = DefaultOptimWrapperTorch(torch.optim.SGD(net.parameters(), lr=0.1), scaler=scaler)
    for model, opt in ((net, scaled_wrapper), (reference, ref_opt)):
        opt.zero_grad()
        out = model(torch.ones(2, 4)).sum()
        if opt is scaled_wrapper:
            with opt.scale_loss(out) as scaled:
                assert torch.equal(scaled, out * 8.0)
                scaled.backward()
        else:
            out.backward()
        opt.step()
    for a, b in zip(_params(net), _params(reference)):
        torch.testing.assert_close(a, b)  # the scaled gradients were unscaled before the step
    trainer = _trainer(tmp_path)
    assert trainer.optimizers["default"].state_dict() == trainer.optimizers["default"]._optimizer.state_dict()
