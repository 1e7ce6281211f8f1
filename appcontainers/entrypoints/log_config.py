"""Where the library's log records go: the entrypoints decide, the library never does.

The library logs to the `appcontainers` logger (and its children) and configures nothing; the
CLI calls configure() once per invocation, from APPCONTAINERS_LOG or its --debug flag.
"""
from __future__ import annotations

import logging
import sys
from typing import Mapping

from ..domain.exceptions import InvalidValue

LOGGER = "appcontainers"
ENV = "APPCONTAINERS_LOG"
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.Handler):
    """Writes to the sys.stderr of the moment, not the one at set-up (CliRunner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def level_from(debug: bool, environ: Mapping[str, str]) -> str | None:
    """The level asked for: --debug wins, then APPCONTAINERS_LOG; None: log nothing."""
    if debug:
        return "debug"
    value = environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in LEVELS:
        raise InvalidValue(f"{ENV}={value!r}: give one of {', '.join(LEVELS)}")
    return value


def configure(level: str | None) -> None:
    """Send the library's records at level and above to stderr (None: nowhere). Idempotent:
    a second call replaces what the first set up."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if level is None:
        logger.setLevel(logging.NOTSET)
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
