"""Tokens never reach a log line: uvicorn writes a request's path with its query string, and
WebSocket clients may authenticate with ``?token=``."""

from __future__ import annotations

import logging
import re

_SECRET_PARAMETER = re.compile(r"((?:^|[?&])(?:token|access_token|api_key)=)[^&\s\"']+", re.I)
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")  # requests, and WebSocket handshakes


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PARAMETER.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_server_logs() -> None:
    """Once per process: the filter on uvicorn's loggers (idempotent)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
