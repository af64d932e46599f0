"""delira parity: ``AbstractNetworkTrainer`` and ``PyTorchNetworkTrainer`` on hotloop's :class:`~hotloop.Engine`.

Change the import::

    from delira.training import PyTorchNetworkTrainer             # before
    from hotloop.compat.delira import PyTorchNetworkTrainer       # after

The constructor, ``train``, ``predict``, the network's ``prepare_batch`` and ``closure``, the optimizer wrappers, the
checkpoint files (and the resume from them) and the callback protocol are delira's (0.3, the PyTorch backend:
``delira/training/pytorch_trainer.py``). Inside, the epochs and iterations are run by a :class:`hotloop.Engine`
(``trainer.engine``; the prediction pass by ``trainer.eval_engine``) and the trainer's hooks are handlers of its
events.

The step (delira's ``AbstractPyTorchNetwork`` interface): every batch goes through the network's
``prepare_batch(batch, input_device, output_device)``; a network with a ``closure`` is trained and evaluated by it,
``closure(module, data_dict, optimizers, criterions=..., metrics=..., fold=..., batch_nr=...)``. A network without
them gets hotloop's versions of delira's defaults: ``batch["data"]`` to the input device and every other tensor or
NumPy entry (a label, in key order) to the output device; ``preds = network(batch["data"])``; each criterion and
metric called as ``fn(preds, *labels)``; the sum of the criterions back-propagated and ``optimizers["default"]``
stepped; losses and metrics reported with delira's ``"val_"`` prefix during validation. That step is built by
hotloop's step builder (:func:`hotloop.step.build_train_step`, the one ``create_supervised_trainer`` uses), so
hotloop's step options (:class:`hotloop.step.StepOptions`: ``compile``, ``cuda_graphs``, ``no_sync``, ``prefetch``,
``max_compiled_shapes``, ``on_nonfinite``) work with it as they do everywhere; ``hotloop_step=True`` selects it for a
network that has a closure.

Data: ``train`` and ``predict`` accept delira's data managers (objects with ``get_batchgen()``; ``train`` calls
``get_batchgen(seed=epoch)`` each epoch) and batch generators, a :class:`torch.utils.data.DataLoader`, or any
re-iterable of batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import operator
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from hotloop.engine import Engine, Events
from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step import Autocast, StepOptions, build_eval_step, build_train_step
from hotloop.step.steps import call_model, identity, loss_item, train_output

try:
    import numpy as np

    HAS_NUMPY = True
except ImportError:  # pragma: no cover - numpy comes with every supported torch install we test
    HAS_NUMPY = False

__all__ = [
    "AbstractCallback",
    "AbstractNetworkTrainer",
    "DefaultOptimWrapperTorch",
    "InvalidCallbackError",
    "PyTorchNetworkTrainer",
    "PyTorchSchedulerCallback",
    "create_optims_default_pytorch",
]

_logger = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = MappingProxyType({})
#: delira's default ``mixed_precision_kwargs`` (the keyword arguments of apex's legacy ``amp.init``).
_APEX_DEFAULTS: Mapping[str, Any] = MappingProxyType({"allow_banned": False, "enable_caching": True, "verbose": False})
_SCALER_KEYS = frozenset({"init_scale", "growth_factor", "backoff_factor", "growth_interval"})
_MODES = ("highest", "lowest")
_BEST_NAME = "checkpoint_best.pth"


def _require_numpy() -> None:
    if not HAS_NUMPY:
        raise ModuleNotFoundError(
            "hotloop.compat.delira returns predictions as NumPy arrays, as delira does; install numpy "
            "(pip install numpy)"
        )


# -- callbacks --------------------------------------------------------------------------------------------------------


class AbstractCallback:
    """delira's callback base: two hooks whose returned dicts update the trainer's attributes.

    The trainer calls ``at_epoch_begin(trainer, val_metrics=..., val_score_key=..., curr_epoch=...)`` before each
    epoch and ``at_epoch_end`` with the same keywords after it (``val_metrics`` are the latest validation metrics;
    ``{}`` before the first validation). Each returned dict goes to ``trainer._update_state``: e.g. returning
    ``{"stop_training": True}`` ends training after the current epoch (delira's early stopping).

    Examples:
        .. code-block:: python

            class StopAfter(AbstractCallback):
                def __init__(self, epochs):
                    super().__init__()
                    self.epochs = epochs

                def at_epoch_end(self, trainer, **kwargs):
                    return {"stop_training": kwargs["curr_epoch"] >= self.epochs}
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def at_epoch_begin(self, trainer: Any, **kwargs: Any) -> dict:
        """Called before each epoch.

        Args:
            trainer: the trainer.
            **kwargs: ``val_metrics``, ``val_score_key`` and ``curr_epoch``.

        Returns:
            attributes to set on the trainer (empty here).
        """
        return {}

    def at_epoch_end(self, trainer: Any, **kwargs: Any) -> dict:
        """Called after each epoch and its validation.

        Args:
            trainer: the trainer.
            **kwargs: ``val_metrics``, ``val_score_key`` and ``curr_epoch``.

        Returns:
            attributes to set on the trainer (empty here).
        """
        return {}


class InvalidCallbackError(TypeError, AssertionError):
    """Raised by ``register_callback`` for an object that is not a callback.

    It is a ``TypeError`` (hotloop's convention) and an ``AssertionError`` (what delira's ``assert`` raised), so
    code that catches either keeps working.
    """


class PyTorchSchedulerCallback(AbstractCallback):
    """Steps a ``torch.optim.lr_scheduler`` scheduler at the end of every epoch, as delira's scheduler callbacks do.

    ``ReduceLROnPlateau`` is stepped with the epoch's validation score, ``val_metrics[val_score_key]`` (delira's
    ``ReduceLROnPlateauCallbackPyTorch``); if there is none (no validation data, or the key is not a metric) the step
    is skipped with one warning. Other schedulers are stepped so that after epoch ``e`` their ``last_epoch`` is ``e``
    (delira called ``scheduler.step(epoch=curr_epoch)``), which keeps a resumed trainer's schedule in place.

    ``PyTorchNetworkTrainer`` wraps a scheduler class given as ``lr_scheduler_cls`` in this callback itself.

    Args:
        scheduler: a scheduler instance (anything with ``step()``).

    Raises:
        TypeError: ``scheduler`` has no ``step`` method.
    """

    def __init__(self, scheduler: Any) -> None:
        super().__init__()
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"scheduler should be a learning-rate scheduler with a step() method, got {scheduler!r}")
        self.scheduler = scheduler
        self._plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self._warned = False

    def at_epoch_end(self, trainer: Any, **kwargs: Any) -> dict:
        """Step the scheduler (see the class docstring).

        Args:
            trainer: the trainer.
            **kwargs: ``val_metrics``, ``val_score_key`` and ``curr_epoch``.

        Returns:
            an empty dict.
        """
        if self._plateau:
            self._step_plateau(kwargs.get("val_metrics") or {}, kwargs.get("val_score_key"))
            return {}
        epoch = kwargs.get("curr_epoch")
        if epoch is not None and isinstance(getattr(self.scheduler, "last_epoch", None), int):
            self.scheduler.last_epoch = epoch - 1  # the chainable form of step(epoch=...), without its deprecation
        self.scheduler.step()
        return {}

    def _step_plateau(self, val_metrics: Mapping[str, Any], val_score_key: Any) -> None:
        score = val_metrics.get(val_score_key)
        if score is None:
            if not self._warned:
                warnings.warn(
                    f"hotloop: ReduceLROnPlateau is not stepped: no validation score {val_score_key!r} "
                    f"(validation metrics: {sorted(val_metrics)}); pass datamgr_valid and a val_score_key that is "
                    "one of them",
                    stacklevel=2,
                )
                self._warned = True
            return
        self.scheduler.step(score)


def create_optims_default_pytorch(model: torch.nn.Module, optim_cls: type, **optim_params: Any) -> dict[str, Any]:
    """delira's default ``optim_fn``: one optimizer over all parameters, under the key ``"default"``.

    Args:
        model: the network.
        optim_cls: the optimizer class.
        **optim_params: its keyword arguments.

    Returns:
        ``{"default": optim_cls(model.parameters(), **optim_params)}``
    """
    return {"default": optim_cls(model.parameters(), **optim_params)}


class DefaultOptimWrapperTorch:
    """delira's optimizer wrapper (``delira.utils.context_managers``): the optimizer with apex's ``scale_loss``.

    ``trainer.optimizers`` holds one per optimizer, as in delira, and delira closures use them as they are:
    ``with optimizers["default"].scale_loss(loss) as scaled: scaled.backward()``, then ``optimizers["default"].step()``.
    Every other attribute is the optimizer's (``param_groups``, ``state_dict``, ...); the optimizer itself is
    ``wrapper._optimizer``. Without mixed precision ``scale_loss`` yields the loss unchanged (delira without apex).
    With mixed precision on a GPU (hotloop's ``torch.amp`` in place of apex) it yields ``scaler.scale(loss)`` and
    ``step()`` is ``scaler.step(optimizer)`` followed by ``scaler.update()``.

    Args:
        optimizer: the ``torch.optim.Optimizer`` to wrap.
        *args: ignored (apex's ``num_loss`` and the like).
        **kwargs: ``scaler``, a ``torch.amp.GradScaler`` or None; anything else is ignored.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
        self._optimizer = optimizer
        self._scaler: torch.amp.GradScaler | None = kwargs.get("scaler")

    @contextlib.contextmanager
    def scale_loss(self, loss: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield the loss to call ``backward()`` on: scaled by the GradScaler with mixed precision, else as it is.

        Args:
            loss: the unscaled loss.
        """
        yield loss if self._scaler is None else self._scaler.scale(loss)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """The optimizer's step (through the GradScaler, then its update, with mixed precision).

        Args:
            closure: re-evaluates the model and returns the loss (optional for most optimizers; not with a scaler).
        """
        if self._scaler is None:
            return self._optimizer.step(closure=closure)
        result = self._scaler.step(self._optimizer)
        self._scaler.update()
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The optimizer's ``zero_grad``."""
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's ``state_dict``."""
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The optimizer's ``load_state_dict``."""
        self._optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """The optimizer's ``add_param_group``."""
        self._optimizer.add_param_group(param_group)

    def __getattr__(self, attr: str) -> Any:
        if attr == "_optimizer":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self._optimizer, attr)

    def __repr__(self) -> str:
        return repr(self._optimizer)


# -- batches ----------------------------------------------------------------------------------------------------------


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if HAS_NUMPY and isinstance(value, np.ndarray):
        return torch.as_tensor(value)
    return None


def _label_keys(batch: Mapping[str, Any]) -> list[str]:
    # delira's predict: the prepared batch's entries whose key holds neither "data" nor "img", in sorted key order.
    return sorted(k for k, v in batch.items() if "data" not in k and "img" not in k and isinstance(v, torch.Tensor))


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"a batch should be a dict with a 'data' entry and label entries (delira's convention), "
            f"got {type(batch).__name__}; return dicts from your dataset, e.g. {{'data': x, 'label': y}}"
        )
    if "data" not in batch:
        raise KeyError(f"a batch should have a 'data' entry (delira's convention), got keys {list(batch)}")


class _Prepare:
    """A raw batch as the step gets it: ``network.prepare_batch(batch, input_device, output_device)`` as in delira.

    A network without delira's ``prepare_batch`` gets hotloop's: ``"data"`` to the input device, every other tensor
    or NumPy entry to the output device (dtypes kept), other entries (file names, meta data) left out. delira's
    ``prepare_batch`` may consume its argument (``batch.pop("data")``), so it gets a shallow copy: a re-iterable of
    stored batches is not emptied by the first epoch.
    """

    def __init__(self, network_prepare: Callable | None, input_device: Any, output_device: Any, non_blocking: bool):
        self.network_prepare = network_prepare
        self.input_device = input_device
        self.output_device = output_device
        self.non_blocking = non_blocking

    def __call__(self, batch: Any) -> Any:
        if self.network_prepare is not None:
            return self.network_prepare(
                dict(batch) if isinstance(batch, Mapping) else batch, self.input_device, self.output_device
            )
        _check_batch(batch)
        out: dict[str, Any] = {}
        for key, value in batch.items():
            tensor = _as_tensor(value)
            if tensor is None:
                continue
            device = self.input_device if key == "data" else self.output_device
            out[key] = tensor.to(device, non_blocking=self.non_blocking)
        if "data" not in out:
            raise TypeError(f"batch['data'] should be a tensor or a NumPy array, got {type(batch['data']).__name__}")
        return out


class _StepBatch:
    """``prepare_batch`` of hotloop's step: ``(batch["data"], labels)`` of a prepared batch (labels: the other
    tensors, in key order); with ``prepare``, the raw batch is prepared first."""

    def __init__(self, prepare: _Prepare | None) -> None:
        self.prepare = prepare

    def __call__(self, batch: Any, device: Any = None, non_blocking: bool = False) -> tuple[Any, tuple]:
        if self.prepare is not None:
            batch = self.prepare(batch)
        _check_batch(batch)
        labels = tuple(v for k, v in batch.items() if k != "data" and isinstance(v, torch.Tensor))
        return batch["data"], labels


class _SummedCriterions:
    """The training loss: the sum of ``criterion(preds, *labels)`` over all criterions (delira's default closure)."""

    def __init__(self, criterions: Mapping[str, Callable]) -> None:
        self.criterions = criterions

    def __call__(self, y_pred: Any, y: tuple) -> torch.Tensor:
        total: Any = 0
        for fn in self.criterions.values():
            total = total + fn(y_pred, *y)
        return total


class _EvalValues:
    """Output of hotloop's evaluation step, as delira's closure returns it without optimizers:
    ``({"val_<metric>": value}, {"val_<criterion>": value}, [preds])``."""

    def __init__(self, criterions: Mapping[str, Callable], metrics: Mapping[str, Callable]) -> None:
        self.criterions = criterions
        self.metrics = metrics

    def __call__(self, x: Any, y: tuple, y_pred: Any) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        preds = list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]
        if not y:  # no labels: predictions only, as delira's closure skips losses and metrics
            return {}, {}, preds
        metric_vals = {f"val_{k}": fn(y_pred, *y) for k, fn in self.metrics.items()}
        loss_vals = {f"val_{k}": fn(y_pred, *y).detach() for k, fn in self.criterions.items()}
        return metric_vals, loss_vals, preds


class _StepCounter:
    """delira's ``batch_nr``: the index of the iteration within its epoch (an integer test per iteration)."""

    __slots__ = ("epoch", "first")

    def __init__(self) -> None:
        self.epoch = -1
        self.first = 0

    def __call__(self, state: Any) -> int:
        if state.epoch != self.epoch:
            self.epoch, self.first = state.epoch, state.iteration
        return state.iteration - self.first


class _ClosureTrainStep:
    """The training step of a network with delira's ``closure``, called as delira's trainer calls it.

    ``closure(module, network.prepare_batch(batch, ...), optimizers=trainer.optimizers,
    criterions=trainer.criterions, metrics=trainer.metrics, fold=trainer.fold, batch_nr=...)``, under
    ``torch.autocast`` with mixed precision; its return value is the iteration's output. The trainer is held weakly
    (the engine is the trainer's attribute).
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = weakref.ref(trainer)
        self.batch_nr = _StepCounter()

    def __call__(self, engine: Engine, batch: Any) -> Any:
        trainer: Any = self.trainer()
        data_dict = trainer._prepare(batch)
        with trainer._autocast():
            return trainer._closure(
                trainer.module,
                data_dict,
                optimizers=trainer.optimizers,
                criterions=trainer.criterions,
                metrics=trainer.metrics,
                fold=trainer.fold,
                batch_nr=self.batch_nr(engine.state),
            )


class _ClosureEvalStep:
    """The prediction step with delira's ``closure``: ``closure(module, batch, optimizers={}, criterions=...,
    metrics=..., fold=...)`` on a prepared (and possibly stacked) batch; returns ``(metrics, losses, preds)``."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = weakref.ref(trainer)

    def __call__(self, engine: Engine, batch: Any) -> Any:
        trainer: Any = self.trainer()
        with trainer._autocast():
            return trainer._closure(
                trainer.module,
                batch,
                optimizers={},
                criterions=trainer.criterions,
                metrics=trainer.metrics,
                fold=trainer.fold,
            )


def _cat_values(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([v.reshape(1) if v.dim() == 0 else v for v in values])
    if HAS_NUMPY and isinstance(first, np.ndarray):
        return np.concatenate([np.atleast_1d(v) for v in values])
    if isinstance(first, (list, tuple)):
        return [e for v in values for e in v]
    return values


def _stack(group: list[Any]) -> dict[str, Any]:
    # delira's predict: the prepared batches of a group concatenated key by key (torch.cat).
    merged: dict[str, list[Any]] = {}
    for batch in group:
        if not isinstance(batch, Mapping):
            raise TypeError(f"predict(batch_size=...) stacks dict batches, got {type(batch).__name__}")
        for key, value in batch.items():
            merged.setdefault(key, []).append(value)
    return {k: _cat_values(v) for k, v in merged.items()}


class _Prepared:
    """The batches of ``data``, each prepared (``_Prepare``) as it is read: what delira's predict forwards."""

    def __init__(self, data: Iterable, prepare: _Prepare) -> None:
        self.data = data
        self.prepare = prepare

    def __iter__(self) -> Iterator[Any]:
        prepare = self.prepare
        return (prepare(batch) for batch in self.data)


class _Stacked:
    """delira's artificial batch size: ``batch_size`` consecutive batches concatenated along dim 0 (the last group
    may be smaller, so no sample is dropped)."""

    def __init__(self, data: Iterable, batch_size: int) -> None:
        self.data = data
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        group: list[Any] = []
        for batch in self.data:
            group.append(batch)
            if len(group) == self.batch_size:
                yield _stack(group)
                group = []
        if group:
            yield _stack(group)


def _accepts_seed(get_batchgen: Callable) -> bool:
    try:
        params = inspect.signature(get_batchgen).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "seed" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _finish(batchgen: Any) -> None:
    finish = getattr(batchgen, "_finish", None)  # batchgenerators' MultiThreadedAugmenter stops its workers
    if callable(finish):
        finish()


def _finishing(batchgen: Any) -> Iterator[Any]:
    # delira's loops call batchgen._finish() after their last batch. The engine may stop reading at a known epoch
    # length instead of at the end of the generator, so the generator is finished when it is closed too.
    try:
        yield from batchgen
    finally:
        _finish(batchgen)


class _DataManagerBatches:
    """A delira data manager as a re-iterable: each ``iter()`` asks for a new batch generator, seeded with the epoch
    when ``seed_fn`` is given and ``get_batchgen`` takes a seed."""

    def __init__(self, datamgr: Any, seed_fn: Callable[[], int] | None) -> None:
        self.datamgr = datamgr
        self.seed_fn = seed_fn if _accepts_seed(datamgr.get_batchgen) else None

    def __iter__(self) -> Iterator[Any]:
        if self.seed_fn is None:
            return _finishing(self.datamgr.get_batchgen())
        return _finishing(self.datamgr.get_batchgen(seed=self.seed_fn()))


def _as_batches(data: Any, name: str, seed_fn: Callable[[], int] | None = None) -> Iterable:
    if callable(getattr(data, "get_batchgen", None)):
        return _DataManagerBatches(data, seed_fn)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        return data
    raise TypeError(
        f"{name} should be a DataLoader, an iterable of dict batches or an object with get_batchgen() "
        f"(a delira data manager), got {type(data).__name__}"
    )


def _to_host_async(t: torch.Tensor) -> torch.Tensor:
    # Sync-free: a device tensor is copied into pinned host memory without waiting; predict synchronises once at
    # the end, before the arrays are read.
    t = t.detach()
    if t.device.type != "cuda":
        return t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return out.copy_(t, non_blocking=True)


def _host_outputs(preds: Any) -> Any:
    if isinstance(preds, torch.Tensor):
        return [_to_host_async(preds)]  # one output
    if isinstance(preds, Mapping):
        return {k: _to_host_async(v) for k, v in preds.items()}
    return [_to_host_async(p) for p in preds]


def _rows(chunks: list[torch.Tensor]) -> Any:
    # delira: np.vstack of the per-pass arrays, i.e. concatenated along dim 0 for outputs of 2 or more dims. A 1-d
    # output is concatenated too (one entry per sample), where vstack would stack the passes as rows.
    return np.concatenate([np.atleast_1d(c.numpy()) for c in chunks])


class _PredictionCollector:
    """Collects one ``predict`` run as delira's predict does, without host syncs until the end.

    Per forward pass: the predictions (one array per output), the labels (the prepared batch's entries whose key holds
    neither ``"data"`` nor ``"img"``, sorted by key) and the sums of the metric and loss values; the means are the
    sums divided by the number of forward passes, and stay tensors (delira's ``val.detach()`` sums).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.preds: list[Any] = []
        self.labels: list[list[torch.Tensor]] = []
        self.metric_sums: dict[str, Any] = {}
        self.loss_sums: dict[str, Any] = {}
        self.passes = 0

    def __call__(self, engine: Engine) -> None:
        state: Any = engine.state  # Ignite types output/batch narrowly
        metric_vals, loss_vals, preds = state.output
        batch = state.batch  # the prepared batch the step got (a closure may have popped "data" from it)
        self.preds.append(_host_outputs(preds))
        self.labels.append([_to_host_async(batch[k]) for k in _label_keys(batch)])
        _accumulate(self.metric_sums, metric_vals)
        _accumulate(self.loss_sums, loss_vals)
        self.passes += 1

    def result(self) -> tuple[Any, list[Any], dict[str, Any]]:
        _require_numpy()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the one sync of a predict run: the async host copies must have landed
        labels = [_rows(list(chunks)) for chunks in zip(*self.labels)]
        first = self.preds[0] if self.preds else []
        if isinstance(first, Mapping):
            preds: Any = {k: _rows([chunk[k] for chunk in self.preds]) for k in first}
        else:
            preds = [_rows(list(chunks)) for chunks in zip(*self.preds)]
        means = {k: v / self.passes for k, v in {**self.metric_sums, **self.loss_sums}.items()}
        return preds, labels, means


def _accumulate(sums: dict[str, Any], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            value = value.detach()
        sums[key] = sums[key] + value if key in sums else value


# -- argument checks --------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} should be an integer >= {minimum}, got {value}")
    return value


def _check_mapping(name: str, value: Any, of_callables: bool = False) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} should be a dict, got {type(value).__name__} ({value!r})")
    if of_callables:
        bad = [k for k, v in value.items() if not callable(v)]
        if bad:
            raise TypeError(f"{name} should map names to callables fn(preds, *labels); not callable: {bad}")
    return value


def _check_mode(val_score_mode: Any) -> None:
    if val_score_mode not in _MODES:
        raise ValueError(f"Invalid Mode: {val_score_mode!r}. Mode must be in {list(_MODES)}")


def _check_gpu_ids(gpu_ids: Any) -> list[int]:
    if isinstance(gpu_ids, (str, bytes)) or not isinstance(gpu_ids, Iterable):
        raise TypeError(f"gpu_ids should be a list of GPU indices (empty: CPU), got {gpu_ids!r}")
    ids = list(gpu_ids)
    for i in ids:
        _check_int("every entry of gpu_ids", i, 0)
    if len(set(ids)) != len(ids):
        raise ValueError(f"gpu_ids should not repeat a GPU, got {ids}")
    return ids


def _check_mixed_precision(mixed_precision: Any, kwargs: Any) -> None:
    if not isinstance(mixed_precision, bool):
        raise TypeError(f"mixed_precision should be True or False, got {mixed_precision!r}")
    _check_mapping("mixed_precision_kwargs", kwargs)
    unknown = sorted(set(kwargs) - set(_APEX_DEFAULTS) - _SCALER_KEYS)
    if unknown:
        raise ValueError(
            f"mixed_precision_kwargs has unknown keys {unknown}; accepted: apex's {sorted(_APEX_DEFAULTS)} (ignored) "
            f"and torch.amp.GradScaler's {sorted(_SCALER_KEYS)}"
        )


def _check_save_path(save_path: Any) -> str:
    if not isinstance(save_path, (str, os.PathLike)):
        raise TypeError(f"save_path should be a directory path (str or os.PathLike), got {save_path!r}")
    path = os.fspath(save_path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"save_path should be a directory, but {path!r} is a file")
    return path


def _weak_handler(trainer: Any, method: str) -> Callable[[Engine], None]:
    # The engine is the trainer's attribute: a handler holding the trainer strongly would make a reference cycle.
    ref = weakref.ref(trainer)

    def handler(engine: Engine) -> None:
        getattr(ref(), method)(engine)

    handler.__name__ = handler.__qualname__ = method
    return handler


# -- trainers ---------------------------------------------------------------------------------------------------------


class AbstractNetworkTrainer:
    """delira's abstract API for network trainers: callbacks, fold, state updates and validation-score comparison.

    Subclasses implement ``_setup``, ``train``, ``predict``, ``save_state``, ``load_state``,
    ``_train_single_epoch`` and the ``_at_*`` hooks; here they raise ``NotImplementedError``.

    Args:
        fold: the current fold (an integer).
        callbacks: callbacks to register (see :meth:`register_callback`).

    Raises:
        TypeError: ``fold`` is not an integer, or ``callbacks`` is not an iterable.
        InvalidCallbackError: a callback is not one (a ``TypeError`` and an ``AssertionError``).
    """

    def __init__(self, fold: int = 0, callbacks: Iterable = ()) -> None:
        self._callbacks: list[Any] = []
        self.fold = fold
        self.start_epoch = 1
        self.stop_training = False
        if not isinstance(callbacks, Iterable):
            raise TypeError(f"callbacks should be a list of callbacks, got {callbacks!r}")
        for callback in callbacks:
            self.register_callback(callback)

    # -- abstract ----------------------------------------------------------------------------------------------------

    def _setup(self, *args: Any, **kwargs: Any) -> None:
        """Defines the actual trainer setup.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_training_begin(self, *args: Any, **kwargs: Any) -> None:
        """Defines the behaviour at the beginning of the training.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_training_end(self, *args: Any, **kwargs: Any) -> Any:
        """Defines the behaviour at the end of the training.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_epoch_begin(self, *args: Any, **kwargs: Any) -> None:
        """Defines the behaviour at the beginning of each epoch.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        """Defines the behaviour at the end of each epoch.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _train_single_epoch(self, batchgen: Any, epoch: int) -> None:
        """Defines a routine to train a single epoch.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def train(
        self,
        num_epochs: int,
        datamgr_train: Any,
        datamgr_valid: Any = None,
        val_score_key: str | None = None,
        val_score_mode: str = "highest",
    ) -> Any:
        """Defines a routine to train a specified number of epochs.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def predict(self, batchgen: Any, batchsize: int | None = None) -> Any:
        """Defines a routine to predict data obtained from a batch generator (``batchsize``: delira's spelling here).

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def save_state(self, file_name: str, *args: Any, **kwargs: Any) -> None:
        """Saves the current state.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    @staticmethod
    def load_state(file_name: str, *args: Any, **kwargs: Any) -> dict:
        """Loads a state from file.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    # -- implemented -------------------------------------------------------------------------------------------------

    def update_state(self, file_name: str, *args: Any, **kwargs: Any) -> AbstractNetworkTrainer:
        """Update the internal state from a state loaded from ``file_name``.

        Args:
            file_name: the file containing the state.
            *args: passed to :meth:`load_state`.
            **kwargs: passed to :meth:`load_state`.

        Returns:
            the trainer, with its state modified.
        """
        return self._update_state(self.load_state(file_name, *args, **kwargs))

    def _update_state(self, new_state: Mapping[str, Any] | None) -> AbstractNetworkTrainer:
        """Set the trainer's attributes from ``new_state`` (keys of the form ``__name__`` are skipped).

        Args:
            new_state: attribute names and values; ``None`` (a callback that returned nothing) changes nothing.

        Returns:
            the trainer, with its state modified.

        Raises:
            TypeError: ``new_state`` is not a dict.
        """
        if new_state is None:
            return self
        if not isinstance(new_state, Mapping):
            raise TypeError(f"a new state should be a dict of attribute names and values, got {new_state!r}")
        for key, value in new_state.items():
            if not (key.startswith("__") and key.endswith("__")):
                setattr(self, key, value)
        return self

    @staticmethod
    def _is_better_val_scores(old_val_score: Any, new_val_score: Any, mode: str = "highest") -> Any:
        """Check whether the new validation score is better than the old one with respect to ``mode``.

        Args:
            old_val_score: old validation score.
            new_val_score: new validation score.
            mode: ``"highest"`` or ``"lowest"``: which score is optimal.

        Returns:
            True if the new score is better, False otherwise.

        Raises:
            ValueError: ``mode`` is not ``"highest"`` or ``"lowest"``.
        """
        if mode == "highest":
            return new_val_score > old_val_score  # a bool, or a 0-d bool tensor for tensor scores, as in delira
        if mode == "lowest":
            return new_val_score < old_val_score
        raise ValueError(f"Invalid Mode: {mode!r}. Mode must be in {list(_MODES)}")

    @property
    def fold(self) -> int:
        """The current fold.

        Raises:
            TypeError: on setting a value that is not an integer (or a string of one).
        """
        return self._fold

    @fold.setter
    def fold(self, fold: Any) -> None:
        if isinstance(fold, bool):
            raise TypeError(f"fold should be an integer, got {fold!r}")
        try:
            self._fold = operator.index(fold) if not isinstance(fold, str) else int(fold)
        except (TypeError, ValueError):
            raise TypeError(f"fold should be an integer, got {fold!r} ({type(fold).__name__})") from None

    def register_callback(self, callback: Any) -> None:
        """Register a callback.

        Args:
            callback: an :class:`AbstractCallback`, or any object with both ``at_epoch_begin`` and ``at_epoch_end``.

        Raises:
            InvalidCallbackError: ``callback`` is neither (a ``TypeError`` and an ``AssertionError``, which is what
                delira raised).
        """
        valid = isinstance(callback, AbstractCallback) or (
            callable(getattr(callback, "at_epoch_begin", None)) and callable(getattr(callback, "at_epoch_end", None))
        )
        if not valid:
            raise InvalidCallbackError(
                "Given callback is not valid; Must be instance of AbstractCallback or provide functions "
                f"'at_epoch_begin' and 'at_epoch_end', got {callback!r}"
            )
        self._callbacks.append(callback)


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


class PyTorchNetworkTrainer(AbstractNetworkTrainer):
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
        train_step, eval_step = self._closure_steps() if self._closure is not None else self._hotloop_steps()
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
        self._options.attach(self.engine, self.input_device)
        dataclasses.replace(self._options, on_nonfinite=None).attach(self.eval_engine, self.input_device)

    def _closure_steps(self) -> tuple[Callable, Callable]:
        return _ClosureTrainStep(self), _ClosureEvalStep(self)

    def _hotloop_steps(self) -> tuple[Callable, Callable]:
        common: dict[str, Any] = {
            "device": self.input_device,
            "non_blocking": self.use_gpu,
            "model_transform": identity,
            "model_fn": call_model,
            "amp": self.mixed_precision,
            "options": self._options,
        }
        train_step = build_train_step(
            self.module,
            self._step_optimizer(),
            _SummedCriterions(self.criterions),
            prepare_batch=_StepBatch(self._prepare),
            output_transform=train_output(loss_item, self._options),
            gradient_accumulation_steps=1,
            scaler=self.scaler,
            **common,
        )
        eval_step = build_eval_step(
            self.module,
            prepare_batch=_StepBatch(None),  # predict prepares (and stacks) the batches before the step
            output_transform=_EvalValues(self.criterions, self.metrics),
            **common,
        )
        return train_step, eval_step

    def _step_optimizer(self) -> torch.optim.Optimizer:
        if "default" in self.optimizers:
            return self.optimizers["default"]._optimizer
        if len(self.optimizers) > 1:
            raise ValueError(
                f"optim_fn returned optimizers {sorted(self.optimizers)} without a 'default' one; hotloop's step "
                "(delira's default closure) steps optimizers['default']"
            )
        return next(iter(self.optimizers.values()))._optimizer

    def _autocast(self) -> Any:
        return Autocast.cuda(self.mixed_precision, dtype=torch.float16)()

    def _make_save_path(self) -> None:
        if os.path.isdir(self.save_path):
            _logger.warning("Save Path already exists. Saved Models may be overwritten")
        else:
            os.makedirs(self.save_path)

    def _load_latest_state(self) -> None:
        """delira's resume: load the ``checkpoint_epoch_{N}.pth`` of the highest ``N`` found in ``save_path``.

        The files considered are those whose name starts with ``checkpoint`` and does not end with ``_best.pth``;
        ``N`` is the part after the last ``_`` (a name without a number there is skipped, where delira raised).
        A checkpoint without the trainer's keys is skipped with delira's warning.
        """
        epochs = []
        for name in os.listdir(self.save_path):
            if not name.startswith("checkpoint") or name.endswith("_best.pth"):
                continue
            if not os.path.isfile(os.path.join(self.save_path, name)):
                continue
            try:
                epochs.append(int(name.rsplit("_", 1)[-1].rsplit(".", 1)[0]))
            except ValueError:
                continue
        if not epochs:
            return
        path = os.path.join(self.save_path, f"checkpoint_epoch_{max(epochs)}.pth")
        _logger.info("Attempting to load state from previous training from %s", path)
        try:
            self.update_state(path)
        except KeyError:
            _logger.warning("Previous State could not be loaded, although it exists. Training will be restarted")

    def _set_extra_attributes(self, kwargs: Mapping[str, Any]) -> None:
        clashes = sorted(k for k in kwargs if hasattr(self, k))
        if clashes:
            raise ValueError(
                f"keyword arguments {clashes} would overwrite the trainer's own attributes; rename them "
                "(unknown keyword arguments become trainer attributes, as in delira)"
            )
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def _network(self) -> torch.nn.Module:
        """The network itself (``self.module`` without its ``DataParallel`` wrapper)."""
        module = self.module
        return module.module if isinstance(module, torch.nn.DataParallel) else module

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

    def save_state(self, file_name: str | os.PathLike, epoch: int, **kwargs: Any) -> None:
        """Save the current state to ``file_name``, as ``delira.io.torch.save_checkpoint`` did.

        Args:
            file_name: the file (used as it is).
            epoch: the current epoch, saved with the state (None is saved as 0).
            **kwargs: passed to ``torch.save``.
        """
        state: dict[str, Any] = {
            "optimizer": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "model": self._network.state_dict(),
            "epoch": 0 if epoch is None else epoch,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        torch.save(state, os.fspath(file_name), **kwargs)

    @staticmethod
    def load_state(file_name: str | os.PathLike, **kwargs: Any) -> dict:
        """Load a state from ``file_name``, as ``delira.io.torch.load_checkpoint`` did.

        Args:
            file_name: the file.
            **kwargs: passed to ``torch.load``.

        Returns:
            the state, ``{"model", "optimizer", "epoch"}`` (and ``"scaler"``); for a file without those keys, its
            ``"state_dict"`` entry.

        Raises:
            TypeError: the file does not hold a dict.
            KeyError: it holds neither the trainer's keys nor a ``"state_dict"``.
        """
        state = torch.load(os.fspath(file_name), **kwargs)
        if not isinstance(state, dict):
            raise TypeError(f"{file_name} does not hold a trainer state (a dict), got {type(state).__name__}")
        if not all(key in state for key in ("model", "optimizer", "epoch")):
            return state["state_dict"]
        return state

    def update_state(self, file_name: str | os.PathLike, *args: Any, **kwargs: Any) -> PyTorchNetworkTrainer:
        """Update the internal state from a state loaded from ``file_name`` (loaded onto the CPU by default).

        Args:
            file_name: the checkpoint.
            *args: passed to :meth:`load_state`.
            **kwargs: passed to :meth:`load_state` (``map_location`` defaults to ``"cpu"``: the tensors are copied
                into the trainer's own, wherever they live).

        Returns:
            the trainer, with its state modified.
        """
        kwargs.setdefault("map_location", "cpu")
        return self._update_state(self.load_state(file_name, *args, **kwargs))

    def _update_state(self, new_state: Mapping[str, Any] | None) -> PyTorchNetworkTrainer:
        """Update the state from a given new state.

        ``"model"`` is loaded into the network, a non-empty ``"optimizer"`` into the optimizers (by key),
        ``"scaler"`` into the GradScaler, ``"epoch"`` becomes ``start_epoch`` (delira's: training resumes with the
        saved epoch); any other key becomes an attribute.

        Args:
            new_state: the new state.

        Returns:
            the trainer, with its state modified.
        """
        if new_state is None:
            return self
        if not isinstance(new_state, Mapping):
            raise TypeError(f"a new state should be a dict, got {new_state!r}")
        rest = dict(new_state)
        if "model" in rest:
            self._network.load_state_dict(rest.pop("model"))
        optim_state = rest.pop("optimizer", None)
        if optim_state:
            for key, optimizer in self.optimizers.items():
                optimizer.load_state_dict(optim_state[key])
        scaler_state = rest.pop("scaler", None)
        if scaler_state and self.scaler is not None:
            self.scaler.load_state_dict(scaler_state)
        if "epoch" in rest:
            self.start_epoch = rest.pop("epoch")
        super()._update_state(rest)
        return self
