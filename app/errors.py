"""Every HTTP error a client gets, answered from one table (``transports/http_errors.py``).

One body: ``{status_code, detail, code, extra}``, never a traceback. ``code`` is the stable
machine code; ``extra`` is ``{"code"}`` (the same code, where bodies always had it) or the
fields at fault (``[{"message", "key", "source"}]``, as Litestar reports an invalid body).
"""

from __future__ import annotations

import logging

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from domain.errors import ChatError, DatabaseUnavailable
from transports.http_errors import body, code_of_status, status_of

log = logging.getLogger("chat_server")


def _response(status: int, code: str, detail: str, extra: object, headers: dict[str, str] | None = None) -> Response:
    return Response(body(status, code, detail, extra), status_code=status, media_type=MediaType.JSON,
                    headers=headers or {})


def chat_error_response(request: Request, exc: ChatError) -> Response:
    status = status_of(exc.code)
    headers = {} if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    # A field at fault is reported as Litestar reports an invalid body field.
    extra: object = (
        [{"message": exc.message, "key": exc.field, "source": "body"}] if exc.field else {"code": exc.code}
    )
    return _response(status, exc.code, exc.message, extra, headers)


def http_error_response(request: Request, exc: HTTPException) -> Response:
    """What Litestar refuses by itself (an undecodable body, no such route or method, a body
    too large): the same body, the code its status stands for, its headers (``Allow``) kept."""
    if exc.status_code == 500:
        return internal_error_response(request, exc)
    code = code_of_status(exc.status_code)
    extra = exc.extra if exc.extra else {"code": code}
    return _response(exc.status_code, code, exc.detail, extra, dict(exc.headers or {}))


def internal_error_response(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback (and request id); the client learns only that."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _response(500, "internal_error", "Internal Server Error", {"code": "internal_error"})


def undecodable_body_response(request: Request, exc: Exception) -> Response:
    """A body msgspec could not read: invalid UTF-8 inside a string (``UnicodeDecodeError``)
    or nesting deeper than it recurses (``RecursionError``). The client's mistake: a 400."""
    reason = "is not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "is nested too deeply"
    return _response(400, "invalid_input", f"The request body {reason}.", {"code": "invalid_input"})


def database_unreachable_response(request: Request, exc: Exception) -> Response:
    """A query outside the run store found no database: 503, as the store says it."""
    log.warning("database unreachable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return chat_error_response(request, DatabaseUnavailable())


def no_such_file(request: Request, exc: ValueError) -> Response:
    """A static path the file system cannot even look up (a NUL in it) names no file."""
    return _response(404, "not_found", "Not Found", {"code": "not_found"})
