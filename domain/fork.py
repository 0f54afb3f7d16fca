"""Forking a conversation: a new one that starts as a copy of another, up to a message.

Everything the model saw up to and including that message is copied (what was said, tool
calls, the notes for the model) with new ids and the original times, so the copy goes on as
the original would have; runs, approvals and ratings stay with the original. The copy is
indexed for search like any message (the index's triggers), in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
from piccolo.engine.base import Engine

from domain import feed
from domain.conversations import parse_id
from domain.errors import NotFound
from domain.limits import MAX_CONVERSATION_TITLE_CHARS
from domain.tables import Conversation, Message

CHUNK = 500  # rows per insert: a PostgreSQL statement takes at most 32,767 parameters
FORK_SUFFIX = " (fork)"


class ForkedConversation(msgspec.Struct, frozen=True):
    id: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    forked_from: str  # the conversation copied
    forked_at: str | None  # the last message of it copied (None: it had none)
    messages: int  # how many were copied (notes for the model included)


def fork_title(title: str | None) -> str | None:
    if title is None:
        return None
    return title[: MAX_CONVERSATION_TITLE_CHARS - len(FORK_SUFFIX)] + FORK_SUFFIX


async def fork(db: Engine, user_id: str, conversation_id: str, message_id: str | None,
               tell: Callable[[feed.FeedEvent], None]) -> ForkedConversation:
    """A new conversation of the user's holding the messages of theirs up to ``message_id``
    (all of them without one). ``NotFound`` for another user's conversation, or a message
    that is not one of its own."""
    key = parse_id(conversation_id)
    at = datetime.now(UTC)
    async with db.transaction():
        source = key and await (
            Conversation.select(Conversation.title).where(Conversation.id == key, Conversation.user_id == user_id)
            .first()
        )
        if not source:
            raise NotFound("No such conversation.")
        messages = Message.select(
            Message.role, Message.content, Message.tool, Message.status, Message.created_at, Message.id
        ).where(Message.conversation == key).order_by(Message.created_at, Message.id)
        if message_id is not None:
            cut = parse_id(message_id)
            last = cut and await Message.select(Message.created_at).where(
                Message.id == cut, Message.conversation == key
            ).first()
            if not last:
                raise NotFound("No such message in this conversation.")
            messages = messages.where(Message.created_at <= last["created_at"])
        rows = await messages
        new_id, title = uuid.uuid4(), fork_title(source["title"])
        await Conversation.insert(Conversation(id=new_id, user_id=user_id, title=title, created_at=at, updated_at=at))
        copies = [
            Message(id=uuid.uuid4(), conversation=new_id, run_id=None, role=row["role"], content=row["content"],
                    tool=row["tool"], status=row["status"], feedback=None, created_at=row["created_at"])
            for row in rows
        ]
        for start in range(0, len(copies), CHUNK):
            await Message.insert(*copies[start:start + CHUNK])
    tell(feed.ConversationCreated(conversation_id=str(new_id), title=title))
    return ForkedConversation(
        id=str(new_id), title=title, created_at=at, updated_at=at, forked_from=str(key),
        forked_at=str(rows[-1]["id"]) if rows else None, messages=len(rows),
    )
