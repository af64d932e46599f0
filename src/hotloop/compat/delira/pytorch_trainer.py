"""delira's ``PyTorchNetworkTrainer`` on hotloop's :class:`~hotloop.Engine`."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from hotloop.compat.delira.callbacks import PyTorchSchedulerCallback
from hotloop.compat.delira.checkpoints import _BEST_NAME, _CheckpointingTrainer
from hotloop.compat.delira.checks import (
    _APEX_DEFAULTS,
    _EMPTY,
    _SCALER_KEYS,
    _check_gpu_ids,
    _check_int,
    _check_mapping,
    _check_mixed_precision,
    _check_mode,
    _check_save_path,
)
from hotloop.compat.delira.data import _as_batches, _finish, _Prepare, _Prepared, _Stacked
from hotloop.compat.delira.optimizers import DefaultOptimWrapperTorch, create_optims_default_pytorch
from hotloop.compat.delira.prediction import _PredictionCollector
from hotloop.compat.delira.steps import _ClosureEvalStep, _ClosureTrainStep, hotloop_steps
from hotloop.engine import Engine, Events
from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step import Autocast, StepOptions, attach_step

__all__ = ["PyTorchNetworkTrainer"]

_logger = logging.getLogger(__package__)  # "hotloop.compat.delira", as before the package split


def _weak_handler(trainer: Any, method: str) -> Callable[[Engine], None]:
    # The engine is the trainer's attribute: a handler holding the trainer strongly would make a reference cycle.
    ref = weakref.ref(trainer)

    def handler(engine: Engine) -> None:
        getattr(ref(), method)(engine)

    handler.__name__ = handler.__qualname__ = method
    return handler


@dataclass
class _TrainRun:
    """What one ``train()`` call knows: its arguments and what the epochs have found so far."""

    num_epochs: int | None
    valid: Any = None
    val_score_key: str | None = None
    mode: str = "highest"
    best_score: Any = field(init=False)
    metrics_val: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    def __post_init__(self) -> None:
        # delira's start: 0 in "highest" mode (a score that is never positive never makes a best model), inf else.
        self.best_score = 0 if self.mode == "highest" else math.inf


class PyTorchNetworkTrainer(_CheckpointingTrainer):
    """Train and validate a PyTorch network: delira's ``PyTorchNetworkTrainer`` on hotloop's :class:`~hotloop.Engine`.

    Each batch goes through the network's ``prepare_batch(batch, input_device, output_device)`` (delira's
    ``AbstractPyTorchNetwork`` interface: it turns delira's NumPy batches into tensors of the right dtypes on the
    right devices); then, for a network with delira's ``closure``, ``closure(module, data_dict,
    optimizers=trainer.optimizers, criterions=..., metrics=..., fold=..., batch_nr=...)`` does the step, as in
    delira. A network without them (any ``torch.nn.Module``) gets hotloop's: the batch dict's ``"data"`` to the input
    device and its other tensor/NumPy entries (the labels, in key order) to the output device, then
    ``preds = network(batch["data"])``, the sum of ``criterion(preds, *labels)`` back-propagated and
    ``optimizers["default"]`` stepped — delira's default closure. ``hotloop_step=True`` takes that step for a
    network with a closure too; it is the step ``compile``, ``cuda_graphs`` and ``no_sync`` apply to.

    ``trainer.engine`` runs the training epochs: its ``STARTED`` event calls :meth:`_at_training_begin`,
    ``EPOCH_STARTED`` :meth:`_at_epoch_begin`, ``EPOCH_COMPLETED`` the validation and :meth:`_at_epoch_end`, and
    ``COMPLETED`` :meth:`_at_training_end`. Ignite handlers attached to it run after these. ``trainer.eval_engine``
    runs :meth:`predict`.

    Checkpoints go to ``save_path``, as delira writes them: ``checkpoint_epoch_0.pth`` when training begins (holding
    ``epoch=start_epoch``), ``checkpoint_epoch_{epoch}.pth`` after every epoch divisible by ``save_freq``, and
    ``checkpoint_best.pth`` whenever the validation score improves. Each holds ``{"model", "optimizer", "epoch"}``
    (plus ``"scaler"`` with mixed precision on a GPU). A trainer built on a ``save_path`` that holds
    ``checkpoint_epoch_*`` files loads the latest one (delira's resume); :meth:`update_state` sets ``start_epoch`` to
    the checkpoint's epoch, so training resumes with that epoch.

    Args:
        network: the network (a ``torch.nn.Module``; delira's ``AbstractPyTorchNetwork`` with its ``prepare_batch``
            and ``closure``, or any module).
        save_path: the directory for checkpoints (created if missing).
        criterions: the losses, ``{name: fn(preds, *labels)}``; at least one.
        optimizer_cls: the optimizer class.
        optimizer_params: its keyword arguments (default: ``{}``).
        metrics: validation metrics, ``{name: fn(preds, *labels)}`` (default: ``{}``).
        lr_scheduler_cls: ``None``, a ``torch.optim.lr_scheduler`` class (wrapped in
            :class:`PyTorchSchedulerCallback`; ``ReduceLROnPlateau`` gets the validation score), or a delira-style
            callback class; one is made per optimizer as ``lr_scheduler_cls(optimizer, **lr_scheduler_params)``.
        lr_scheduler_params: keyword arguments for the scheduler (default: ``{}``).
        gpu_ids: GPU indices; empty: CPU. One GPU: the network runs there; several: ``torch.nn.DataParallel`` over
            them with outputs and labels on the second, as delira does. Without CUDA: the CPU.
        save_freq: save a checkpoint every ``save_freq`` epochs.
        optim_fn: ``optim_fn(network, optimizer_cls, **optimizer_params)`` returns a dict of optimizers (hotloop's
            step needs a ``"default"`` one, or exactly one); ``trainer.optimizers`` wraps each in a
            :class:`DefaultOptimWrapperTorch`, as delira does.
        fold: the current fold.
        callbacks: callbacks (see :meth:`register_callback`); they run before the scheduler callbacks.
        start_epoch: the first epoch to train; a loaded checkpoint sets it to the checkpoint's epoch.
        mixed_precision: on a GPU, ``torch.autocast`` (float16) around the step and a ``torch.amp.GradScaler``
            behind the wrappers' ``scale_loss`` / ``step``; on the CPU a no-op with a warning (delira, without apex,
            also continued in full precision).
        mixed_precision_kwargs: apex's ``allow_banned``/``enable_caching``/``verbose`` (accepted and ignored) and
            ``GradScaler``'s ``init_scale``/``growth_factor``/``backoff_factor``/``growth_interval``.
        compile: hotloop only: a step option (:class:`hotloop.step.StepOptions`), for hotloop's training and
            evaluation step.
        cuda_graphs: hotloop only: a step option, for hotloop's step.
        no_sync: hotloop only: a step option; with hotloop's step, ``trainer.engine.state.output`` is the detached
            loss tensor instead of ``loss.item()``. (A closure's iteration output is what the closure returns.)
        prefetch: hotloop only: a step option; it also applies to a closure's batches.
        max_compiled_shapes: hotloop only: a step option.
        on_nonfinite: hotloop only: a step option, for hotloop's training step.
        hotloop_step: hotloop only; True: hotloop's step instead of the network's ``closure`` (the network's
            ``prepare_batch`` still runs). Needed for ``compile``, ``cuda_graphs`` and ``on_nonfinite`` with a network
            that has a closure.
        **kwargs: set as attributes of the trainer (as delira does); a name the trainer already has is refused.

    Raises:
        TypeError: an argument has the wrong type (the message names it and what is expected).
        ValueError: an argument has a wrong value (e.g. ``save_freq=0``, no criterions, unknown
            ``mixed_precision_kwargs``, a GPU index that does not exist, ``compile`` with a network's closure).

    Examples:
        .. code-block:: python

            from hotloop.compat.delira import PyTorchNetworkTrainer

            trainer = PyTorchNetworkTrainer(net, "checkpoints", {"CE": torch.nn.CrossEntropyLoss()},
                                            torch.optim.Adam, {"lr": 1e-3}, metrics={"acc": accuracy},
                                            gpu_ids=[0], mixed_precision=True)
            best = trainer.train(10, train_manager, valid_manager, val_score_key="val_acc")
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_path: str | os.PathLike,
        criterions: Mapping[str, Callable],
        optimizer_cls: type,
        optimizer_params: Mapping[str, Any] = _EMPTY,
        metrics: Mapping[str, Callable] = _EMPTY,
        lr_scheduler_cls: type | None = None,
        lr_scheduler_params: Mapping[str, Any] = _EMPTY,
        gpu_ids: Iterable[int] = (),
        save_freq: int = 1,
        optim_fn: Callable[..., Mapping[str, torch.optim.Optimizer]] = create_optims_default_pytorch,
        fold: int = 0,
        callbacks: Iterable = (),
        start_epoch: int = 1,
        mixed_precision: bool = False,
        mixed_precision_kwargs: Mapping[str, Any] = _APEX_DEFAULTS,
        *,
        compile: bool | str | dict[str, Any] = False,
        cuda_graphs: bool | str = False,
        no_sync: bool = False,
        prefetch: bool = False,
        max_compiled_shapes: int = 4,
        on_nonfinite: str | NonFiniteGuard | None = None,
        hotloop_step: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(fold, callbacks)
        self._options = StepOptions(compile, cuda_graphs, no_sync, prefetch, max_compiled_shapes, on_nonfinite)
        if not isinstance(hotloop_step, bool):
            raise TypeError(f"hotloop_step should be True or False, got {hotloop_step!r}")
        self.save_path = _check_save_path(save_path)
        self.criterions = _check_mapping("criterions", criterions, of_callables=True)
        if not criterions:
            raise ValueError("criterions should hold at least one loss, {name: fn(preds, *labels)}, got {}")
        self.metrics = _check_mapping("metrics", metrics, of_callables=True)
        self.save_freq = _check_int("save_freq", save_freq, 1)
        self.start_epoch = _check_int("start_epoch", start_epoch, 1)
        self.stop_training = False
        self._hotloop_step = hotloop_step
        self._run: _TrainRun | None = None
        self._make_save_path()  # delira makes it before _setup, which looks in it for a state to resume from
        self._setup(
            network,
            optim_fn,
            optimizer_cls,
            optimizer_params,
            lr_scheduler_cls,
            lr_scheduler_params,
            gpu_ids,
            mixed_precision,
            mixed_precision_kwargs,
        )
        self._set_extra_attributes(kwargs)

    # -- setup -------------------------------------------------------------------------------------------------------

    def _setup(
        self,
        network: torch.nn.Module,
        optim_fn: Callable[..., Mapping[str, torch.optim.Optimizer]],
        optimizer_cls: type,
        optimizer_params: Mapping[str, Any],
        lr_scheduler_cls: type | None,
        lr_scheduler_params: Mapping[str, Any],
        gpu_ids: Iterable[int],
        mixed_precision: bool,
        mixed_precision_kwargs: Mapping[str, Any],
    ) -> None:
        """Defines the trainer's setup: devices, mixed precision, optimizers, schedulers, steps, engines, resume.

        Args:
            network: the network to train.
            optim_fn: creates the dict of optimizers.
            optimizer_cls: the optimizer class.
            optimizer_params: its keyword arguments.
            lr_scheduler_cls: the scheduler class or None.
            lr_scheduler_params: its keyword arguments.
            gpu_ids: GPU indices; empty: CPU.
            mixed_precision: whether to use mixed precision.
            mixed_precision_kwargs: additional keyword arguments for mixed precision.
        """
        if not isinstance(network, torch.nn.Module):
            raise TypeError(f"network should be a torch.nn.Module, got {type(network).__name__}")
        if not callable(optimizer_cls):
            raise TypeError(f"optimizer_cls should be an optimizer class, e.g. torch.optim.SGD, got {optimizer_cls!r}")
        if not callable(optim_fn):
            raise TypeError(f"optim_fn should be a function returning a dict of optimizers, got {optim_fn!r}")
        _check_mapping("optimizer_params", optimizer_params)
        _check_mapping("lr_scheduler_params", lr_scheduler_params)
        _check_mixed_precision(mixed_precision, mixed_precision_kwargs)
        self._setup_devices(network, _check_gpu_ids(gpu_ids))
        self._setup_amp(mixed_precision, mixed_precision_kwargs)
        self.optimizers = self._make_optimizers(optim_fn, network, optimizer_cls, optimizer_params)
        self._register_schedulers(lr_scheduler_cls, lr_scheduler_params)
        self._setup_network_hooks(network)
        self._build_engines()
        self._load_latest_state()

    def _setup_devices(self, network: torch.nn.Module, gpu_ids: list[int]) -> None:
        self.use_gpu = bool(gpu_ids) and torch.cuda.is_available()
        if not self.use_gpu:  # delira: the CPU, without a word, when CUDA is not available
            self.input_device = self.output_device = torch.device("cpu")
            self.module: torch.nn.Module = network.to(self.input_device)
            return
        missing = [i for i in gpu_ids if i >= torch.cuda.device_count()]
        if missing:
            raise ValueError(f"gpu_ids {missing} do not exist: this machine has {torch.cuda.device_count()} GPU(s)")
        self.input_device = torch.device("cuda", gpu_ids[0])
        self.output_device = torch.device("cuda", gpu_ids[1] if len(gpu_ids) > 1 else gpu_ids[0])
        self.module = network.to(self.input_device)
        if len(gpu_ids) > 1:
            self.module = torch.nn.DataParallel(self.module, device_ids=gpu_ids, output_device=gpu_ids[1])

    def _setup_amp(self, mixed_precision: bool, mixed_precision_kwargs: Mapping[str, Any]) -> None:
        self.mixed_precision = mixed_precision and self.use_gpu
        self.scaler: torch.amp.GradScaler | None = None
        if mixed_precision and not self.use_gpu:
            warnings.warn(
                "hotloop: mixed_precision=True has no effect on the CPU; training in full precision", stacklevel=4
            )
        if self.mixed_precision:
            scaler_kwargs = {k: v for k, v in mixed_precision_kwargs.items() if k in _SCALER_KEYS}
            self.scaler = torch.amp.GradScaler("cuda", **scaler_kwargs)

    def _make_optimizers(
        self, optim_fn: Callable, network: torch.nn.Module, optimizer_cls: type, optimizer_params: Mapping[str, Any]
    ) -> dict[str, DefaultOptimWrapperTorch]:
        optimizers = optim_fn(network, optimizer_cls, **optimizer_params)
        if not isinstance(optimizers, Mapping) or not optimizers:
            raise TypeError(f"optim_fn should return a non-empty dict of optimizers, got {optimizers!r}")
        bad = [k for k, v in optimizers.items() if not isinstance(v, torch.optim.Optimizer)]
        if bad:
            raise TypeError(f"optim_fn should return torch.optim.Optimizer instances; not optimizers: {bad}")
        return {
            k: DefaultOptimWrapperTorch(v, num_loss=len(self.criterions), scaler=self.scaler)
            for k, v in optimizers.items()
        }

    def _register_schedulers(self, lr_scheduler_cls: Any, lr_scheduler_params: Mapping[str, Any]) -> None:
        if lr_scheduler_cls is None:
            return
        if not isinstance(lr_scheduler_cls, type):
            raise TypeError(
                f"lr_scheduler_cls should be a class (e.g. torch.optim.lr_scheduler.StepLR), got {lr_scheduler_cls!r}"
            )
        for wrapper in self.optimizers.values():
            scheduler = lr_scheduler_cls(wrapper._optimizer, **lr_scheduler_params)  # delira: the wrapped optimizer
            if isinstance(
                scheduler, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            ):
                scheduler = PyTorchSchedulerCallback(scheduler)
            self.register_callback(scheduler)

    def _setup_network_hooks(self, network: torch.nn.Module) -> None:
        """delira's ``closure_fn = network.closure`` and ``prepare_batch = network.prepare_batch``, where they exist."""
        prepare = getattr(network, "prepare_batch", None)
        self._prepare = _Prepare(
            prepare if callable(prepare) else None, self.input_device, self.output_device, self.use_gpu
        )
        closure = getattr(network, "closure", None)
        self._closure = closure if callable(closure) and not self._hotloop_step else None
        options = self._options
        stepwise = options.compile is not False or options.cuda_graphs is not False or options.on_nonfinite is not None
        if self._closure is not None and stepwise:
            raise ValueError(
                "compile, cuda_graphs and on_nonfinite apply to hotloop's step, and this network's closure runs each "
                "step as in delira; pass hotloop_step=True to train with hotloop's step (network(batch['data']), the "
                "summed criterions, optimizers['default'])"
            )

    def _build_engines(self) -> None:
        steps = (_ClosureTrainStep(self), _ClosureEvalStep(self)) if self._closure is not None else hotloop_steps(self)
        train_step, eval_step = steps
        self._train_step = train_step
        self.engine = Engine(train_step)
        for event, method in (
            (Events.STARTED, "_on_started"),
            (Events.EPOCH_STARTED, "_on_epoch_started"),
            (Events.EPOCH_COMPLETED, "_on_epoch_completed"),
            (Events.COMPLETED, "_on_completed"),
        ):
            self.engine.add_event_handler(event, _weak_handler(self, method))
        self._collector = _PredictionCollector()
        self.eval_engine = Engine(eval_step)
        self.eval_engine.add_event_handler(Events.ITERATION_COMPLETED, self._collector)
        attach_step(self.engine, train_step, self._options, self.input_device)
        attach_step(
            self.eval_engine, eval_step, dataclasses.replace(self._options, on_nonfinite=None), self.input_device
        )

    def _autocast(self) -> Any:
        return Autocast.cuda(self.mixed_precision, dtype=torch.float16)()

    def _set_extra_attributes(self, kwargs: Mapping[str, Any]) -> None:
        clashes = sorted(k for k in kwargs if hasattr(self, k))
        if clashes:
            raise ValueError(
                f"keyword arguments {clashes} would overwrite the trainer's own attributes; rename them "
                "(unknown keyword arguments become trainer attributes, as in delira)"
            )
        for key, value in kwargs.items():
            setattr(self, key, value)

    # -- engine events -----------------------------------------------------------------------------------------------

    def _current_run(self, engine: Engine) -> _TrainRun:
        if self._run is None:  # trainer.engine.run(...) called directly: a run without validation
            self._run = _TrainRun(num_epochs=engine.state.max_epochs)
        return self._run

    def _on_started(self, engine: Engine) -> None:
        self._current_run(engine)
        engine.state.epoch = self.start_epoch - 1  # the engine counts epochs; a resumed trainer continues its count
        self._at_training_begin()
        self.module.train()
        # delira's train(): checkpoint_epoch_0.pth holds the state training starts from, with epoch=start_epoch.
        self.save_state(os.path.join(self.save_path, "checkpoint_epoch_0.pth"), self.start_epoch)

    def _on_epoch_started(self, engine: Engine) -> None:
        run = self._current_run(engine)
        self._at_epoch_begin(run.metrics_val, run.val_score_key, engine.state.epoch, run.num_epochs)
        self.module.train()  # delira's _train_single_epoch

    def _on_epoch_completed(self, engine: Engine) -> None:
        run = self._current_run(engine)
        epoch = engine.state.epoch
        metrics_val, is_best = self._validate(run)
        run.metrics_val = metrics_val
        self._at_epoch_end(metrics_val, run.val_score_key, epoch, is_best)
        if self.stop_training:  # set by a callback, e.g. early stopping
            engine.terminate()

    def _on_completed(self, engine: Engine) -> None:
        self._current_run(engine).result = self._at_training_end()

    def _validate(self, run: _TrainRun) -> tuple[dict[str, Any], Any]:
        """delira's validation after an epoch: ``(metrics_val, is_best)``."""
        if not run.valid:
            return {}, False
        metrics_val = self._predict_valid(run.valid)
        if run.val_score_key not in metrics_val:
            _logger.warning(
                "Validation score key not in metric dict. Logging metrics but can't decide which model is best"
            )
            return metrics_val, False
        score = metrics_val[run.val_score_key]
        is_best = self._is_better_val_scores(run.best_score, score, run.mode)
        if is_best:
            run.best_score = score
            _logger.info("Best val score = %2.3f", float(score))
        return metrics_val, is_best

    def _predict_valid(self, valid: Any) -> dict[str, Any]:
        """The validation metrics. A delira data manager is re-batched as delira does: batch size 1 and one
        augmentation process, stacked back to its batch size by :meth:`predict`, so that no sample is dropped."""
        if not all(hasattr(valid, a) for a in ("get_batchgen", "batch_size", "n_process_augmentation")):
            return self.predict(valid)[2]
        batch_size, processes = valid.batch_size, valid.n_process_augmentation
        valid.batch_size, valid.n_process_augmentation = 1, 1
        try:
            return self.predict(valid.get_batchgen(), batch_size=batch_size)[2]
        finally:
            valid.batch_size, valid.n_process_augmentation = batch_size, processes

    # -- hooks -------------------------------------------------------------------------------------------------------

    def _at_training_begin(self, *args: Any, **kwargs: Any) -> None:
        """Defines behaviour at beginning of training: nothing here (delira's); subclasses may add to it.

        Args:
            *args: positional arguments (unused).
            **kwargs: keyword arguments (unused).
        """

    def _at_training_end(self) -> torch.nn.Module:
        """Defines behaviour at end of training: loads ``checkpoint_best.pth`` if ``save_path`` holds one.

        Returns:
            the best network, or the last one when there is no best checkpoint.
        """
        best = os.path.join(self.save_path, _BEST_NAME)
        if os.path.isfile(best):
            self.update_state(best)
        return self.module

    def _at_epoch_begin(
        self,
        metrics_val: Mapping[str, Any],
        val_score_key: str | None,
        epoch: int,
        num_epochs: int | None,
        **kwargs: Any,
    ) -> None:
        """Defines behaviour at beginning of each epoch: executes all callbacks' ``at_epoch_begin``.

        Args:
            metrics_val: validation metrics (of the previous epoch; ``{}`` before the first validation).
            val_score_key: validation score key.
            epoch: current epoch.
            num_epochs: total number of epochs.
            **kwargs: keyword arguments (unused).
        """
        for callback in self._callbacks:
            self._update_state(
                callback.at_epoch_begin(self, val_metrics=metrics_val, val_score_key=val_score_key, curr_epoch=epoch)
            )

    def _at_epoch_end(
        self, metrics_val: Mapping[str, Any], val_score_key: str | None, epoch: int, is_best: Any, **kwargs: Any
    ) -> None:
        """Defines behaviour at end of each epoch: executes all callbacks' ``at_epoch_end`` and saves checkpoints.

        ``checkpoint_epoch_{epoch}.pth`` is saved when ``epoch % save_freq == 0``, ``checkpoint_best.pth`` when
        ``is_best``.

        Args:
            metrics_val: validation metrics of this epoch.
            val_score_key: validation score key.
            epoch: current epoch.
            is_best: whether the current model is the best one so far.
            **kwargs: keyword arguments (unused).
        """
        for callback in self._callbacks:
            self._update_state(
                callback.at_epoch_end(self, val_metrics=metrics_val, val_score_key=val_score_key, curr_epoch=epoch)
            )
        if epoch % self.save_freq == 0:
            self.save_state(os.path.join(self.save_path, f"checkpoint_epoch_{epoch}.pth"), epoch)
        if is_best:
            self.save_state(os.path.join(self.save_path, _BEST_NAME), epoch)

    # -- public API --------------------------------------------------------------------------------------------------

    def train(
        self,
        num_epochs: int,
        datamgr_train: Any,
        datamgr_valid: Any = None,
        val_score_key: str | None = None,
        val_score_mode: str = "highest",
    ) -> torch.nn.Module:
        """Train the network from ``start_epoch`` to ``num_epochs`` (inclusive), validating after every epoch.

        Args:
            num_epochs: the last epoch to train.
            datamgr_train: the training data: a delira data manager (``get_batchgen(seed=epoch)`` is called once per
                epoch), a DataLoader or a re-iterable of dict batches.
            datamgr_valid: the validation data, of the same kinds, or None. A data manager is read with batch size
                1 and its batches stacked back to its batch size (delira's way of not dropping samples).
            val_score_key: the validation metric or loss that selects the best model (with delira's prefix,
                e.g. ``"val_accuracy"``, ``"val_CE"``).
            val_score_mode: ``"highest"`` or ``"lowest"``: which score is best.

        Returns:
            the network from ``checkpoint_best.pth`` if ``save_path`` holds one, else the last one.

        Raises:
            TypeError: ``num_epochs`` is not an integer, or the data is none of the accepted kinds.
            ValueError: ``num_epochs < 1`` or ``val_score_mode`` is not ``"highest"``/``"lowest"`` (checked before
                the first epoch).
        """
        _check_int("num_epochs", num_epochs, 1)
        _check_mode(val_score_mode)
        data = _as_batches(datamgr_train, "datamgr_train", self._epoch_fn())
        if datamgr_valid is not None:
            _as_batches(datamgr_valid, "datamgr_valid")
        self._warn_if_single_epoch_overridden()
        self._run = _TrainRun(num_epochs, datamgr_valid, val_score_key, val_score_mode)
        state = self.engine.state
        state.max_epochs = state.max_iters = state.epoch_length = None  # a new run, not a resume of the last one
        try:
            self.engine.run(data, max_epochs=num_epochs)
            return self._run.result
        finally:
            self._run = None

    def predict(self, batchgen: Any, batch_size: int | None = None) -> tuple[Any, list[Any], dict[str, Any]]:
        """Predict the batches of ``batchgen`` and compute the mean validation metrics and losses, as delira does.

        Each batch goes through the network's ``prepare_batch``; with ``batch_size``, ``batch_size`` prepared batches
        are concatenated (``torch.cat``) and forwarded together (the last group may be smaller). The network runs
        in eval mode (``module.eval()``, which stays set). A batch generator's ``_finish()`` is called at the end.

        Args:
            batchgen: a batch generator (e.g. batchgenerators' ``MultiThreadedAugmenter``), a DataLoader, an
                iterable of dict batches, or a data manager (an object with ``get_batchgen()``).
            batch_size: None: forward each batch as it comes. An int: delira's artificial batch size.

        Returns:
            ``(predictions, labels, metrics)``: a list with one NumPy array per network output (the closure's
            ``preds``; a dict of arrays if it returns a dict), each concatenated over the forward passes along
            dim 0; a list with one array per label entry of the prepared batches (keys holding neither ``"data"``
            nor ``"img"``, in sorted key order); and ``{"val_<name>": mean}`` for the metrics and losses, each the
            sum of the forward passes' values divided by their number (tensors, as delira's are).

        Raises:
            TypeError: ``batchgen`` is none of the accepted kinds, or ``batch_size`` is not an integer.
            ValueError: ``batch_size < 1``.
            ModuleNotFoundError: NumPy is not installed.
        """
        data = _as_batches(batchgen, "batchgen")
        forward: Iterable = _Prepared(data, self._prepare)
        if batch_size is not None:
            forward = _Stacked(forward, _check_int("batch_size", batch_size, 1))
        self.module.eval()
        self._collector.reset()
        state = self.eval_engine.state
        state.max_epochs = state.max_iters = state.epoch_length = None
        try:
            self.eval_engine.run(forward, max_epochs=1)
            result = self._collector.result()
        finally:
            self._collector.reset()  # release the collected tensors
        if data is batchgen:
            _finish(batchgen)  # delira: batchgen._finish() ends the generator's worker processes
        return result

    def _train_single_epoch(self, batchgen: Any, epoch: int) -> None:
        """Trains the network a single epoch on a fresh engine (``train`` runs all epochs on ``self.engine``).

        Args:
            batchgen: the training batches (any kind ``train`` accepts); a batch generator is finished at the end.
            epoch: the current epoch (the seed for ``get_batchgen``).
        """
        self.module.train()
        data = _as_batches(batchgen, "batchgen", lambda: epoch)
        Engine(self._train_step).run(data, max_epochs=1)
        if data is batchgen:
            _finish(batchgen)

    def _warn_if_single_epoch_overridden(self) -> None:
        if type(self)._train_single_epoch is not PyTorchNetworkTrainer._train_single_epoch:
            warnings.warn(
                f"hotloop: {type(self).__name__}._train_single_epoch is not called by train(); the epochs run on "
                "trainer.engine. Attach Ignite handlers to trainer.engine to change what happens per iteration",
                stacklevel=3,
            )

    def _epoch_fn(self) -> Callable[[], int]:
        ref = weakref.ref(self.engine)
        return lambda: ref().state.epoch  # type: ignore[union-attr]
