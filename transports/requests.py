"""Request bodies shared by the HTTP and WebSocket transports, and the checks on them."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar.exceptions import ValidationException

OnDisconnect = Literal["cancel", "continue"]


class ChatRequest(msgspec.Struct, frozen=True):
    message: Annotated[str, msgspec.Meta(description="What the user said.")]
    conversation_id: Annotated[
        str | None, msgspec.Meta(description="Continue this conversation; omit to start a new one.")
    ] = None
    on_disconnect: Annotated[
        OnDisconnect,
        msgspec.Meta(description="What a dropped stream means: `cancel` (Stop, the default) or `continue`."),
    ] = "cancel"


def message_problem(message: str, max_bytes: int) -> str | None:
    """Why a chat message is refused, or None."""
    if not message.strip():
        return "The message is empty."
    if len(message.encode()) > max_bytes:
        return f"The message is longer than {max_bytes} bytes."
    return None


def checked_message(message: str, max_bytes: int) -> str:
    problem = message_problem(message, max_bytes)
    if problem:
        raise ValidationException(problem, extra=[{"message": problem, "key": "message", "source": "body"}])
    return message
