"""What the routes declare for the OpenAPI document: the errors they answer and their stream
bodies. Nothing here is raised: domain errors reach the wire through the app's ``ChatError``
handler; these classes only name the statuses for the document."""

from __future__ import annotations

import msgspec
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import ResponseSpec

from domain.events import Event


class ConflictException(ClientException):
    """Documents 409: a reply is still running in the conversation (``run_active``), or the
    run already ended (``run_finished``)."""

    status_code = 409


AUTH_ERRORS = [NotAuthorizedException, PermissionDeniedException]
CHAT_ERRORS = [
    *AUTH_ERRORS, ValidationException, NotFoundException, ConflictException, RequestEntityTooLarge,
    TooManyRequestsException,
]

SSE_RESPONSE = {
    200: ResponseSpec(
        data_container=Event,
        media_type="text/event-stream",
        generate_examples=False,
        description=(
            "A stream of `data: <event JSON>\\n\\n` frames, one chat event each (this schema), "
            "from `start` to exactly one `done`, with `: ping` comments while idle."
        ),
    )
}
RESUME_RESPONSE = {
    200: ResponseSpec(
        data_container=Event,
        media_type="text/event-stream",
        generate_examples=False,
        description="Frames `id: <seq>\\ndata: <event JSON>\\n\\n` after the given seq, then live until `done`.",
    )
}


class Waiting(msgspec.Struct, frozen=True):
    """A decision recorded while other calls of the run still wait for theirs."""

    waiting_for: list[str]


APPROVAL_RESPONSE = {
    **SSE_RESPONSE,
    202: ResponseSpec(data_container=Waiting, description="Recorded; the continuation starts once these calls are decided."),
}
