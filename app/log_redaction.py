"""Tokens and secrets never reach a log line, in either format: uvicorn writes a request's path
with its query string (WebSocket clients may authenticate with ``?token=``), and an error's
text may carry an ``Authorization`` header or a database URL with its password."""

from __future__ import annotations

import logging
import re

_SECRETS = (
    (re.compile(r"((?:^|[?&])(?:token|access_token|api_key)=)[^&\s\"']+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE), r"\1[redacted]@"),
)
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")  # requests, and WebSocket handshakes


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactTokens(logging.Filter):
    """On uvicorn's loggers, whatever handler writes their records. The arguments are redacted
    one by one: uvicorn's access formatter reads them, not the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def redact_server_logs() -> None:
    """Once per process: the filter on uvicorn's loggers (idempotent)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
