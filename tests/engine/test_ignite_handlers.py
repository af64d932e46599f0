"""Differential tests: Ignite's handlers and metrics behave the same on ``hotloop.Engine`` as on Ignite's ``Engine``.

Every scenario is a function of the engine class. It is run once on ``ignite.engine.Engine`` (the reference) and
once on ``hotloop.Engine`` with the same seed, and the two results are compared exactly: event recordings, engine
state, metric histories, checkpoint files and their contents, model weights. Timings are never compared; where a
handler measures time, only counts, shapes, names and orderings are.
"""

from __future__ import annotations

import io
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any

import ignite.engine
import ignite.engine.events
import pytest
import torch
import torch.nn.functional as F
from ignite.contrib.engines.common import setup_common_training_handlers
from ignite.engine import Events
from ignite.handlers import (
    BasicTimeProfiler,
    Checkpoint,
    DiskSaver,
    EarlyStopping,
    EpochOutputStore,
    FastaiLRFinder,
    HandlersTimeProfiler,
    LRScheduler,
    ModelCheckpoint,
    PiecewiseLinear,
    TerminateOnNan,
    Timer,
    global_step_from_engine,
)
from ignite.handlers.tqdm_logger import ProgressBar
from ignite.metrics import (
    Accuracy,
    Average,
    BatchFiltered,
    ConfusionMatrix,
    Loss,
    MetricsLambda,
    Precision,
    Recall,
    RunningAverage,
)
from torch import nn

import hotloop

IgniteEngine = ignite.engine.Engine
HotloopEngine = hotloop.Engine
ENGINES = (IgniteEngine, HotloopEngine)

# Events recorded by default. GET_BATCH_* and ITERATION_STARTED are left out on purpose: with no handler there,
# hotloop skips their dispatch, and the scenarios must pass through that fast path too.
RECORDED_EVENTS = (
    Events.STARTED,
    Events.EPOCH_STARTED,
    Events.ITERATION_COMPLETED,
    Events.DATALOADER_STOP_ITERATION,
    Events.TERMINATE_SINGLE_EPOCH,
    Events.EPOCH_COMPLETED,
    Events.TERMINATE,
    Events.INTERRUPT,
    Events.COMPLETED,
)

LOOPS = pytest.mark.parametrize("legacy", [False, True], ids=["generator_loop", "legacy_loop"])


# -- helpers --------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    # The tensors here are tiny; with intra-op threads on a busy 2-core machine each op waited ~10 ms for its
    # threads (60 ms vs 0.6 ms per forward+backward). One thread keeps the module fast and changes no result.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_both(scenario: Callable[..., Any], **kwargs: Any) -> tuple[Any, Any]:
    """The scenario's result on Ignite's engine and on hotloop's, in that order."""
    return scenario(IgniteEngine, **kwargs), scenario(HotloopEngine, **kwargs)


def run(engine: IgniteEngine, data: Any, legacy: bool = False, **kwargs: Any) -> Any:
    """``engine.run`` on the chosen loop; for hotloop, also checks that the fast loop (not Ignite's) ran."""
    engine.interrupt_resume_enabled = not legacy
    state = engine.run(data, **kwargs)
    assert getattr(engine, "_hl_faithful", False) is False, "hotloop fell back to Ignite's loop: nothing was compared"
    return state


def record_events(engine: IgniteEngine, events: tuple = RECORDED_EVENTS) -> list[tuple[str, int, int]]:
    log: list[tuple[str, int, int]] = []
    for event in events:
        engine.add_event_handler(event, _recorder(log, event.name))
    return log


def _recorder(log: list, name: str) -> Callable:
    def record(engine: IgniteEngine, *_: Any, **__: Any) -> None:
        log.append((name, engine.state.epoch, engine.state.iteration))

    return record


def make_data(n: int, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


TRAIN = make_data(24, 6, seed=0)  # 4 iterations per epoch
VAL = make_data(18, 6, seed=1)  # 3 iterations


def make_trainer(
    engine_cls: type, seed: int = 0, dict_output: bool = False
) -> tuple[IgniteEngine, nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train_step(engine: IgniteEngine, batch: Any) -> Any:
        model.train()
        optimizer.zero_grad()
        x, y = batch
        y_pred = model(x)
        loss = F.cross_entropy(y_pred, y)
        loss.backward()
        optimizer.step()
        if dict_output:
            return loss.item(), y_pred.detach(), y
        return loss.item()

    return engine_cls(train_step), model, optimizer


def make_evaluator(engine_cls: type, model: nn.Module) -> IgniteEngine:
    def eval_step(engine: IgniteEngine, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            x, y = batch
            return model(x), y

    return engine_cls(eval_step)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def plain(value: Any) -> Any:
    """Tensors to lists, recursively, so that results compare with ``==``."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def assert_same_tensors(ref: Any, got: Any) -> None:
    """Exact equality of nested dicts/lists of tensors and plain values."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(got, torch.Tensor) and torch.equal(ref, got)
    elif isinstance(ref, dict):
        assert list(ref) == list(got)
        for key in ref:
            assert_same_tensors(ref[key], got[key])
    elif isinstance(ref, (list, tuple)):
        assert len(ref) == len(got)
        for r, g in zip(ref, got):
            assert_same_tensors(r, g)
    else:
        assert ref == got


def engine_state(engine: IgniteEngine) -> tuple:
    s = engine.state
    return s.epoch, s.iteration, s.epoch_length, s.max_epochs, s.max_iters


def load_checkpoint(path: Any) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- re-exports -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Events", "State", "EventEnum", "CallableEventWithFilter", "EventsList", "RemovableEventHandle"]
)
def test_event_objects_are_ignites(name: str) -> None:
    assert getattr(hotloop, name) is getattr(ignite.engine.events, name)
    assert getattr(hotloop.engine, name) is getattr(ignite.engine.events, name)


def test_engine_is_an_ignite_engine() -> None:
    engine = HotloopEngine(lambda e, b: None)
    assert isinstance(engine, IgniteEngine)
    assert type(engine.state) is ignite.engine.State
    assert engine._allowed_events == IgniteEngine(lambda e, b: None)._allowed_events


# -- Checkpoint / ModelCheckpoint / global_step_from_engine ----------------------------------------------------------


def _checkpoint_run(engine_cls: type, dirname: Any, legacy: bool) -> dict[str, Any]:
    trainer, model, optimizer = make_trainer(engine_cls)
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
    handler = Checkpoint(
        to_save,
        DiskSaver(dirname, create_dir=True, require_empty=False),
        filename_prefix="run",
        n_saved=2,
        score_function=lambda engine: -engine.state.output,
        score_name="neg_loss",
        global_step_transform=global_step_from_engine(trainer, Events.ITERATION_COMPLETED),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=3), handler)
    log = record_events(trainer)
    run(trainer, TRAIN, legacy, max_epochs=4)
    files = sorted(os.listdir(dirname))
    return {
        "files": files,
        "last": os.path.basename(str(handler.last_checkpoint)),
        "saved": [(item.priority, item.filename) for item in handler._saved],
        "contents": [load_checkpoint(os.path.join(dirname, f)) for f in files],
        "log": log,
        "state": engine_state(trainer),
        "weights": weights(model),
    }


@LOOPS
def test_checkpoint_saves_same_files(tmp_path: Any, legacy: bool) -> None:
    ref = _checkpoint_run(IgniteEngine, tmp_path / "ignite", legacy)
    got = _checkpoint_run(HotloopEngine, tmp_path / "hotloop", legacy)
    assert len(ref["files"]) == 2  # n_saved: the two best of the four checkpoints
    assert all(re.fullmatch(r"run_checkpoint_\d+_neg_loss=-?\d+\.\d+\.pt", f) for f in ref["files"])
    assert got["files"] == ref["files"]
    assert got["last"] == ref["last"]
    assert got["saved"] == ref["saved"]
    assert got["log"] == ref["log"]
    assert got["state"] == ref["state"] == (4, 16, 4, 4, None)
    assert_same_tensors(ref["contents"], got["contents"])
    assert_same_tensors(ref["weights"], got["weights"])


def _resume_run(save_cls: type, load_cls: type, dirname: Any, resume_file: str, every: int) -> dict[str, Any]:
    """An uninterrupted 4-epoch run that checkpoints, then a fresh trainer resumed from one checkpoint."""
    trainer, model, optimizer = make_trainer(save_cls)
    saver = DiskSaver(dirname, create_dir=True, require_empty=False)
    handler = Checkpoint({"model": model, "optimizer": optimizer, "trainer": trainer}, saver, n_saved=None)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), handler)
    full: list = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: full.append((e.state.iteration, e.state.output)))
    run(trainer, TRAIN, max_epochs=4)

    trainer2, model2, optimizer2 = make_trainer(load_cls, seed=123)  # other initial weights: loading must matter
    to_load = {"model": model2, "optimizer": optimizer2, "trainer": trainer2}
    Checkpoint.load_objects(to_load=to_load, checkpoint=load_checkpoint(os.path.join(dirname, resume_file)))
    loaded_state = engine_state(trainer2)
    resumed: list = []
    batches: list = []
    trainer2.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: resumed.append((e.state.iteration, e.state.output))
    )
    trainer2.add_event_handler(
        Events.ITERATION_STARTED, lambda e: batches.append(next(i for i, b in enumerate(TRAIN) if b is e.state.batch))
    )
    run(trainer2, TRAIN)
    return {
        "full": full,
        "weights": weights(model),
        "loaded_state": loaded_state,
        "resumed": resumed,
        "batches": batches,
        "resumed_weights": weights(model2),
        "final_state": engine_state(trainer2),
    }


@pytest.mark.parametrize("load_cls", ENGINES, ids=["load_ignite", "load_hotloop"])
@pytest.mark.parametrize("save_cls", ENGINES, ids=["save_ignite", "save_hotloop"])
def test_checkpoint_resume_from_epoch_end(tmp_path: Any, save_cls: type, load_cls: type) -> None:
    ref = _resume_run(IgniteEngine, IgniteEngine, tmp_path / "ref", "checkpoint_8.pt", every=4)
    got = _resume_run(save_cls, load_cls, tmp_path / "got", "checkpoint_8.pt", every=4)
    assert got["loaded_state"] == ref["loaded_state"] == (2, 8, 4, 4, None)
    # resuming at an epoch end reproduces the uninterrupted run exactly
    assert ref["resumed"] == ref["full"][8:]
    assert ref["batches"] == [0, 1, 2, 3] * 2
    assert_same_tensors(ref["weights"], ref["resumed_weights"])
    for key in ("full", "resumed", "batches", "final_state"):
        assert got[key] == ref[key], key
    assert_same_tensors(ref["resumed_weights"], got["resumed_weights"])


@pytest.mark.parametrize(
    "save_cls,load_cls",
    [(IgniteEngine, HotloopEngine), (HotloopEngine, HotloopEngine)],
    ids=["ignite_to_hotloop", "hotloop_to_hotloop"],
)
def test_checkpoint_resume_mid_epoch(tmp_path: Any, save_cls: type, load_cls: type) -> None:
    # Iteration 6 is mid-epoch 2. A plain Engine restarts the data from its first batch but counts the epoch's
    # iterations from where it stopped: hotloop must reproduce that exactly, quirks included.
    ref = _resume_run(IgniteEngine, IgniteEngine, tmp_path / "ref", "checkpoint_6.pt", every=3)
    got = _resume_run(save_cls, load_cls, tmp_path / "got", "checkpoint_6.pt", every=3)
    assert got["loaded_state"] == ref["loaded_state"] == (1, 6, 4, 4, None)
    assert ref["batches"][:2] == [0, 1]
    assert [i for i, _ in ref["resumed"]] == list(range(7, 17))
    for key in ("resumed", "batches", "final_state"):
        assert got[key] == ref[key], key
    assert_same_tensors(ref["resumed_weights"], got["resumed_weights"])


def _model_checkpoint_run(engine_cls: type, dirname: Any, step_event: Any) -> dict[str, Any]:
    trainer, model, _ = make_trainer(engine_cls)
    evaluator = make_evaluator(engine_cls, model)
    Loss(F.cross_entropy).attach(evaluator, "loss")
    handler = ModelCheckpoint(
        dirname,
        filename_prefix="best",
        n_saved=2,
        score_function=lambda e: -e.state.metrics["loss"],
        score_name="neg_val_loss",
        global_step_transform=global_step_from_engine(trainer, step_event),
        require_empty=False,
    )
    evaluator.add_event_handler(Events.COMPLETED, handler, {"model": model})
    steps: list = []
    evaluator.add_event_handler(
        Events.COMPLETED, lambda e: steps.append(global_step_from_engine(trainer, step_event)(e, Events.COMPLETED))
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: run(evaluator, VAL))
    run(trainer, TRAIN, max_epochs=5)
    files = sorted(os.listdir(dirname))
    return {
        "files": files,
        "last": os.path.basename(str(handler.last_checkpoint)),
        "contents": [load_checkpoint(os.path.join(dirname, f)) for f in files],
        "steps": steps,
    }


@pytest.mark.parametrize("step_event", [None, Events.ITERATION_COMPLETED], ids=["epoch_step", "iteration_step"])
def test_model_checkpoint_on_evaluator_with_trainer_step(tmp_path: Any, step_event: Any) -> None:
    ref = _model_checkpoint_run(IgniteEngine, tmp_path / "ignite", step_event)
    got = _model_checkpoint_run(HotloopEngine, tmp_path / "hotloop", step_event)
    # global_step_from_engine reads the trainer's counter, not the evaluator's
    assert ref["steps"] == ([1, 2, 3, 4, 5] if step_event is None else [4, 8, 12, 16, 20])
    assert len(ref["files"]) == 2
    assert all(f.startswith("best_model_") for f in ref["files"])
    assert got["steps"] == ref["steps"]
    assert got["files"] == ref["files"]
    assert got["last"] == ref["last"]
    assert_same_tensors(ref["contents"], got["contents"])


# -- EarlyStopping ---------------------------------------------------------------------------------------------------

SCORES = [0.1, 0.3, 0.35, 0.32, 0.355, 0.36, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]


def _early_stopping_run(
    engine_cls: type, eval_event: Any, patience: int, threshold: float, cumulative: bool, legacy: bool
) -> dict[str, Any]:
    trainer = engine_cls(lambda e, b: b)
    evaluator = engine_cls(lambda e, b: b)
    scores = iter(SCORES)
    handler = EarlyStopping(patience, lambda e: next(scores), trainer, threshold=threshold, cumulative=cumulative)
    counters: list = []
    evaluator.add_event_handler(Events.COMPLETED, handler)
    evaluator.add_event_handler(Events.COMPLETED, lambda: counters.append((handler.counter, handler.best_score)))
    trainer.add_event_handler(eval_event, lambda: run(evaluator, [0, 1], legacy))
    log = record_events(trainer)
    run(trainer, list(range(5)), legacy, max_epochs=len(SCORES))
    return {"log": log, "state": engine_state(trainer), "counters": counters, "terminate": trainer.should_terminate}


@LOOPS
@pytest.mark.parametrize("eval_event", [Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED(every=3)])
@pytest.mark.parametrize("patience,threshold,cumulative", [(2, 0.0, False), (1, 0.0, False), (2, 0.01, True)])
def test_early_stopping(eval_event: Any, patience: int, threshold: float, cumulative: bool, legacy: bool) -> None:
    ref, got = run_both(
        _early_stopping_run,
        eval_event=eval_event,
        patience=patience,
        threshold=threshold,
        cumulative=cumulative,
        legacy=legacy,
    )
    assert ref["log"][-2][0] == "TERMINATE"  # it did stop early
    assert ref["state"][0] < len(SCORES)
    assert got == ref


# -- TerminateOnNan --------------------------------------------------------------------------------------------------


def _wrap_output(kind: str, value: float) -> Any:
    if kind == "float":
        return value
    if kind == "tensor":
        return torch.tensor([1.0, value])
    if kind == "tuple":
        return torch.tensor(0.5), torch.tensor(value)
    return {"loss": torch.tensor(value), "other": 1.0}


def _terminate_on_nan_run(engine_cls: type, nan_at: int, kind: str, legacy: bool) -> dict[str, Any]:
    bad = math.inf if kind == "tensor" else math.nan  # TerminateOnNan stops on any non-finite value

    def step(engine: IgniteEngine, batch: Any) -> Any:
        it = engine.state.iteration
        return _wrap_output(kind, bad if it == nan_at else float(it))

    engine = engine_cls(step)
    engine.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    log = record_events(engine)
    run(engine, list(range(4)), legacy, max_epochs=3)
    return {"log": log, "state": engine_state(engine), "output": repr(engine.state.output)}


@LOOPS
@pytest.mark.parametrize("kind", ["float", "tensor", "tuple", "dict"])
@pytest.mark.parametrize("nan_at", [1, 6, 8])
def test_terminate_on_nan(nan_at: int, kind: str, legacy: bool) -> None:
    ref, got = run_both(_terminate_on_nan_run, nan_at=nan_at, kind=kind, legacy=legacy)
    assert ref["state"][:2] == (math.ceil(nan_at / 4), nan_at)
    assert [name for name, _, _ in ref["log"][-3:]] == ["ITERATION_COMPLETED", "TERMINATE", "COMPLETED"]
    assert got == ref


# -- Timer -----------------------------------------------------------------------------------------------------------


def _timer_run(engine_cls: type) -> dict[str, Any]:
    def step(engine: IgniteEngine, batch: Any) -> float:
        return float(torch.randn(8, 8).sum())

    engine = engine_cls(step)
    total = Timer()
    total.attach(engine, start=Events.STARTED)
    iter_time = Timer()
    iter_time.attach(engine, start=Events.STARTED, resume=Events.ITERATION_STARTED, pause=Events.ITERATION_COMPLETED)
    per_epoch = Timer(average=True)
    per_epoch.attach(
        engine,
        start=Events.EPOCH_STARTED,
        resume=Events.ITERATION_STARTED,
        pause=Events.ITERATION_COMPLETED,
        step=Events.ITERATION_COMPLETED,
    )
    step_events = {
        "every": Events.ITERATION_COMPLETED(every=3),
        "once": Events.ITERATION_COMPLETED(once=[2, 7, 11]),
        "range": Events.ITERATION_COMPLETED(after=2, before=9),
        "every_range": Events.ITERATION_COMPLETED(every=2, after=3, before=12),
        "custom": Events.ITERATION_COMPLETED(event_filter=lambda e, i: i % 5 == 1),
        "epochs": Events.EPOCH_COMPLETED(every=2),
    }
    filtered = {name: Timer(average=True) for name in step_events}
    for name, event in step_events.items():
        filtered[name].attach(engine, start=Events.STARTED, step=event)
    samples: list = []

    @engine.on(Events.EPOCH_COMPLETED)
    def sample() -> None:
        samples.append(
            {
                "per_epoch_steps": per_epoch.step_count,
                "filtered_steps": {name: t.step_count for name, t in filtered.items()},
                "iter_time": iter_time.value(),
                "total": total.value(),
                "per_epoch_avg": per_epoch.value(),
                "running": (total.running, iter_time.running, per_epoch.running),
            }
        )

    run(engine, list(range(4)), max_epochs=3)
    return {"samples": samples, "final_total": total.value(), "final_iter": iter_time.value()}


def test_timer_counts_and_ordering() -> None:
    ref, got = run_both(_timer_run)
    expected_filtered = [
        {"every": 1, "once": 1, "range": 2, "every_range": 1, "custom": 1, "epochs": 0},
        {"every": 2, "once": 2, "range": 6, "every_range": 3, "custom": 2, "epochs": 1},
        {"every": 4, "once": 3, "range": 6, "every_range": 4, "custom": 3, "epochs": 1},
    ]
    for result in (ref, got):
        samples = result["samples"]
        assert [s["per_epoch_steps"] for s in samples] == [4, 4, 4]
        assert [s["filtered_steps"] for s in samples] == expected_filtered
        assert all(s["running"] == (True, False, False) for s in samples)
        for s in samples:
            assert 0.0 <= s["per_epoch_avg"] <= s["iter_time"] <= s["total"]
        iter_times = [s["iter_time"] for s in samples]
        totals = [s["total"] for s in samples]
        assert iter_times == sorted(iter_times) and totals == sorted(totals)
        assert 0.0 <= result["final_iter"] <= result["final_total"]
    assert [{k: v for k, v in s.items() if "steps" in k or k == "running"} for s in got["samples"]] == [
        {k: v for k, v in s.items() if "steps" in k or k == "running"} for s in ref["samples"]
    ]


# -- ProgressBar -----------------------------------------------------------------------------------------------------

_TQDM_TIME = re.compile(r"\[\d+:\d+(?::\d+)?<(?:\d+:\d+(?::\d+)?|\?)\]")


def _progress_bar_run(engine_cls: type, variant: str) -> str:
    out = io.StringIO()

    def step(engine: IgniteEngine, batch: Any) -> dict[str, float]:
        engine.state.alpha = 0.5 * engine.state.iteration
        return {"loss": 1.0 / engine.state.iteration, "acc": batch / 10}

    engine = engine_cls(step)
    RunningAverage(output_transform=lambda o: o["loss"], alpha=0.5).attach(engine, "avg_loss")
    pbar = ProgressBar(persist=True, file=out, mininterval=0, miniters=1, ncols=100, desc="Train")
    if variant == "plain":
        pbar.attach(engine)
    elif variant == "output":
        pbar.attach(engine, output_transform=lambda o: o)
    elif variant == "metrics_every":
        pbar.attach(engine, metric_names=["avg_loss"], event_name=Events.ITERATION_COMPLETED(every=2))
    elif variant == "all_every_3_state":
        pbar.attach(
            engine,
            metric_names="all",
            event_name=Events.ITERATION_COMPLETED(every=3),
            closing_event_name=Events.COMPLETED,
            state_attributes=["alpha"],
        )
    else:  # "epochs"
        pbar.attach(engine, metric_names="all", event_name=Events.EPOCH_COMPLETED, closing_event_name=Events.COMPLETED)

    @engine.on(Events.EPOCH_COMPLETED(every=2))
    def log(e: IgniteEngine) -> None:
        pbar.log_message(f"epoch {e.state.epoch} logged")

    run(engine, list(range(6)), max_epochs=4)
    return _TQDM_TIME.sub("[T]", out.getvalue())


@pytest.mark.parametrize("variant", ["plain", "output", "metrics_every", "all_every_3_state", "epochs"])
def test_progress_bar_output(variant: str) -> None:
    ref, got = run_both(_progress_bar_run, variant=variant)
    assert "[T]" in ref and not re.search(r"\d\d:\d\d", ref)  # timings were stripped, nothing else
    assert ref.count("epoch 2 logged\n") == 1 and ref.count("epoch 4 logged\n") == 1
    if variant == "output":
        assert "loss=0.167" in ref and "acc=0.5" in ref
    if variant == "all_every_3_state":
        assert "alpha=" in ref and "avg_loss=" in ref
    assert ref.count("\r") > 0  # one per refresh of the bar
    assert got.count("\r") == ref.count("\r")
    assert got.splitlines() == ref.splitlines()
    assert got == ref


# -- profilers -------------------------------------------------------------------------------------------------------


def _attach_user_handlers(engine: IgniteEngine, calls: list) -> None:
    def on_started() -> None:
        calls.append("started")

    def on_batch(engine: IgniteEngine) -> None:
        calls.append("batch")

    def on_epoch(engine: IgniteEngine) -> None:
        calls.append("epoch")

    def every_other(engine: IgniteEngine) -> None:
        calls.append("every_other")
        time.sleep(0.001)  # above the profiler's 1e-4 s threshold for filtered handlers

    def on_completed() -> None:
        calls.append("completed")

    engine.add_event_handler(Events.STARTED, on_started)
    engine.add_event_handler(Events.GET_BATCH_COMPLETED, on_batch)
    engine.add_event_handler(Events.EPOCH_COMPLETED, on_epoch)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), every_other)
    engine.add_event_handler(Events.COMPLETED, on_completed)
    Timer().attach(engine, start=Events.STARTED, resume=Events.ITERATION_STARTED, pause=Events.ITERATION_COMPLETED)


def _shape(value: Any) -> Any:
    """Numbers become ``"num"``; strings, keys and nesting stay: the structure of profiler results, without timings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return "num"
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, dict):
        return {str(k): _shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shape(v) for v in value]
    return value


def _event_name(event: Any) -> str:
    # a filtered event used as a key prints its filter's address: keep the name only
    return getattr(event, "name", str(event))


def _handler_names(engine: IgniteEngine) -> dict[str, list]:
    return {
        _event_name(e): [getattr(h, "__qualname__", type(h).__name__) for h, _, _ in handlers]
        for e, handlers in engine._event_handlers.items()
    }


def _handlers_profiler_run(engine_cls: type) -> dict[str, Any]:
    engine = engine_cls(lambda e, b: float(torch.ones(4).sum()))
    profiler = HandlersTimeProfiler()
    profiler.attach(engine)
    calls: list = []
    _attach_user_handlers(engine, calls)
    names_before = _handler_names(engine)
    runs = []
    for max_epochs in (3, 2):
        calls.clear()
        engine.state.max_epochs = None  # start over, with another length
        run(engine, list(range(4)), max_epochs=max_epochs)
        results = profiler.get_results()
        counts = {
            (_event_name(e), h): len(times)
            for e, per_event in profiler.event_handlers_times.items()
            for h, times in per_event.items()
        }
        runs.append(
            {
                "rows": [(row[0], row[1]) for row in results],
                "shape": _shape([row for row in results if "every_other" not in str(row[0])]),
                "counts": counts,
                "processing": len(profiler.processing_times),
                "dataflow": len(profiler.dataflow_times),
                "calls": list(calls),
                "non_negative": all(t >= 0 for t in profiler.processing_times + profiler.dataflow_times),
                "names_after": _handler_names(engine),
                "wrapped_after": sum(
                    hasattr(h, "_profiler_original") for hs in engine._event_handlers.values() for h, _, _ in hs
                ),
            }
        )
    return {"runs": runs, "names_before": names_before}


def test_handlers_time_profiler() -> None:
    ref, got = run_both(_handlers_profiler_run)
    for result in (ref, got):
        for n_run, (max_epochs, r) in enumerate(zip((3, 2), result["runs"]), start=1):
            iterations = 4 * max_epochs
            # Ignite leaves its processing/dataflow timers attached after a run: the second run adds another pair
            assert r["processing"] == r["dataflow"] == iterations * n_run
            assert r["non_negative"]
            assert r["calls"].count("every_other") == iterations // 2
            # a filtered handler is timed on every firing of its event, kept when it ran (>= 1e-4 s)
            every_other = [n for key, n in r["counts"].items() if "every_other" in key[1]]
            assert len(every_other) == 1 and iterations // 2 <= every_other[0] <= iterations
            assert r["counts"][("GET_BATCH_COMPLETED", "_attach_user_handlers.<locals>.on_batch")] == iterations
            # at COMPLETED the profiler puts the original handlers back
            assert r["wrapped_after"] == 0
    for r_ref, r_got in zip(ref["runs"], got["runs"]):
        exact = {k: v for k, v in r_ref["counts"].items() if "every_other" not in k[1]}
        assert {k: v for k, v in r_got["counts"].items() if "every_other" not in k[1]} == exact
        assert set(r_got["counts"]) == set(r_ref["counts"])
        for key in ("rows", "shape", "processing", "dataflow", "calls", "names_after"):
            assert r_got[key] == r_ref[key], key
    assert got["names_before"] == ref["names_before"]


def _basic_profiler_run(engine_cls: type) -> dict[str, Any]:
    engine = engine_cls(lambda e, b: float(torch.ones(4).sum()))
    profiler = BasicTimeProfiler()
    profiler.attach(engine)
    calls: list = []
    _attach_user_handlers(engine, calls)
    run(engine, list(range(4)), max_epochs=3)
    results = profiler.get_results()
    times = {str(e): t for e, t in profiler.event_handlers_times.items()}
    return {
        "keys": {k: sorted(map(str, v)) for k, v in results.items()},
        "shape": _shape(results),
        "names": {str(e): names for e, names in profiler.event_handlers_names.items()},
        "processing": tuple(profiler.processing_times.shape),
        "dataflow": tuple(profiler.dataflow_times.shape),
        "measured": {k: int((t > 0).sum()) for k, t in times.items()},
        "non_negative": all(bool((t >= 0).all()) for t in times.values())
        and bool((profiler.processing_times >= 0).all()),
        "calls": calls,
    }


def test_basic_time_profiler() -> None:
    ref, got = run_both(_basic_profiler_run)
    assert ref["processing"] == (12,)
    assert ref["non_negative"] and got["non_negative"]
    assert ref["names"]["Events.ITERATION_COMPLETED"] == [
        "_attach_user_handlers.<locals>.every_other",
        "Timer.pause",
    ]
    assert ref["measured"]["Events.ITERATION_COMPLETED"] == 12
    assert got == ref


# -- EpochOutputStore ------------------------------------------------------------------------------------------------


def _epoch_output_store_run(engine_cls: type) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    evaluator = make_evaluator(engine_cls, model)
    store = EpochOutputStore(output_transform=lambda out: out[0].argmax(dim=1))
    store.attach(evaluator, "predictions")
    raw = EpochOutputStore()
    raw.attach(evaluator)
    snapshots = []
    for data in (VAL, VAL[:2]):
        run(evaluator, data)
        snapshots.append((plain(store.data), plain(evaluator.state.predictions), plain(raw.data)))
    return {"snapshots": snapshots}


def test_epoch_output_store() -> None:
    ref, got = run_both(_epoch_output_store_run)
    assert [len(s[0]) for s in ref["snapshots"]] == [3, 2]  # reset at each epoch start
    assert ref["snapshots"][0][0] == ref["snapshots"][0][1]
    assert got == ref


# -- param schedulers ------------------------------------------------------------------------------------------------


def _scheduler_run(engine_cls: type, kind: str, legacy: bool) -> dict[str, Any]:
    trainer, model, optimizer = make_trainer(engine_cls)
    if kind == "piecewise":
        scheduler: Any = PiecewiseLinear(
            optimizer, "lr", milestones_values=[(0, 0.2), (5, 0.02), (10, 0.1)], save_history=True
        )
        trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    else:
        torch_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
        scheduler = LRScheduler(torch_scheduler, save_history=True)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, scheduler)
    lrs: list = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: lrs.append(optimizer.param_groups[0]["lr"]))
    run(trainer, TRAIN, legacy, max_epochs=3)
    return {"lrs": lrs, "history": trainer.state.param_history, "weights": weights(model)}


@LOOPS
@pytest.mark.parametrize("kind", ["piecewise", "lr_scheduler"])
def test_param_scheduler_lr_sequence(kind: str, legacy: bool) -> None:
    ref, got = run_both(_scheduler_run, kind=kind, legacy=legacy)
    assert len(ref["lrs"]) == 12 and len(set(ref["lrs"])) > 3
    assert len(ref["history"]["lr"]) == 12
    assert got["lrs"] == ref["lrs"]
    assert got["history"] == ref["history"]
    assert_same_tensors(ref["weights"], got["weights"])


# -- metrics on a trainer that evaluates every epoch -----------------------------------------------------------------


def _metrics_run(engine_cls: type, legacy: bool, detach_at: int | None) -> dict[str, Any]:
    trainer, model, _ = make_trainer(engine_cls, dict_output=True)
    ra_loss = RunningAverage(output_transform=lambda o: o[0], alpha=0.8)
    ra_loss.attach(trainer, "ra_loss")
    RunningAverage(src=Accuracy(output_transform=lambda o: (o[1], o[2])), alpha=0.5).attach(trainer, "ra_acc")

    evaluator = make_evaluator(engine_cls, model)
    precision = Precision(average=False)
    recall = Recall(average=False)
    metrics = {
        "accuracy": Accuracy(),
        "loss": Loss(F.cross_entropy),
        "precision": precision,
        "recall": recall,
        "cm": ConfusionMatrix(num_classes=3),
        "f1": MetricsLambda(lambda p, r: 2 * p * r / (p + r + 1e-20), precision, recall),
        "mean_max_logit": Average(output_transform=lambda out: out[0].max(dim=1).values.mean()),
    }
    # updated on every other batch only: a filtered ITERATION_COMPLETED handler on the evaluator
    Accuracy().attach(evaluator, "accuracy_every_2", usage=BatchFiltered(every=2))
    for name, metric in metrics.items():
        metric.attach(evaluator, name)

    per_iteration: list = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine: IgniteEngine) -> None:
        m = engine.state.metrics
        per_iteration.append((engine.state.iteration, m["ra_loss"], m["ra_acc"]))
        if engine.state.iteration == detach_at:
            # removes handlers from the event being dispatched; the loop must notice the list was replaced
            ra_loss.detach(engine)

    per_epoch: list = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def evaluate(engine: IgniteEngine) -> None:
        run(evaluator, VAL, legacy)
        per_epoch.append((engine.state.epoch, plain(evaluator.state.metrics)))

    run(trainer, TRAIN, legacy, max_epochs=3)
    return {"per_iteration": per_iteration, "per_epoch": per_epoch, "weights": weights(model)}


@LOOPS
@pytest.mark.parametrize("detach_at", [None, 6], ids=["attached", "detach_mid_epoch"])
def test_metrics_histories_and_weights(legacy: bool, detach_at: int | None) -> None:
    ref, got = run_both(_metrics_run, legacy=legacy, detach_at=detach_at)
    assert len(ref["per_iteration"]) == 12 and len(ref["per_epoch"]) == 3
    assert set(ref["per_epoch"][0][1]) == {
        "accuracy",
        "loss",
        "precision",
        "recall",
        "cm",
        "f1",
        "mean_max_logit",
        "accuracy_every_2",
    }
    assert sum(sum(row) for row in ref["per_epoch"][0][1]["cm"]) == 18
    ra_losses = [ra for _, ra, _ in ref["per_iteration"]]
    if detach_at is not None:
        assert len(set(ra_losses[detach_at - 1 :])) == 1  # frozen after detach
    else:
        assert len(set(ra_losses)) == 12
    assert got["per_iteration"] == ref["per_iteration"]
    assert got["per_epoch"] == ref["per_epoch"]
    assert_same_tensors(ref["weights"], got["weights"])


def _removable_handle_run(engine_cls: type) -> list:
    engine = engine_cls(lambda e, b: b)
    log = record_events(engine, (Events.EPOCH_COMPLETED,))
    handles: dict = {}
    handles["every"] = engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), _recorder(log, "every2"))
    handles["started"] = engine.add_event_handler(Events.ITERATION_STARTED, _recorder(log, "its"))

    @engine.on(Events.ITERATION_COMPLETED)
    def remove_some(e: IgniteEngine) -> None:
        if e.state.iteration == 5:
            handles.pop("every").remove()
        if e.state.iteration == 7:
            handles.pop("started").remove()
        if e.state.iteration == 9:
            e.add_event_handler(Events.GET_BATCH_STARTED, _recorder(log, "gbs"))

    run(engine, list(range(4)), max_epochs=3)
    return log


def test_handlers_removed_and_added_mid_epoch() -> None:
    ref, got = run_both(_removable_handle_run)
    assert ("every2", 1, 4) in ref and ("every2", 2, 6) not in ref
    assert ("its", 2, 7) in ref and ("its", 2, 8) not in ref
    assert ("gbs", 3, 9) in ref and ("gbs", 3, 11) in ref
    assert got == ref


# -- composite helpers: LR finder, common training handlers ---------------------------------------------------------


def _lr_finder_run(engine_cls: type) -> dict[str, Any]:
    trainer, model, optimizer = make_trainer(engine_cls)
    finder = FastaiLRFinder()
    to_save = {"model": model, "optimizer": optimizer}
    with finder.attach(trainer, to_save=to_save, num_iter=15, end_lr=1000.0, diverge_th=2.0) as t:
        run(t, TRAIN, max_epochs=5)
        state = engine_state(t)
    return {
        "results": plain(finder.get_results()),
        "suggestion": finder.lr_suggestion(),
        "state_during": state,
        "handlers_after": {e: hs for e, hs in _handler_names(trainer).items() if hs},
        "weights": weights(model),
    }


def test_fastai_lr_finder() -> None:
    ref, got = run_both(_lr_finder_run)
    assert len(ref["results"]["lr"]) == len(ref["results"]["loss"]) >= 5
    assert ref["state_during"][1] < 15  # the loss diverged: the finder terminated the run before num_iter
    assert ref["handlers_after"] == {}  # its handlers were removed again
    assert {k: v for k, v in got.items() if k != "weights"} == {k: v for k, v in ref.items() if k != "weights"}
    assert_same_tensors(ref["weights"], got["weights"])  # the model was restored to its initial weights


def _common_handlers_run(engine_cls: type, dirname: Any) -> dict[str, Any]:
    trainer, model, optimizer = make_trainer(engine_cls)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    setup_common_training_handlers(
        trainer,
        to_save={"model": model, "optimizer": optimizer},
        save_every_iters=5,
        output_path=str(dirname),
        lr_scheduler=scheduler,
        output_names=["loss"],
        with_pbars=False,
        log_every_iters=2,
        clear_cuda_cache=False,
    )
    history: list = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: history.append((e.state.iteration, optimizer.param_groups[0]["lr"], dict(e.state.metrics))),
    )
    log = record_events(trainer)
    run(trainer, TRAIN, max_epochs=3)
    files = sorted(os.listdir(dirname))
    return {
        "files": files,
        "contents": [load_checkpoint(os.path.join(dirname, f)) for f in files],
        "history": history,
        "log": log,
        "weights": weights(model),
    }


def test_setup_common_training_handlers(tmp_path: Any) -> None:
    ref = _common_handlers_run(IgniteEngine, tmp_path / "ignite")
    got = _common_handlers_run(HotloopEngine, tmp_path / "hotloop")
    assert ref["files"] == ["training_checkpoint_10.pt"]
    assert len(ref["history"]) == 12 and "loss" in ref["history"][-1][2]
    assert len({lr for _, lr, _ in ref["history"]}) == 5  # StepLR halves the lr every 3 iterations
    for key in ("files", "history", "log"):
        assert got[key] == ref[key], key
    assert_same_tensors(ref["contents"], got["contents"])
    assert_same_tensors(ref["weights"], got["weights"])
