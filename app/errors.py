"""Errors as Litestar's error body: ``{status_code, detail, extra}``; never a traceback."""

from __future__ import annotations

import logging

from litestar import MediaType, Request, Response

from domain.errors import ChatError

HTTP_STATUS = {
    "not_found": 404,
    "run_active": 409,
    "run_finished": 409,
    "limit_exceeded": 429,
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
