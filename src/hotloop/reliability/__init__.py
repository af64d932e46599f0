"""Reliability: resuming from the newest valid checkpoint, preemption-safe stops, non-finite loss guards."""

from hotloop.reliability.checkpoint import RNGState, find_checkpoints, resume_from_latest
from hotloop.reliability.nonfinite import NONFINITE_ACTIONS, NonFiniteGuard
from hotloop.reliability.preemption import PreemptionHandler

__all__ = [
    "NONFINITE_ACTIONS",
    "NonFiniteGuard",
    "PreemptionHandler",
    "RNGState",
    "find_checkpoints",
    "resume_from_latest",
]
