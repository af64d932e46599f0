"""hotloop: PyTorch-Ignite's and MONAI's training and evaluation API on a loop that costs what a bare loop costs.

Change one import::

    from ignite.engine import Engine, Events      # before
    from hotloop import Engine, Events            # after
"""

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

__version__ = "0.1.0"

__all__ = [
    "CallableEventWithFilter",
    "DeterministicEngine",
    "Engine",
    "EventEnum",
    "Events",
    "EventsList",
    "RemovableEventHandle",
    "ReproducibleBatchSampler",
    "State",
    "__version__",
    "keep_random_state",
    "update_dataloader",
]
