"""A user's thumbs up or down, with an optional comment, on the assistant's replies.

One rating per reply (rating again replaces it), in the ``feedback`` table with its comment and
times for the operators' export, and on the message itself (``feedback``: what a conversation
shows), written together in one transaction. The plain API and ChatKit's ``items.feedback``
(``positive``/``negative``, no comment: a comment given before is kept) both rate here, and
each rating is counted by the ``RunObserver`` (a Prometheus counter by rating).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from piccolo.engine.base import Engine

from domain.conversations import get_conversation, parse_id
from domain.errors import ChatError, InvalidInput, NotFound
from domain.limits import check_text
from domain.runs.observer import RunObserver
from domain.tables import Feedback, Message

Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")
MAX_COMMENT_CHARS = 2000
DEFAULT_PAGE = 100
MAX_PAGE = 500


class InvalidRating(InvalidInput):
    code = "invalid_rating"


class CommentTooLong(InvalidInput):
    code = "comment_too_long"


class NotAReply(ChatError):
    """The message exists but is the user's own (or a tool's): only replies take feedback."""

    code = "not_a_reply"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


class FeedbackView(msgspec.Struct, frozen=True):
    message_id: str
    conversation_id: str
    rating: Rating
    comment: str | None
    created_at: datetime
    updated_at: datetime  # the last time it was rated
    content: str  # the rated reply's text


class FeedbackPage(msgspec.Struct, frozen=True):
    feedback: list[FeedbackView]
    has_more: bool
    # After this page's last item: pass it as ``cursor`` for the next page, or keep it to read
    # what is rated from now on; None only while there is no feedback at all.
    next_cursor: str | None = None


_UPSERT = (
    # The same statement on both engines (SQLite >= 3.24, PostgreSQL >= 9.5).
    "INSERT INTO feedback (message, user_id, rating, comment, created_at, updated_at) VALUES ({}, {}, {}, {}, {}, {}) "
    "ON CONFLICT (message) DO UPDATE SET rating = excluded.rating, updated_at = excluded.updated_at, "
    "comment = {}"
)
_REPLACE_COMMENT = "excluded.comment"
_KEEP_COMMENT = "feedback.comment"


def check(rating: str, comment: str | None) -> Rating:
    if rating not in RATINGS:
        raise InvalidRating("A rating is 'up' or 'down'.")
    if comment is not None:
        check_text(comment, "comment", "The comment")
        if len(comment) > MAX_COMMENT_CHARS:
            raise CommentTooLong(f"A comment is at most {MAX_COMMENT_CHARS} characters long.")
    return rating  # type: ignore[return-value]


async def rate(db: Engine, user_id: str, message_id: str, rating: str, comment: str | None,
               observer: RunObserver) -> FeedbackView:
    """Rate one of the user's assistant messages (again: replaces rating and comment).
    ``NotFound`` for another user's or no message; ``NotAReply`` for a message of another role."""
    checked = check(rating, comment)
    key = parse_id(message_id)
    at = datetime.now(UTC)
    async with db.transaction():
        row = key and await (
            Message.select(Message.role, Message.conversation)
            .where(Message.id == key, Message.conversation.user_id == user_id)
            .first()
        )
        if not row:
            raise NotFound("No such message.")
        if row["role"] != "assistant":
            raise NotAReply("Only the assistant's replies take feedback.")
        await _store(key, user_id, checked, comment, at, _REPLACE_COMMENT)
    observer.feedback_given(checked)
    return (await _rows(Feedback.message == key))[0][1]


async def rate_items(db: Engine, user_id: str, conversation_id: str, message_ids: list[str], rating: Rating,
                     observer: RunObserver) -> bool:
    """ChatKit's ``items.feedback``: rate the assistant messages among ``message_ids`` of the
    user's conversation, keeping their comments; other ids are ignored. False: no such
    conversation."""
    conversation = await get_conversation(user_id, conversation_id)
    if conversation is None:
        return False
    keys = [key for key in map(parse_id, message_ids) if key is not None]
    if not keys:
        return True
    at = datetime.now(UTC)
    async with db.transaction():
        replies = await Message.select(Message.id).where(
            Message.conversation == uuid.UUID(conversation.id), Message.id.is_in(keys), Message.role == "assistant"
        )
        for reply in replies:
            await _store(reply["id"], user_id, rating, None, at, _KEEP_COMMENT)
    for _ in replies:
        observer.feedback_given(rating)
    return True


async def _store(message: uuid.UUID, user_id: str, rating: Rating, comment: str | None, at: datetime,
                 comment_becomes: str) -> None:
    await Feedback.raw(_UPSERT.replace("comment = {}", f"comment = {comment_becomes}"),
                       message, user_id, rating, comment, at, at)
    await Message.update({Message.feedback: rating}).where(Message.id == message)


async def page(user_id: str, limit: int | None = None, cursor: str | None = None) -> FeedbackPage:
    """The user's feedback, least recently rated first (a rating changed later comes again,
    later): an export reads on from the last page's cursor, now or another day."""
    size = DEFAULT_PAGE if limit is None else max(1, min(limit, MAX_PAGE))
    where = Feedback.user_id == user_id
    if cursor:
        at, last_id = _read_cursor(cursor)
        where = where & ((Feedback.updated_at > at) | ((Feedback.updated_at == at) & (Feedback.id > last_id)))
    rows = await _rows(where, size + 1)
    found = rows[:size]
    return FeedbackPage(feedback=[view for _, view in found], has_more=len(rows) > size,
                        next_cursor=_cursor_after(*found[-1]) if found else cursor or None)


async def _rows(where: Any, limit: int | None = None) -> list[tuple[int, FeedbackView]]:
    query = (
        Feedback.select(
            Feedback.id, Feedback.message.as_alias("message_id"),
            Feedback.message.conversation.as_alias("conversation_id"), Feedback.rating, Feedback.comment,
            Feedback.created_at, Feedback.updated_at, Feedback.message.content.as_alias("content"),
        )
        .where(where)
        .order_by(Feedback.updated_at, Feedback.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        (row["id"], msgspec.convert(
            {**row, "message_id": str(row["message_id"]), "conversation_id": str(row["conversation_id"])},
            FeedbackView))
        for row in await query
    ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LATEST = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
MAX_ROW_ID = 2**31 - 1  # feedback.id is a 32-bit serial on PostgreSQL
# What a cursor looks like: every one of this form is answered (beyond the last rating, with
# nothing), any other refused, so the document and the server agree.
CURSOR_PATTERN = r"^([0-9]{1,18}\.[0-9]{1,10})?$"  # empty: from the start


def _cursor_after(row_id: int, view: FeedbackView) -> str:
    """Opaque to clients: the last item's rating time (µs since 1970) and id."""
    return f"{(view.updated_at - _EPOCH) // _MICROSECOND}.{row_id}"


def _read_cursor(cursor: str) -> tuple[datetime, int]:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidCursor("The cursor is not one this list answered.")
    at, row_id = cursor.split(".")
    return _EPOCH + min(int(at), _LATEST) * _MICROSECOND, min(int(row_id), MAX_ROW_ID)
