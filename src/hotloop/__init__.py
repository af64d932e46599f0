"""hotloop: PyTorch-Ignite's and MONAI's training and evaluation API on a loop that costs what a bare loop costs.

Change one import::

    from ignite.engine import Engine, Events      # before
    from hotloop import Engine, Events            # after
"""

from hotloop import data
from hotloop.collate import decollate_batch
from hotloop.data import DALILoader, image_folder_loader, volume_loader
from hotloop.engine import (
    CallableEventWithFilter,
    DeterministicEngine,
    Engine,
    EventEnum,
    Events,
    EventsList,
    RemovableEventHandle,
    ReproducibleBatchSampler,
    State,
    keep_random_state,
    update_dataloader,
)
from hotloop.reliability import NonFiniteGuard, PreemptionHandler, RNGState, resume_from_latest
from hotloop.supervised import (
    create_supervised_evaluator,
    create_supervised_trainer,
    supervised_evaluation_step,
    supervised_evaluation_step_amp,
    supervised_training_step,
    supervised_training_step_amp,
)

__version__ = "0.1.0"

__all__ = [
    "CallableEventWithFilter",
    "DALILoader",
    "DeterministicEngine",
    "Engine",
    "EventEnum",
    "Events",
    "EventsList",
    "NonFiniteGuard",
    "PreemptionHandler",
    "RNGState",
    "RemovableEventHandle",
    "ReproducibleBatchSampler",
    "State",
    "__version__",
    "create_supervised_evaluator",
    "create_supervised_trainer",
    "data",
    "decollate_batch",
    "image_folder_loader",
    "keep_random_state",
    "supervised_evaluation_step",
    "supervised_evaluation_step_amp",
    "supervised_training_step",
    "supervised_training_step_amp",
    "resume_from_latest",
    "update_dataloader",
    "volume_loader",
]
