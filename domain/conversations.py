"""Conversation and message queries, and the model's view of a conversation's history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec
from piccolo.engine.base import Engine

from domain.database import write_transaction
from domain.tables import Conversation, Message

Role = Literal["user", "assistant", "tool", "hidden"]
MessageStatus = Literal["completed", "cancelled", "failed", "interrupted"]

HIDDEN_STOPPED_NOTE = "The user pressed Stop while your previous reply was being written; it was cut short."


class ConversationView(msgspec.Struct, frozen=True):
    id: str
    title: str | None
    created_at: datetime
    updated_at: datetime


class ToolRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None


class MessageView(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: datetime
    run_id: str | None = None
    tool: ToolRecord | None = None
    feedback: str | None = None


def parse_id(value: str | None) -> uuid.UUID | None:
    """An id from a client: a malformed one simply matches nothing."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


_CONVERSATION_COLUMNS = (Conversation.id, Conversation.title, Conversation.created_at, Conversation.updated_at)
_MESSAGE_COLUMNS = (
    Message.id, Message.role, Message.content, Message.status, Message.created_at, Message.run_id,
    Message.tool, Message.feedback,
)


def _conversation(row: dict) -> ConversationView:
    return ConversationView(
        id=str(row["id"]), title=row["title"], created_at=row["created_at"], updated_at=row["updated_at"]
    )


def message_view(row: dict) -> MessageView:
    return msgspec.convert({**row, "id": str(row["id"])}, MessageView)


async def get_conversation(user_id: str, conversation_id: str | None) -> ConversationView | None:
    key = parse_id(conversation_id)
    if key is None:
        return None
    row = await (
        Conversation.select(*_CONVERSATION_COLUMNS)
        .where(Conversation.id == key, Conversation.user_id == user_id)
        .first()
    )
    return _conversation(row) if row else None


async def list_conversations(
    user_id: str, limit: int = 50, *, newest_first: bool = True, before: datetime | None = None
) -> list[ConversationView]:
    query = (
        Conversation.select(*_CONVERSATION_COLUMNS)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.updated_at, ascending=not newest_first)
        .limit(limit)
    )
    if before is not None:
        query = query.where(Conversation.updated_at < before)
    return [_conversation(row) for row in await query]


async def rename_conversation(db: Engine, user_id: str, conversation_id: str, title: str) -> bool:
    key = parse_id(conversation_id)
    if key is None:
        return False
    async with write_transaction(db):
        rows = await (
            Conversation.update({Conversation.title: title})
            .where(Conversation.id == key, Conversation.user_id == user_id)
            .returning(Conversation.id)
        )
    return bool(rows)


async def delete_conversation(db: Engine, user_id: str, conversation_id: str) -> bool:
    key = parse_id(conversation_id)
    if key is None:
        return False
    async with write_transaction(db):
        # Messages, runs and run events go with it (ON DELETE CASCADE; Piccolo enables
        # SQLite's foreign keys on every connection).
        rows = await (
            Conversation.delete()
            .where(Conversation.id == key, Conversation.user_id == user_id)
            .returning(Conversation.id)
        )
    return bool(rows)


async def list_messages(
    conversation_id: str, *, include_hidden: bool = False, limit: int | None = None
) -> list[MessageView]:
    query = (
        Message.select(*_MESSAGE_COLUMNS)
        .where(Message.conversation == uuid.UUID(conversation_id))
        .order_by(Message.created_at)
        .output(load_json=True)
    )
    if not include_hidden:
        query = query.where(Message.role != "hidden")
    if limit is not None:
        query = query.limit(limit)
    return [message_view(row) for row in await query]


def history_items(messages: list[MessageView]) -> list[dict[str, Any]]:
    """The conversation as Responses API input items, the format every agents model takes."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "user":
            items.append({"role": "user", "content": message.content})
        elif message.role == "assistant" and message.content:
            items.append({"role": "assistant", "content": message.content})
        elif message.role == "hidden":
            items.append({"role": "system", "content": message.content})
        elif message.role == "tool" and message.tool is not None:
            tool = message.tool
            items.append({
                "type": "function_call", "call_id": tool.call_id, "name": tool.name,
                "arguments": msgspec.json.encode(tool.arguments).decode(),
            })
            items.append({
                "type": "function_call_output", "call_id": tool.call_id,
                "output": msgspec.json.encode(tool.result).decode(),
            })
    return items
