"""MONAI's engine workflows (``monai.engines``) on hotloop's fast loop; MONAI itself is optional.

Change one import::

    from monai.engines import SupervisedEvaluator, SupervisedTrainer      # before
    from hotloop.workflows import SupervisedEvaluator, SupervisedTrainer  # after

``IterationEvents`` is MONAI's own class when MONAI is installed (it is imported on first read, not with this
package), hotloop's copy otherwise. See ``docs/migration-monai.md``.
"""

from typing import Any

from hotloop.workflows._monai import HAS_MONAI
from hotloop.workflows.evaluator import EnsembleEvaluator, Evaluator, SupervisedEvaluator
from hotloop.workflows.multi_gpu import create_multigpu_supervised_evaluator, create_multigpu_supervised_trainer
from hotloop.workflows.trainer import GanTrainer, SupervisedTrainer, Trainer
from hotloop.workflows.utils import (
    CommonKeys,
    EngineStatsKeys,
    ForwardMode,
    GanKeys,
    PrepareBatch,
    PrepareBatchDefault,
    PrepareBatchExtraInput,
    default_make_latent,
    default_metric_cmp_fn,
    default_prepare_batch,
    engine_apply_transform,
    get_devices_spec,
    iteration_events,
)
from hotloop.workflows.workflow import Workflow

__all__ = [
    "HAS_MONAI",
    "CommonKeys",
    "EngineStatsKeys",
    "EnsembleEvaluator",
    "Evaluator",
    "ForwardMode",
    "GanKeys",
    "GanTrainer",
    "IterationEvents",  # noqa: F822 - resolved on first read by the module __getattr__
    "PrepareBatch",
    "PrepareBatchDefault",
    "PrepareBatchExtraInput",
    "SupervisedEvaluator",
    "SupervisedTrainer",
    "Trainer",
    "Workflow",
    "create_multigpu_supervised_evaluator",
    "create_multigpu_supervised_trainer",
    "default_make_latent",
    "default_metric_cmp_fn",
    "default_prepare_batch",
    "engine_apply_transform",
    "get_devices_spec",
]


def __getattr__(name: str) -> Any:
    # ``IterationEvents`` is resolved on first read so that importing this package never imports MONAI.
    if name == "IterationEvents":
        return iteration_events()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
