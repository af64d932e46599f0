"""The engine layer: :class:`Engine`, :class:`DeterministicEngine`, and Ignite's event and state objects."""

from ignite.engine.events import CallableEventWithFilter, EventEnum, Events, EventsList, RemovableEventHandle, State

from hotloop.engine.deterministic import (
    DeterministicEngine,
    ReproducibleBatchSampler,
    keep_random_state,
    update_dataloader,
)
from hotloop.engine.engine import Engine

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
    "keep_random_state",
    "update_dataloader",
]
