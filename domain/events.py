"""Chat events: one tagged union on ``type``, encoded once and framed by every transport."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

RunStatus = Literal["running", "completed", "cancelled", "failed", "interrupted", "awaiting_approval"]
DoneStatus = Literal["completed", "cancelled", "failed", "interrupted", "awaiting_approval"]


class Usage(msgspec.Struct, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0


class _Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, frozen=True):
    run_id: str
    seq: int


class Start(_Event, tag="start"):
    """A run began: always the first event of a run."""

    conversation_id: str
    message_id: str
    agent: str


class Text(_Event, tag="text"):
    """A piece of assistant text."""

    content: str


class ToolCall(_Event, tag="tool_call"):
    """The agent is calling a tool."""

    call_id: str
    name: str
    arguments: dict[str, Any]


class ToolResult(_Event, tag="tool_result"):
    """A tool returned."""

    call_id: str
    name: str
    result: Any


class ApprovalRequest(_Event, tag="approval_request"):
    """The model called a tool that needs the user's yes: the run ends ``awaiting_approval``;
    deciding every such call of the run starts its continuation."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    description: str = ""  # the call in words, to ask a person: "Delete the task “buy milk”"


class Error(_Event, tag="error"):
    """The run failed; ``message`` is safe to show, details stay in the server log."""

    code: str
    message: str


class Done(_Event, tag="done"):
    """Always the last event of a run, exactly once."""

    status: DoneStatus
    usage: Usage | None = None


Event = Start | Text | ToolCall | ToolResult | ApprovalRequest | Error | Done

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes | str) -> Event:
    return _decoder.decode(data)


_DONE_PREFIX = b'{"type":"done"'


def is_done(payload: bytes) -> bool:
    """Cheap test on encoded bytes: msgspec writes the tag first."""
    return payload.startswith(_DONE_PREFIX)
