"""MONAI's engine utilities (``monai.engines.utils``, ``monai.utils.enums``) without needing MONAI.

The key names are ``str`` enums equal to MONAI's strings, so dict batches made for MONAI work unchanged.
``IterationEvents`` is MONAI's own class when MONAI is installed (MONAI's handlers attach to its members), and
hotloop's copy with the same members and values otherwise.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any, cast

import torch
from ignite.engine import EventEnum

from hotloop.workflows import _monai

__all__ = [
    "CommonKeys",
    "EngineStatsKeys",
    "ForwardMode",
    "GanKeys",
    "IterationEvents",  # noqa: F822 - resolved on first read by the module __getattr__
    "PrepareBatch",
    "PrepareBatchDefault",
    "PrepareBatchExtraInput",
    "default_make_latent",
    "default_metric_cmp_fn",
    "default_prepare_batch",
    "engine_apply_transform",
    "get_devices_spec",
]


class _StrEnum(str, Enum):
    """A ``str`` enum whose members are their values (as ``monai.utils.StrEnum``)."""

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return str(self.value)


class CommonKeys(_StrEnum):
    """Keys of the dict batches and outputs of the supervised workflows; equal to MONAI's ``CommonKeys``."""

    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    LOSS = "loss"
    METADATA = "metadata"


class GanKeys(_StrEnum):
    """Keys of :class:`~hotloop.workflows.GanTrainer`'s outputs; equal to MONAI's ``GanKeys``."""

    REALS = "reals"
    FAKES = "fakes"
    LATENTS = "latents"
    GLOSS = "g_loss"
    DLOSS = "d_loss"


class EngineStatsKeys(_StrEnum):
    """Keys of ``get_stats()``; equal to MONAI's ``EngineStatsKeys``."""

    RANK = "rank"
    CURRENT_ITERATION = "current_iteration"
    CURRENT_EPOCH = "current_epoch"
    TOTAL_EPOCHS = "total_epochs"
    TOTAL_ITERATIONS = "total_iterations"
    BEST_VALIDATION_EPOCH = "best_validation_epoch"
    BEST_VALIDATION_METRIC = "best_validation_metric"


class ForwardMode(_StrEnum):
    """An evaluator's ``mode``; equal to MONAI's ``ForwardMode``."""

    TRAIN = "train"
    EVAL = "eval"


class _IterationEvents(EventEnum):
    """Events fired inside an iteration, MONAI's ``IterationEvents`` (used when MONAI is not installed).

    ``FORWARD_COMPLETED`` follows ``network(image)``, ``LOSS_COMPLETED`` the loss, ``BACKWARD_COMPLETED``
    ``loss.backward()``, ``MODEL_COMPLETED`` all model work of the iteration; ``INNER_ITERATION_STARTED`` and
    ``INNER_ITERATION_COMPLETED`` bracket an inner loop.
    """

    FORWARD_COMPLETED = "forward_completed"
    LOSS_COMPLETED = "loss_completed"
    BACKWARD_COMPLETED = "backward_completed"
    MODEL_COMPLETED = "model_completed"
    INNER_ITERATION_STARTED = "inner_iteration_started"
    INNER_ITERATION_COMPLETED = "inner_iteration_completed"


_IterationEvents.__name__ = _IterationEvents.__qualname__ = "IterationEvents"


@functools.cache
def iteration_events() -> type[_IterationEvents]:
    """The ``IterationEvents`` class the workflows fire: MONAI's when MONAI is installed, hotloop's otherwise."""
    utils = _monai.monai_engines_utils()
    # MONAI's class has the same members; the cast lets the type checker see them.
    return cast(type[_IterationEvents], _IterationEvents if utils is None else utils.IterationEvents)


def __getattr__(name: str) -> Any:
    # ``IterationEvents`` is resolved on first read so that importing hotloop.workflows never imports MONAI.
    if name == "IterationEvents":
        return iteration_events()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_devices_spec(devices: Sequence[torch.device | str] | None = None) -> list[torch.device]:
    """A list of devices: all CUDA devices for None, the CPU for an empty sequence, else ``devices`` as given.

    Args:
        devices: devices to use; None for every CUDA device, ``[]`` for the CPU.

    Returns:
        list of ``torch.device``.

    Raises:
        RuntimeError: ``devices`` is None and no CUDA device is available.

    Examples:
        >>> get_devices_spec([])
        [device(type='cpu')]
    """
    if devices is None:
        found: list[torch.device | str] = [torch.device(f"cuda:{d:d}") for d in range(torch.cuda.device_count())]
        if not found:
            raise RuntimeError("No GPU devices available.")
    elif len(devices) == 0:
        found = [torch.device("cpu")]
    else:
        found = list(devices)
    return [torch.device(d) if isinstance(d, str) else d for d in found]


def _to(value: torch.Tensor, device: Any, non_blocking: bool, kwargs: dict) -> torch.Tensor:
    return value.to(device=device, non_blocking=non_blocking, **kwargs)


def default_prepare_batch(
    batchdata: dict[str, torch.Tensor] | torch.Tensor | Sequence[torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor:
    """The image and label of a batch (a tensor, a pair, or a dict), moved to ``device``: MONAI's function.

    Args:
        batchdata: a tensor (returns it and None), a pair (returns both), or a dict: ``image`` and ``label`` when
            ``label`` holds a tensor, else ``reals`` alone when present, else ``image`` and None.
        device: where to move the returned tensors.
        non_blocking: passed to ``Tensor.to``.
        **kwargs: further arguments for ``Tensor.to``.

    Returns:
        ``(image, label)``, or the ``reals`` tensor.

    Raises:
        AssertionError: ``batchdata`` is a sequence of a length other than 2 (MONAI's exception type).
    """
    if not isinstance(batchdata, dict):
        if isinstance(batchdata, torch.Tensor):
            return _to(batchdata, device, non_blocking, kwargs), None
        if len(batchdata) == 2:
            image, label = batchdata
            return _to(image, device, non_blocking, kwargs), _to(label, device, non_blocking, kwargs)
        raise AssertionError("Default prepare_batch expects a single tensor, a tensor pair, or dictionary input data.")
    if isinstance(batchdata.get(CommonKeys.LABEL), torch.Tensor):
        return (
            _to(batchdata[CommonKeys.IMAGE], device, non_blocking, kwargs),
            _to(batchdata[CommonKeys.LABEL], device, non_blocking, kwargs),
        )
    if GanKeys.REALS in batchdata:
        return _to(batchdata[GanKeys.REALS], device, non_blocking, kwargs)
    return _to(batchdata[CommonKeys.IMAGE], device, non_blocking, kwargs), None


class PrepareBatch(ABC):
    """Interface of a ``prepare_batch`` callable: ``(batchdata, device, non_blocking, **to_kwargs)``."""

    @abstractmethod
    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Return what the workflow's iteration needs from ``batchdata``, moved to ``device``."""
        raise NotImplementedError(f"Subclass {self.__class__.__name__} must implement this method.")


class PrepareBatchDefault(PrepareBatch):
    """:func:`default_prepare_batch` as a :class:`PrepareBatch`."""

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor] | torch.Tensor | Sequence[torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor:
        """Return :func:`default_prepare_batch`'s result."""
        return default_prepare_batch(batchdata, device, non_blocking, **kwargs)


def _ensure_tuple(vals: Any) -> tuple:
    """MONAI's ``ensure_tuple`` for the values the workflows pass it (keys, handlers, networks)."""
    if isinstance(vals, (str, bytes)) or not isinstance(vals, Iterable):
        return (vals,)
    if isinstance(vals, torch.Tensor) and vals.ndim == 0:
        return (vals,)
    return tuple(vals)


class PrepareBatchExtraInput(PrepareBatch):
    """A ``prepare_batch`` that also passes other entries of a dict batch to the network.

    Args:
        extra_keys: a key or keys whose values become extra positional arguments of the network, or a dict
            ``{argument_name: batch_key}`` whose values become keyword arguments.

    Examples:
        >>> prepare = PrepareBatchExtraInput(extra_keys={"mask": "roi"})
    """

    def __init__(self, extra_keys: str | Sequence[str] | dict[str, str]) -> None:
        self.extra_keys = extra_keys

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        """Return ``(image, label, args, kwargs)`` with the extra entries moved to ``device``."""
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)  # type: ignore[misc]

        def get_data(key: str) -> Any:
            data = batchdata[key]
            return _to(data, device, non_blocking, kwargs) if isinstance(data, torch.Tensor) else data

        args_: list[Any] = []
        kwargs_: dict[str, Any] = {}
        if isinstance(self.extra_keys, (str, list, tuple)):
            args_ = [get_data(k) for k in _ensure_tuple(self.extra_keys)]
        elif isinstance(self.extra_keys, dict):
            kwargs_ = {k: get_data(v) for k, v in self.extra_keys.items()}
        return cast(torch.Tensor, image), cast(torch.Tensor, label), tuple(args_), kwargs_


def default_make_latent(
    num_latents: int,
    latent_size: int,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """``num_latents`` random latent codes of size ``latent_size`` (standard normal), moved to ``device``.

    Args:
        num_latents: how many codes (the batch size).
        latent_size: the length of each code.
        device: where to move them.
        non_blocking: passed to ``Tensor.to``.
        **kwargs: further arguments for ``Tensor.to``.

    Returns:
        a ``[num_latents, latent_size]`` tensor.
    """
    return torch.randn(num_latents, latent_size).to(device=device, non_blocking=non_blocking, **kwargs)


def engine_apply_transform(batch: Any, output: Any, transform: Callable[..., dict]) -> tuple[Any, Any]:
    """Apply ``transform`` to an iteration's batch and output, as MONAI's engines do.

    Two dicts are merged for the transform; its result is split back: keys already in ``output``, or not in
    ``batch``, go to ``output``, the others to ``batch``. Otherwise the transform is applied to ``output`` alone.

    Args:
        batch: ``engine.state.batch`` (or one sample of it).
        output: ``engine.state.output`` (or one sample of it).
        transform: the postprocessing transform.

    Returns:
        ``(batch, output)``.

    Raises:
        AssertionError: the transform of a dict did not return a dict (MONAI's exception type).
    """
    if isinstance(batch, dict) and isinstance(output, dict):
        data = dict(batch)
        data.update(output)
        transformed = _monai.apply_transform(transform, data)
        if not isinstance(transformed, dict):
            raise AssertionError("With a dict supplied to apply_transform a single dict return is expected.")
        for k, v in transformed.items():
            # ``batch`` is read-only by convention: keys the transform creates go to ``output``.
            if k in output or k not in batch:
                output[k] = v
            else:
                batch[k] = v
    else:
        output = _monai.apply_transform(transform, output)
    return batch, output


def default_metric_cmp_fn(current_metric: float, prev_best: float) -> bool:
    """Whether ``current_metric`` beats ``prev_best``: greater is better.

    Args:
        current_metric: the metric of this round.
        prev_best: the best metric so far.

    Returns:
        ``current_metric > prev_best``.
    """
    return current_metric > prev_best
