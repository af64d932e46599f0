"""Third-party log lines that hotloop's commands filter out, each named exactly, each with the reason.

Only ``hotloop demo`` and ``hotloop bench`` call :func:`quiet_third_party_logs`: a program that imports hotloop keeps
its logging as it configured it.
"""

from __future__ import annotations

import logging

__all__ = ["quiet_third_party_logs"]

# torch.compile of a step that calls ``optimizer.zero_grad()``: torch.optim wraps zero_grad in a profiler
# ``record_function`` that dynamo cannot trace, and dynamo logs once, as a warning, that it ignores it
# ("W1203 ... Profiler record function <class 'torch.autograd.profiler.record_function'> will be ignored", torch 2.13).
# It is about torch's own code and changes nothing for the user. Remove when torch stops logging it.
_DYNAMO_LOGGER = "torch._dynamo.variables.ctx_manager"
_DYNAMO_MESSAGE = "Profiler record function"


class _DropMessage(logging.Filter):
    """Drops the records whose message template starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_third_party_logs() -> None:
    """Filters the third-party log lines listed in this module (idempotent)."""
    logger = logging.getLogger(_DYNAMO_LOGGER)
    if not any(isinstance(f, _DropMessage) and f.prefix == _DYNAMO_MESSAGE for f in logger.filters):
        logger.addFilter(_DropMessage(_DYNAMO_MESSAGE))
