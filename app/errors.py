"""Errors as Litestar's error body: ``{status_code, detail, extra}``; never a traceback."""

from __future__ import annotations

import logging

from litestar import MediaType, Request, Response

from domain.errors import ChatError, DatabaseUnavailable

HTTP_STATUS = {
    "database_unavailable": 503,
    "already_started": 409,
    "already_decided": 409,
    "not_found": 404,
    "run_active": 409,
    "run_finished": 409,
    "limit_exceeded": 429,
    "quota_exceeded": 429,
    "invalid_input": 400,
    "shutting_down": 503,
}


def chat_error_response(request: Request, exc: ChatError) -> Response:
    status = HTTP_STATUS.get(exc.code, 400)
    headers = {} if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    # A field at fault is reported as Litestar reports an invalid body field.
    extra: object = (
        [{"message": exc.message, "key": exc.field, "source": "body"}] if exc.field else {"code": exc.code}
    )
    return Response(
        {"status_code": status, "detail": exc.message, "extra": extra},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def internal_error_response(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback (and request id); the client learns only that."""
    logging.getLogger("chat_server").error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        {"status_code": 500, "detail": "Internal Server Error", "extra": {"code": "internal_error"}},
        status_code=500,
        media_type=MediaType.JSON,
    )


def undecodable_body_response(request: Request, exc: Exception) -> Response:
    """A body msgspec could not read: invalid UTF-8 inside a string (``UnicodeDecodeError``)
    or nesting deeper than it recurses (``RecursionError``). The client's mistake: a 400."""
    reason = "is not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "is nested too deeply"
    return Response(
        {"status_code": 400, "detail": f"The request body {reason}.", "extra": {"code": "invalid_input"}},
        status_code=400,
        media_type=MediaType.JSON,
    )


def database_unreachable_response(request: Request, exc: Exception) -> Response:
    """A query outside the run store found no database: 503, as the store says it."""
    logging.getLogger("chat_server").warning("database unreachable on %s %s: %s", request.method,
                                             request.url.path, type(exc).__name__)
    return chat_error_response(request, DatabaseUnavailable())
