"""``hotloop._third_party``: the commands drop exactly the named third-party log line, nothing else."""

from __future__ import annotations

import logging

import pytest

from hotloop._third_party import quiet_third_party_logs

_LOGGER = "torch._dynamo.variables.ctx_manager"


@pytest.fixture
def dynamo_logger():
    logger = logging.getLogger(_LOGGER)
    saved = list(logger.filters)
    yield logger
    logger.filters[:] = saved


def test_drops_the_profiler_notice_and_keeps_other_records(dynamo_logger, caplog):
    quiet_third_party_logs()
    quiet_third_party_logs()  # idempotent: one filter
    assert len([f for f in dynamo_logger.filters if type(f).__name__ == "_DropMessage"]) == 1
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        dynamo_logger.warning("Profiler record function %s will be ignored", "<class 'record_function'>")
        dynamo_logger.warning("Graph break: %s", "something else")
    assert [record.getMessage() for record in caplog.records] == ["Graph break: something else"]
