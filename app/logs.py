"""Log lines, human-readable (the default) or one JSON object a line (``LOG_FORMAT=json``).

Both formats stamp the request, user and run a line is about (``domain/log_context.py``) and
pass the finished line through ``redact``: no token or password reaches either. The JSON lines
are written by a small stdlib formatter with msgspec, the encoder the server already uses.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from litestar.logging import LoggingConfig

from app.log_redaction import redact
from domain import log_context

LogFormat = Literal["text", "json"]
TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class LogLine(msgspec.Struct, omit_defaults=True):
    time: str
    level: str
    logger: str
    message: str
    request_id: str | None = None
    user_id: str | None = None
    run_id: str | None = None
    exception: str | None = None


_encode = msgspec.json.Encoder().encode


class ContextFilter(logging.Filter):
    """Copies the ids of the request or run being served onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = log_context.current()
        record.request_id = context.request_id or "-"
        record.user_id, record.run_id = context.user_id, context.run_id
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = log_context.current()  # also for handlers configured without ContextFilter
        line = LogLine(
            time=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            level=record.levelname, logger=record.name, message=redact(record.getMessage()),
            request_id=context.request_id, user_id=context.user_id, run_id=context.run_id,
        )
        if record.exc_info:
            line.exception = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line.exception = redact(record.exc_text)
        return _encode(line).decode()


def _formatter(log_format: LogFormat, fmt: str) -> dict[str, Any]:
    if log_format == "json":
        return {"()": "app.logs.JsonFormatter"}
    return {"()": "app.logs.TextFormatter", "fmt": fmt}


def logging_config(level: str, log_format: LogFormat = "text") -> LoggingConfig:
    """The app's own loggers (and everything that propagates to the root)."""
    return LoggingConfig(
        filters={"context": {"()": "app.logs.ContextFilter"}},
        formatters={"standard": _formatter(log_format, TEXT)},
        handlers={"console": {"class": "logging.StreamHandler", "formatter": "standard", "filters": ["context"]}},
        root={"handlers": ["console"], "level": level},
        loggers={"litestar": {"level": "WARNING", "propagate": True}},
    )


def uvicorn_log_config(log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's own lines (start-up, access log) in the same format; in text, uvicorn's
    familiar format. Applied in the supervisor of ``--workers N`` too, which runs no app."""
    from uvicorn.config import LOGGING_CONFIG

    if log_format == "text":
        return LOGGING_CONFIG
    return {
        **LOGGING_CONFIG,
        "formatters": {"default": {"()": "app.logs.JsonFormatter"}, "access": {"()": "app.logs.JsonFormatter"}},
    }
