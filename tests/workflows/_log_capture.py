"""Capture the lines a named logger (MONAI's StatsHandler) writes."""

from __future__ import annotations

import logging


class LogLines(logging.Handler):
    """A logging handler that keeps the formatted messages of one logger, at INFO."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.logger = logging.getLogger(name)
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        self.logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def close(self) -> None:
        self.logger.removeHandler(self)
        super().close()
