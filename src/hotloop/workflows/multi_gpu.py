"""MONAI's multi-GPU factories (``create_multigpu_supervised_trainer`` / ``_evaluator``) on hotloop's
``create_supervised_*``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import _prepare_batch
from ignite.metrics import Metric
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torch.optim.optimizer import Optimizer

from hotloop.engine import Engine
from hotloop.supervised import create_supervised_evaluator, create_supervised_trainer
from hotloop.workflows.utils import get_devices_spec

__all__ = ["create_multigpu_supervised_evaluator", "create_multigpu_supervised_trainer"]


def _default_transform(_x: torch.Tensor, _y: torch.Tensor, _y_pred: torch.Tensor, loss: torch.Tensor) -> float:
    return loss.item()


def _default_eval_transform(x: torch.Tensor, y: torch.Tensor, y_pred: torch.Tensor) -> tuple[torch.Tensor, Any]:
    return y_pred, y


def _parallel(net: torch.nn.Module, devices: list[torch.device], distributed: bool, what: str) -> torch.nn.Module:
    if distributed:
        if len(devices) > 1:
            raise ValueError(f"for distributed {what}, `devices` must contain only 1 GPU or CPU, but got {devices}.")
        return DistributedDataParallel(net, device_ids=devices)
    if len(devices) > 1:
        return DataParallel(net)
    return net


def create_multigpu_supervised_trainer(
    net: torch.nn.Module,
    optimizer: Optimizer,
    loss_fn: Callable,
    devices: Sequence[str | torch.device] | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    output_transform: Callable = _default_transform,
    distributed: bool = False,
) -> Engine:
    """A supervised trainer on one or several devices (``DataParallel``, or ``DistributedDataParallel``).

    Args:
        net: the network to train.
        optimizer: its optimizer.
        loss_fn: the loss function.
        devices: None for every CUDA device, ``[]`` for the CPU, or a list of devices.
        non_blocking: asynchronous host-to-device copies.
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)``.
        output_transform: ``(x, y, y_pred, loss) -> state.output``; ``loss.item()`` by default.
        distributed: wrap ``net`` in ``DistributedDataParallel`` (one device per rank).

    Returns:
        a trainer engine.

    Raises:
        ValueError: ``distributed`` with more than one device.
        RuntimeError: ``devices`` is None and there is no CUDA device.
    """
    devices_ = get_devices_spec(devices)
    net = _parallel(net, devices_, distributed, "training")
    return create_supervised_trainer(
        net,
        optimizer,
        loss_fn,
        devices_[0],
        non_blocking,
        prepare_batch,
        output_transform=output_transform,
    )


def create_multigpu_supervised_evaluator(
    net: torch.nn.Module,
    metrics: dict[str, Metric] | None = None,
    devices: Sequence[str | torch.device] | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable = _prepare_batch,
    output_transform: Callable = _default_eval_transform,
    distributed: bool = False,
) -> Engine:
    """A supervised evaluator on one or several devices (``DataParallel``, or ``DistributedDataParallel``).

    Args:
        net: the network to evaluate.
        metrics: ``{name: Metric}``.
        devices: None for every CUDA device, ``[]`` for the CPU, or a list of devices.
        non_blocking: asynchronous host-to-device copies.
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)``.
        output_transform: ``(x, y, y_pred) -> state.output``; ``(y_pred, y)`` by default.
        distributed: wrap ``net`` in ``DistributedDataParallel`` (one device per rank).

    Returns:
        an evaluator engine.

    Raises:
        ValueError: ``distributed`` with more than one device.
        RuntimeError: ``devices`` is None and there is no CUDA device.
    """
    devices_ = get_devices_spec(devices)
    net = _parallel(net, devices_, distributed, "evaluation")
    return create_supervised_evaluator(
        net, metrics, devices_[0], non_blocking, prepare_batch, output_transform=output_transform
    )
