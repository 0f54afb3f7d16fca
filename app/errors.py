"""Domain errors as Litestar's error body: ``{status_code, detail, extra: {code}}``."""

from __future__ import annotations

from litestar import MediaType, Request, Response

from domain.errors import ChatError, LimitExceeded

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
    headers = {}
    if isinstance(exc, LimitExceeded) and exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return Response(
        {"status_code": status, "detail": exc.message, "extra": {"code": exc.code}},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )
