"""Feedback on replies: ``PUT /api/{user_id}/messages/{id}/feedback`` and the export, ``GET /feedback``."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from piccolo.engine.base import Engine

from domain import feedback
from domain.errors import NotFound
from domain.feedback import (
    CURSOR_PATTERN,
    MAX_COMMENT_CHARS,
    MAX_PAGE,
    CommentTooLong,
    FeedbackPage,
    FeedbackView,
    InvalidCursor,
    InvalidRating,
    NotAReply,
)
from domain.runs import RunManager
from transports.http_errors import errors
from transports.route_specs import TEXT


class FeedbackBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Checked by the domain, not by the decoder, so a wrong value gets its own code
    # (invalid_rating, comment_too_long); the schema still says what is allowed.
    rating: Annotated[str, msgspec.Meta(description="`up` or `down`.",
                                        extra_json_schema={"extra": {"enum": ["up", "down"]}})]
    comment: Annotated[str | None, msgspec.Meta(
        description="Why (optional; sending none removes an earlier one).",
        extra_json_schema={"extra": {"maxLength": MAX_COMMENT_CHARS, **TEXT}},
    )] = None


@put("/messages/{message_id:str}/feedback", summary="Rate a reply: thumbs up or down, with an optional comment",
     tags=["feedback"],
     description=(
         "Rates one of the assistant's messages of the user's conversations (the ids are in `GET "
         "/conversations/{id}`); rating again replaces the rating and the comment. 404 for a message "
         "of another user or none; 409 `not_a_reply` for a message that is not the assistant's; 400 "
         f"`invalid_rating`, or `comment_too_long` (over {MAX_COMMENT_CHARS} characters)."
     ),
     responses=errors(NotFound, NotAReply, InvalidRating, CommentTooLong, "too_large"))
async def rate_reply(
    user: NamedDependency[str], db: NamedDependency[Engine], runs: NamedDependency[RunManager],
    message_id: FromPath[str], data: JSONBody[FeedbackBody],
) -> FeedbackView:
    return await feedback.rate(db, user, message_id, data.rating, data.comment, runs.observer)


@get("/feedback", summary="The user's feedback, for export (least recently rated first)", tags=["feedback"],
     description=(
         "Every rating the user gave, with its comment and the rated reply's text, ordered by when it "
         "was last rated. Read on with `cursor` = the page's `next_cursor` while `has_more`; keep the "
         "last `next_cursor` to read only what is rated after it (a rating changed later comes again)."
     ),
     responses=errors(InvalidCursor))
async def list_feedback(
    user: NamedDependency[str],
    limit: Annotated[int | None, QueryParameter(description=f"Items per page, 1 to {MAX_PAGE} (100).")] = None,
    cursor: Annotated[str | None, QueryParameter(description="A `next_cursor` this list answered.",
                                                 schema_extra={"pattern": CURSOR_PATTERN})] = None,
) -> FeedbackPage:
    return await feedback.page(user, limit, cursor)
