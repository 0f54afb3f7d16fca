"""Every error a client can get over HTTP, in one table: its code, its status, what it means.

The app's exception handlers (``app/errors.py``) answer from this table, and each route's
documented error responses are generated from it (``errors(...)``), so the OpenAPI document
lists exactly the statuses and codes the server sends. Domain errors carry their code
(``domain/errors.py``); what Litestar itself refuses (a body it cannot decode, a route or a
method that does not exist, a body too large) gets the code of its status.
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

import msgspec
from litestar.openapi import ResponseSpec

from domain.errors import AuthError, ChatError, DatabaseUnavailable, Forbidden, InvalidInput, KeysUnavailable


class Kind(NamedTuple):
    status: int
    meaning: str


TABLE: dict[str, Kind] = {
    "invalid_input": Kind(400, "the request is malformed or breaks a rule; `extra` lists the fields at fault"),
    # 400s that say what is wrong (search, feedback), so a client can tell them apart.
    "query_too_long": Kind(400, "the search query is longer than 1,000 characters"),
    "invalid_cursor": Kind(400, "the cursor is not one this list answered"),
    "invalid_rating": Kind(400, "a rating is `up` or `down`"),
    "comment_too_long": Kind(400, "the feedback comment is longer than 2,000 characters"),
    "unauthorized": Kind(401, "no bearer token, or one that is not valid (expired, forged, without `exp`)"),
    "forbidden": Kind(403, "the token belongs to another user than the path's"),
    "not_found": Kind(404, "no such resource for this user"),
    "method_not_allowed": Kind(405, "the path has no such method (`Allow` lists those it has)"),
    "run_active": Kind(409, "a reply is still being written in the conversation: wait for it or cancel it"),
    "run_finished": Kind(409, "the run has ended already"),
    "already_decided": Kind(409, "the tool call's approval was decided already"),
    "already_started": Kind(409, "the message was sent already"),
    "not_a_reply": Kind(409, "the message is not one of the assistant's replies: only those take feedback"),
    "too_large": Kind(413, "the request body is larger than `MAX_BODY_BYTES`"),
    "limit_exceeded": Kind(429, "a per-user limit is reached; `Retry-After` says when to try again"),
    "quota_exceeded": Kind(429, "the day's tokens are spent; `Retry-After` is the seconds to midnight UTC"),
    "internal_error": Kind(500, "a bug: the server's log has its request id"),
    "database_unavailable": Kind(503, "the database cannot be reached; nothing was changed (`Retry-After`)"),
    "shutting_down": Kind(503, "the server is stopping; another instance, or this one restarted, will answer"),
    "auth_unavailable": Kind(503, "the identity provider's keys cannot be fetched right now (`Retry-After`)"),
}

# What Litestar raises by itself has a status, not a code: the code its status stands for.
_CODE_OF_STATUS = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                   405: "method_not_allowed", 413: "too_large", 429: "limit_exceeded", 500: "internal_error"}


def status_of(code: str) -> int:
    kind = TABLE.get(code)
    return kind.status if kind is not None else 400


def code_of_status(status: int) -> str:
    return _CODE_OF_STATUS.get(status, "internal_error" if status >= 500 else "invalid_input")


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error's body."""

    status_code: int
    detail: Annotated[str, msgspec.Meta(description="What went wrong, in words a user may read.")]
    code: Annotated[str, msgspec.Meta(description="A stable machine code: branch on this.")]
    extra: Annotated[
        dict[str, Any] | list[dict[str, Any]] | None,
        msgspec.Meta(description="`{\"code\"}` (the same code), or the fields at fault: `[{\"message\", \"key\", \"source\"}]`."),
    ] = None


def body(status: int, code: str, detail: str, extra: Any = None) -> ErrorBody:
    return ErrorBody(status_code=status, detail=detail, code=code, extra=extra)


ErrorKind = type[ChatError] | str
# Every route under /api/{user_id}: its input checked, its token, its user, its database.
API = (InvalidInput, AuthError, Forbidden, KeysUnavailable, DatabaseUnavailable)
# A route without a user in its path (ChatKit: the token names the user).
TOKEN_ONLY = (InvalidInput, AuthError, KeysUnavailable, DatabaseUnavailable)


def errors(*kinds: ErrorKind, base: tuple[ErrorKind, ...] = API) -> dict[int, ResponseSpec]:
    """The documented error responses of a route that can answer ``kinds`` (domain errors or
    codes) besides ``base``: one response per status, naming each code it may carry."""
    by_status: dict[int, list[str]] = {}
    for kind in (*base, *kinds):
        code = kind if isinstance(kind, str) else kind.code
        codes = by_status.setdefault(TABLE[code].status, [])
        if code not in codes:
            codes.append(code)
    return {
        status: ResponseSpec(
            data_container=ErrorBody, generate_examples=False,
            description="; ".join(f"`{code}`: {TABLE[code].meaning}" for code in codes),
        )
        for status, codes in sorted(by_status.items())
    }
