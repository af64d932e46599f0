"""Differential tests: hotloop's create_supervised_* against Ignite 0.5.5's, plus hotloop's own options."""

from __future__ import annotations

import functools
import inspect
import logging
import re
import warnings
from unittest import mock

import ignite.engine as ie
import pytest
import torch
from ignite.metrics import Accuracy, Loss
from torch.utils.data import DataLoader, TensorDataset

import hotloop
from hotloop.step import compiled as compiled_mod

FACTORIES = [
    "create_supervised_trainer",
    "create_supervised_evaluator",
    "supervised_training_step",
    "supervised_training_step_amp",
    "supervised_evaluation_step",
    "supervised_evaluation_step_amp",
]


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _data(n_full: int = 5, short: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    sizes = [10] * n_full + ([short] if short else [])
    return [(torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def _train(mod, data=None, epochs=3, optim=None, trainer_kwargs=None, eval_kwargs=None):
    torch.manual_seed(0)
    model = _model()
    opt = (optim or (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)))(model.parameters())
    data = data if data is not None else _data()
    trainer = mod.create_supervised_trainer(model, opt, torch.nn.CrossEntropyLoss(), **(trainer_kwargs or {}))
    outputs = []
    trainer.add_event_handler(ie.Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    metrics = {"acc": Accuracy(), "loss": Loss(torch.nn.CrossEntropyLoss())}
    evaluator = mod.create_supervised_evaluator(model, metrics=metrics, **(eval_kwargs or {}))
    history = []
    trainer.add_event_handler(ie.Events.EPOCH_COMPLETED, lambda e: history.append(dict(evaluator.run(data).metrics)))
    trainer.run(data, max_epochs=epochs)
    return outputs, [p.detach().clone() for p in model.parameters()], history, trainer, evaluator


@pytest.mark.parametrize("name", FACTORIES)
def test_signature_matches_ignite(name):
    ours = inspect.signature(getattr(hotloop, name))
    theirs = inspect.signature(getattr(ie, name))
    ignite_params = list(theirs.parameters.values())
    our_params = list(ours.parameters.values())[: len(ignite_params)]
    assert [(p.name, p.kind) for p in our_params] == [(p.name, p.kind) for p in ignite_params]
    for p, q in zip(our_params, ignite_params):
        if q.default is inspect.Parameter.empty or not callable(q.default):
            assert p.default == q.default, p.name
    extra = list(ours.parameters.values())[len(ignite_params) :]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)


@pytest.mark.parametrize(
    "trainer_kwargs",
    [
        {},
        {"gradient_accumulation_steps": 3},
        {"model_transform": lambda out: out * 2.0},
        {"output_transform": lambda x, y, y_pred, loss: (y_pred.sum().item(), loss.item())},
        {"model_fn": lambda model, x: model(x + 1.0)},
        {"prepare_batch": lambda b, device, non_blocking: (b[0] * 0.5, b[1])},
    ],
    ids=["default", "accumulation", "model_transform", "output_transform", "model_fn", "prepare_batch"],
)
def test_trainer_identical_to_ignite(trainer_kwargs):
    a = _train(ie, trainer_kwargs=trainer_kwargs)
    b = _train(hotloop, trainer_kwargs=trainer_kwargs)
    assert a[0] == b[0]
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert a[2] == b[2]
    assert type(b[3]) is hotloop.Engine and type(b[4]) is hotloop.Engine


def test_adam_trainer_identical_to_ignite():
    adam = lambda p: torch.optim.Adam(p, lr=0.01)  # noqa: E731
    a = _train(ie, optim=adam)
    b = _train(hotloop, optim=adam)
    assert a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def test_evaluator_output_transform_and_model_transform_identical():
    kwargs = {"model_transform": lambda o: o.softmax(-1), "output_transform": lambda x, y, y_pred: (y_pred, y)}
    a = _train(ie, eval_kwargs=kwargs)
    b = _train(hotloop, eval_kwargs=kwargs)
    assert a[2] == b[2]


def test_deterministic_trainer_identical_to_ignite():
    def run(mod):
        ie_utils_seed(0)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ds = TensorDataset(torch.randn(37, 8, generator=torch.Generator().manual_seed(3)), torch.arange(37) % 3)
        loader = DataLoader(ds, batch_size=8, shuffle=True)
        trainer = mod.create_supervised_trainer(model, opt, torch.nn.CrossEntropyLoss(), deterministic=True)
        seen = []
        trainer.add_event_handler(ie.Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.batch[1].tolist()))
        trainer.run(loader, max_epochs=2)
        return seen, [p.detach().clone() for p in model.parameters()], trainer

    def ie_utils_seed(s):
        from ignite.utils import manual_seed

        manual_seed(s)

    a, b = run(ie), run(hotloop)
    assert a[0] == b[0]
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert isinstance(b[2], hotloop.DeterministicEngine)


def test_amp_mode_on_cpu_matches_ignite():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = _train(ie, trainer_kwargs={"amp_mode": "amp"}, eval_kwargs={"amp_mode": "amp"})
        b = _train(hotloop, trainer_kwargs={"amp_mode": "amp"}, eval_kwargs={"amp_mode": "amp"})
    assert a[0] == b[0] and a[2] == b[2]


def test_scaler_true_sets_state_scaler_like_ignite():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ours = hotloop.create_supervised_trainer(model, opt, torch.nn.MSELoss(), amp_mode="amp", scaler=True)
        theirs = ie.create_supervised_trainer(model, opt, torch.nn.MSELoss(), amp_mode="amp", scaler=True)
    assert type(ours.state.scaler) is type(theirs.state.scaler)


def test_scaler_without_amp_raises_ignites_error():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scaler argument is True, but amp_mode is None"):
        hotloop.create_supervised_trainer(model, opt, torch.nn.MSELoss(), scaler=True)


@pytest.mark.parametrize("gas", [0, -1])
def test_bad_accumulation_steps(gas):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Gradient_accumulation_steps must be strictly positive"):
        hotloop.create_supervised_trainer(model, opt, torch.nn.MSELoss(), gradient_accumulation_steps=gas)


def test_factories_look_up_steps_at_call_time():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sentinel = lambda engine, batch: "patched"  # noqa: E731
    with mock.patch("hotloop.supervised.supervised_training_step", return_value=sentinel) as patched:
        trainer = hotloop.create_supervised_trainer(model, opt, torch.nn.MSELoss())
    assert patched.call_count == 1 and trainer._process_function is sentinel
    with mock.patch("hotloop.supervised.supervised_evaluation_step", return_value=sentinel) as patched:
        evaluator = hotloop.create_supervised_evaluator(model)
    assert patched.call_count == 1 and evaluator._process_function is sentinel


def _model_opt_loss():
    model = _model()
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss()


@pytest.mark.parametrize("mod", [ie, hotloop], ids=["ignite", "hotloop"])
def test_check_arg_is_looked_up_in_ignite_engine_at_call_time(mod):
    # Ignite's test_create_supervised_training_scalar_assignment patches ignite.engine._check_arg: hotloop's factories
    # must call the patch, with Ignite's arguments, and use what it returns.
    model, opt, loss = _model_opt_loss()
    scaler = torch.amp.GradScaler(enabled=False)
    with mock.patch("ignite.engine._check_arg", return_value=(None, scaler)) as check_arg:
        trainer = mod.create_supervised_trainer(model, opt, loss, device="cpu", scaler=True)
        mod.create_supervised_evaluator(model, amp_mode="amp")
    assert check_arg.call_args_list == [mock.call(False, False, None, True), mock.call(False, False, "amp", None)]
    assert trainer.state.scaler is scaler


_AMP_IMPORT_ERROR = "Please install torch>=1.12.0 to use amp_mode='amp'."
_AMP_CREATIONS = {
    "trainer": lambda mod, model, opt, loss: mod.create_supervised_trainer(model, opt, loss, amp_mode="amp"),
    "trainer_bad_accumulation": lambda mod, model, opt, loss: mod.create_supervised_trainer(
        model, opt, loss, amp_mode="amp", gradient_accumulation_steps=0
    ),
    "training_step": lambda mod, model, opt, loss: mod.supervised_training_step_amp(model, opt, loss),
    "evaluator": lambda mod, model, opt, loss: mod.create_supervised_evaluator(model, amp_mode="amp"),
    "evaluation_step": lambda mod, model, opt, loss: mod.supervised_evaluation_step_amp(model),
}


@pytest.mark.parametrize("mod", [ie, hotloop], ids=["ignite", "hotloop"])
@pytest.mark.parametrize("creation", list(_AMP_CREATIONS))
def test_missing_torch_amp_raises_ignites_import_error_at_creation(mod, creation):
    # Ignite's test_create_supervised_{trainer,evaluator}_amp_error: with torch.amp unimportable the factory itself
    # raises (before checking the accumulation steps), not the first iteration.
    model, opt, loss = _model_opt_loss()
    with mock.patch.dict("sys.modules", {"torch.amp": None, "torch.cuda.amp": None, "torch.amp.autocast_mode": None}):
        with pytest.raises(ImportError, match=re.escape(_AMP_IMPORT_ERROR)):
            _AMP_CREATIONS[creation](mod, model, opt, loss)
        with pytest.raises(ImportError, match=re.escape("Please install torch>=2.3.1 to use scaler argument.")):
            mod.create_supervised_trainer(model, opt, loss, amp_mode="amp", scaler=True)


@pytest.mark.parametrize("kwargs", [{"on_nonfinite": "raise"}, {"compile": True}], ids=["nonfinite_guard", "compile"])
def test_missing_torch_amp_raises_at_creation_on_the_hot_path_too(kwargs):
    model, opt, loss = _model_opt_loss()
    with mock.patch.dict("sys.modules", {"torch.amp": None}):
        with pytest.raises(ImportError, match=re.escape(_AMP_IMPORT_ERROR)):
            hotloop.create_supervised_trainer(model, opt, loss, amp_mode="amp", **kwargs)
        if "compile" in kwargs:
            with pytest.raises(ImportError, match=re.escape(_AMP_IMPORT_ERROR)):
                hotloop.create_supervised_evaluator(model, amp_mode="amp", **kwargs)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"compile": "yes"}, ValueError, "compile should be False, True, 'auto', one of the pinned builds"),
        ({"cuda_graphs": "sometimes"}, ValueError, "cuda_graphs should be False, True or 'auto'"),
        ({"no_sync": 1}, TypeError, "no_sync should be True or False"),
        ({"prefetch": "cuda"}, TypeError, "prefetch should be True or False"),
        ({"max_compiled_shapes": 0}, ValueError, "max_compiled_shapes should be a positive integer"),
        ({"cuda_graphs": True}, RuntimeError, "cuda_graphs=True needs a CUDA device"),
    ],
)
def test_bad_hotloop_options(kwargs, exc, match):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(exc, match=match):
        hotloop.create_supervised_trainer(model, opt, torch.nn.MSELoss(), device="cpu", **kwargs)


def test_auto_options_on_cpu_give_ignites_results_within_the_fused_optimizers_tolerance():
    """On a CPU ``compile="auto"`` chooses between eager and the fused optimizer (too short a run to compile); an
    optimizer it cannot fuse (``foreach`` set by the user) leaves the run bit-identical to Ignite's."""
    a = _train(ie)
    b = _train(hotloop, trainer_kwargs={"compile": "auto", "cuda_graphs": "auto", "prefetch": True})
    assert b[0] == pytest.approx(a[0], rel=1e-5) and b[3].step_choice.variant in (None, "eager", "fused")
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    plain = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=False)  # noqa: E731
    a, b = _train(ie, optim=plain), _train(hotloop, optim=plain, trainer_kwargs={"compile": "auto"})
    assert a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert b[3].step_choice.variant in (None, "eager") and "fused" not in b[3].step_choice.times_ms


def test_no_sync_output_is_detached_device_tensor_with_same_values():
    a = _train(ie)
    b = _train(hotloop, trainer_kwargs={"no_sync": True})
    assert all(isinstance(o, torch.Tensor) and not o.requires_grad and o.dim() == 0 for o in b[0])
    assert a[0] == [o.item() for o in b[0]]
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def test_no_sync_keeps_a_user_output_transform():
    ot = lambda x, y, y_pred, loss: ("mine", loss.item())  # noqa: E731
    b = _train(hotloop, trainer_kwargs={"no_sync": True, "output_transform": ot})
    assert all(o[0] == "mine" for o in b[0])


class _CountingBackend:
    """A torch.compile backend that runs the FX graph as is and counts compilations."""

    def __init__(self):
        self.calls = 0

    def __call__(self, gm, example_inputs):
        self.calls += 1
        return gm.forward


@pytest.mark.parametrize("gas", [1, 2])
def test_compile_matches_eager_and_does_not_recompile_after_first_epoch(gas):
    torch._dynamo.reset()
    backend = _CountingBackend()
    counts = []
    a = _train(ie, trainer_kwargs={"gradient_accumulation_steps": gas}, epochs=3)

    torch.manual_seed(0)
    b = _train(
        hotloop,
        trainer_kwargs={"compile": {"backend": backend}, "gradient_accumulation_steps": gas},
        eval_kwargs={"compile": {"backend": backend}},
        epochs=3,
    )
    counts.append(backend.calls)
    assert backend.calls > 0
    for x, y in zip(a[0], b[0]):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-6)
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)

    # A second trainer over the same shapes: one more epoch must not compile anything new for known shapes.
    before = backend.calls
    b[3].run(_data(), max_epochs=4)
    assert backend.calls == before


def test_compile_more_shapes_than_allowed_runs_eager_with_one_warning():
    torch._dynamo.reset()
    backend = _CountingBackend()
    data = [(torch.randn(n, 8), torch.randint(0, 3, (n,))) for n in (10, 9, 8, 7, 10, 9)]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = _train(ie, data=data, epochs=1)
        b = _train(
            hotloop, data=data, epochs=1, trainer_kwargs={"compile": {"backend": backend}, "max_compiled_shapes": 2}
        )
    ours = [x for x in w if "compiled train step has code for 2 input shapes" in str(x.message)]
    assert len(ours) == 1
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_compile_failure_restores_state_and_falls_back(monkeypatch, caplog):
    real_compile = torch.compile

    model_compiles = _CountingBackend()

    def broken_compile(fn, **kwargs):
        if isinstance(fn, functools.partial) and isinstance(fn.args[0], torch.nn.Module):  # the model alone
            return real_compile(fn, backend=model_compiles)

        def half_step_then_fail(x, y, *rest):
            fn(x, y, *rest)  # the whole step ran ...
            raise torch._dynamo.exc.Unsupported("pretend the optimizer step does not compile")  # ... then failed

        return half_step_then_fail

    monkeypatch.setattr(compiled_mod.torch, "compile", broken_compile)
    torch._dynamo.reset()
    a = _train(ie)
    with caplog.at_level(logging.WARNING, logger="hotloop.step.compiled"):
        b = _train(hotloop, trainer_kwargs={"compile": True})
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    messages = [r.getMessage() for r in caplog.records if "compiling the whole train step failed" in r.getMessage()]
    assert len(messages) == 1 and "pretend the optimizer step" in messages[0]
    assert model_compiles.calls > 0  # the step went on with the model compiled alone


def test_compile_with_inductor_matches_eager():
    """One real inductor compile (the slow one in this module): a tiny step, full batches only."""
    torch._dynamo.reset()
    data = _data(n_full=3, short=0)
    a = _train(ie, data=data, epochs=2)
    b = _train(hotloop, data=data, epochs=2, trainer_kwargs={"compile": True})
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


_SYNC_METHODS = ["item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"]


def test_no_sync_mode_makes_no_host_sync_during_an_epoch(monkeypatch):
    """The sync sentinel: during an epoch of a no_sync trainer, no tensor is read back to the host."""
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = hotloop.create_supervised_trainer(model, opt, torch.nn.CrossEntropyLoss(), no_sync=True)
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

    trainer.add_event_handler(ie.Events.EPOCH_STARTED, arm)
    trainer.add_event_handler(ie.Events.EPOCH_COMPLETED, disarm)
    trainer.run(_data(), max_epochs=2)
    assert calls == []

    # The sentinel does catch a syncing step: Ignite's default output transform calls .item().
    sync_trainer = hotloop.create_supervised_trainer(model, opt, torch.nn.CrossEntropyLoss())
    sync_trainer.add_event_handler(ie.Events.EPOCH_STARTED, arm)
    sync_trainer.add_event_handler(ie.Events.EPOCH_COMPLETED, disarm)
    sync_trainer.run(_data(), max_epochs=1)
    assert "item" in calls


def test_prefetch_wraps_every_data_iterator_the_engine_makes(monkeypatch):
    """prefetch=True installs the prefetcher on each iterator: first epoch, restarts and set_data."""
    wrapped = []

    class Recorder:
        def __init__(self, it, device):
            self.it = it
            wrapped.append(self)

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.it)

    monkeypatch.setattr("hotloop.step.options.prefetch_enabled", lambda option, device: option)
    monkeypatch.setattr("hotloop.step.options.DevicePrefetcher", Recorder)
    a = _train(ie, epochs=2)
    b = _train(hotloop, epochs=2, trainer_kwargs={"prefetch": True})
    assert a[0] == b[0]
    assert len(wrapped) >= 2  # one per epoch for the trainer
    assert isinstance(b[3]._dataloader_iter, Recorder) or b[3]._dataloader_iter is None
