"""Conversation and message queries, and the model's view of a conversation's history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec
from piccolo.engine.base import Engine

from domain.approvals import describe
from domain.errors import NotFound
from domain.limits import check_conversation_title
from domain.tables import Approval, Conversation, Message

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
MESSAGE_COLUMNS = (
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


async def list_conversations(user_id: str, limit: int = 50) -> list[ConversationView]:
    """Most recently active first."""
    query = (
        Conversation.select(*_CONVERSATION_COLUMNS)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.updated_at, ascending=False)
        .limit(limit)
    )
    return [_conversation(row) for row in await query]


async def rename_conversation(db: Engine, user_id: str, conversation_id: str, title: str) -> bool:
    """False: the user has no such conversation; ``InvalidInput`` (checked first, so any
    conversation id gets it) for a title it cannot have."""
    check_conversation_title(title)
    key = parse_id(conversation_id)
    if key is None:
        return False
    async with db.transaction():
        rows = await (
            Conversation.update({Conversation.title: title})
            .where(Conversation.id == key, Conversation.user_id == user_id)
            .returning(Conversation.id)
        )
    return bool(rows)



async def list_messages(
    conversation_id: str, *, include_hidden: bool = False, limit: int | None = None
) -> list[MessageView]:
    query = (
        Message.select(*MESSAGE_COLUMNS)
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
            # The whole output-message form, not the short {"role", "content"}: the agents SDK
            # stores a run's input in its state (approvals) in a form that loses the short one's
            # type, which its Chat Completions converter then refuses on resume.
            items.append({
                "type": "message", "id": f"msg_{message.id.replace('-', '')}", "role": "assistant",
                "status": "completed", "content": [{"type": "output_text", "text": message.content, "annotations": []}],
            })
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


# -- Paged reading and retry (the ChatKit transport's threads and items) ----------------

PageOrder = Literal["asc", "desc"]


class ConversationPage(msgspec.Struct, frozen=True):
    conversations: list[ConversationView]
    has_more: bool


class MessagePage(msgspec.Struct, frozen=True):
    messages: list[MessageView]
    has_more: bool
    after_at: datetime | None = None  # when the cursor's message was written: where the page begins


def _after(table: type[Conversation] | type[Message], cursor: dict, order: PageOrder):
    """Rows strictly after ``cursor`` in (created_at, id) order: stable while rows are added."""
    if order == "asc":
        return (table.created_at > cursor["created_at"]) | (
            (table.created_at == cursor["created_at"]) & (table.id > cursor["id"])
        )
    return (table.created_at < cursor["created_at"]) | (
        (table.created_at == cursor["created_at"]) & (table.id < cursor["id"])
    )


async def page_conversations(
    user_id: str, limit: int, order: PageOrder = "desc", after: str | None = None
) -> ConversationPage:
    """A page of the user's conversations by creation time; ``after`` is the last id of
    the previous page. An unknown cursor raises ``NotFound``, as any id that names nothing."""
    query = (
        Conversation.select(*_CONVERSATION_COLUMNS)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.created_at, Conversation.id, ascending=order == "asc")
        .limit(limit + 1)
    )
    if after is not None:
        key = parse_id(after)
        cursor = key and await (
            Conversation.select(Conversation.id, Conversation.created_at)
            .where(Conversation.id == key, Conversation.user_id == user_id)
            .first()
        )
        if not cursor:
            raise NotFound("The page cursor names none of your threads.")
        query = query.where(_after(Conversation, cursor, order))
    rows = await query
    return ConversationPage([_conversation(row) for row in rows[:limit]], has_more=len(rows) > limit)


def _shown():
    """Messages a client sees: not hidden notes, not assistant turns that wrote nothing."""
    return (Message.role != "hidden") & ((Message.role != "assistant") | (Message.content != ""))


async def page_messages(
    conversation_id: str, limit: int, order: PageOrder = "asc", after: str | None = None
) -> MessagePage:
    """A page of the messages a client sees; ``after`` is the last id of the previous page."""
    key = uuid.UUID(conversation_id)
    query = (
        Message.select(*MESSAGE_COLUMNS)
        .where(Message.conversation == key, _shown())
        .order_by(Message.created_at, Message.id, ascending=order == "asc")
        .limit(limit + 1)
        .output(load_json=True)
    )
    if after is not None:
        cursor_key = parse_id(after)
        cursor = cursor_key and await (
            Message.select(Message.id, Message.created_at)
            .where(Message.id == cursor_key, Message.conversation == key)
            .first()
        )
        if not cursor:
            raise NotFound("The page cursor names no item of this thread.")
        query = query.where(_after(Message, cursor, order))
    rows = await query
    return MessagePage([message_view(row) for row in rows[:limit]], has_more=len(rows) > limit,
                       after_at=cursor["created_at"] if after is not None else None)


async def last_user_message_id(conversation_id: str) -> str | None:
    """The newest thing the user said in the conversation (what a regenerate answers again)."""
    key = parse_id(conversation_id)
    if key is None:
        return None
    row = await (
        Message.select(Message.id)
        .where(Message.conversation == key, Message.role == "user")
        .order_by(Message.created_at, ascending=False)
        .first()
    )
    return str(row["id"]) if row else None


# -- Approvals asked in a conversation (what a client shows again on reload) -------------

Decided = Literal["approved", "rejected"]


class ApprovalView(msgspec.Struct, frozen=True, omit_defaults=True):
    """A tool call a reply stopped at for the user's yes, and the decision once made."""

    run_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]
    created_at: datetime
    description: str = ""  # the call in words
    decision: Decided | None = None
    reason: str | None = None
    decided_at: datetime | None = None


async def pending_approvals() -> int:
    """Tool calls, of every user, still waiting for a decision (a monitoring figure)."""
    return await Approval.count().where(Approval.decision.is_null())


async def list_approvals(conversation_id: str) -> list[ApprovalView]:
    """Every approval asked in the conversation, oldest first: decided or still waiting.

    Only those of replies that still stand: answering a message again drops what followed it,
    and gives that message to the new reply, so the old reply keeps no message of its own.
    """
    key = parse_id(conversation_id)
    if key is None:
        return []
    rows = await (
        Approval.select(
            Approval.run.as_alias("run_id"), Approval.call_id, Approval.name, Approval.arguments,
            Approval.created_at, Approval.decision, Approval.reason, Approval.decided_at,
        )
        .where(Approval.run.conversation == key)
        .order_by(Approval.created_at, Approval.id)
        .output(load_json=True)
    )
    if not rows:
        return []
    asked_in = {str(row["run_id"]) for row in rows}
    standing = {
        row["run_id"] for row in await Message.select(Message.run_id).where(
            Message.conversation == key, Message.run_id.is_in(list(asked_in))
        )
    }
    return [
        msgspec.convert({**row, "run_id": str(row["run_id"]), "description": describe(row["name"], row["arguments"])},
                        ApprovalView)
        for row in rows if str(row["run_id"]) in standing
    ]
