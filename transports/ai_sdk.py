"""The Vercel AI SDK's UI message stream (protocol v1) over SSE: what ``useChat`` and its
``DefaultChatTransport`` speak.

``POST /api/{user_id}/ai-sdk/chat`` takes the transport's body (``id``: the chat, ``messages``,
``trigger``, ``messageId``) and answers ``data: <chunk>\\n\\n`` frames ending in ``data: [DONE]``.
Only the newest user message is read from the body: history comes from the store, so a client
cannot rewrite it. Chat ids are the client's own (per user); an unknown one starts a
conversation known by it. ``GET …/ai-sdk/chat/{id}/stream`` is ``useChat({resume: true})``:
the chat's running reply replayed from its start and followed, or 204.

Aborting the request is Stop, as on the plain SSE route; a body field ``onDisconnect:
"continue"`` keeps the reply going instead (resume it; stop it with ``POST …/runs/{runId}/cancel``,
``runId`` being in the ``start`` chunk's metadata).

Tool approvals the SDK's way: a call that waits for the user's yes is a ``tool-approval-request``
chunk whose ``approvalId`` is ``<run id>:<call id>`` (the answer brings back only that and the
call id), and the reply finishes with ``tool-calls``. ``addToolApprovalResponse`` marks the part
``approval-responded``; the next request (``sendAutomaticallyWhen:
lastAssistantMessageIsCompleteWithApprovalResponses``) ends with that assistant message, and its
answers are the decisions. The continuation streams into the same message (its ``start`` chunk
keeps the message's id); a rejected call ends ``tool-output-denied``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from domain import conversations, events
from domain.approvals import Decision, run_call_id, split_run_call_id
from domain.errors import InvalidInput, NotFound
from domain.runs import (
    OnLeave,
    RunManager,
    Subscription,
    continue_or_follow,
    cut_short_message,
    running_reply,
    start_or_follow,
    unfinished_tool_result,
)
from domain.runs.observer import Transport
from transports.event_stream import EventStream
from transports.http_errors import errors
from transports.reply_stream import Translated, following
from transports.route_specs import CHAT_ERRORS, FOLLOW_ERRORS, NOT_BLANK, TEXT, event_stream
from transports.sse_framing import SSE_HEADERS, data_frames

UI_STREAM_HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
DONE_FRAME = b"data: [DONE]\n\n"
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, extra_json_schema={"extra": TEXT})]
Trigger = Literal["submit-message", "regenerate-message"]


# -- what the client sends ---------------------------------------------------------------

class UIApproval(msgspec.Struct, frozen=True):
    """A tool part's approval: the request's id; once the user answered, their answer."""

    id: str
    approved: bool | None = None
    reason: str | None = None


class UIPart(msgspec.Struct, frozen=True, rename="camel"):
    """A part of a UI message. Read: text parts (what the user said) and tool parts the user
    answered (``state: approval-responded``); the rest the store already has."""

    type: str
    text: str | None = None
    tool_call_id: str | None = None
    state: str | None = None
    approval: UIApproval | None = None


class UIMessage(msgspec.Struct, frozen=True):
    # What a send reads of a user message (``start_reply``), for the document: text parts whose
    # text is not blank together, and no NUL (PostgreSQL cannot store one).
    __schema_extra__ = {
        "schema_if": Schema(required=["role"], properties={"role": Schema(const="user")}),
        "then": Schema(required=["parts"], properties={"parts": Schema(
            contains=Schema(required=["type", "text"], properties={"type": Schema(const="text"),
                                                                   "text": Schema(type="string", **NOT_BLANK)}),
            items=Schema(schema_if=Schema(required=["type"], properties={"type": Schema(const="text")}),
                         then=Schema(properties={"text": Schema(**TEXT)})),
        )}),
    }

    id: Annotated[str, msgspec.Meta(extra_json_schema={"extra": TEXT})]
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = []


class UIChatRequest(msgspec.Struct, frozen=True, rename="camel"):
    """``DefaultChatTransport``'s body; fields it adds from ``body`` options are ignored."""

    id: ClientId
    messages: Annotated[list[UIMessage], msgspec.Meta(
        description="The chat's messages; a send answers the newest user message.",
        extra_json_schema={"extra": {"contains": {"required": ["role"], "properties": {"role": {"const": "user"}}}}},
    )]
    trigger: Trigger = "submit-message"
    message_id: str | None = None
    on_disconnect: Literal["stop", "continue"] = "stop"


# -- what the server sends (UI message chunks) -------------------------------------------

class _Chunk(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, frozen=True):
    pass


class UIStart(_Chunk, tag="start"):
    message_id: str
    message_metadata: dict[str, Any] | None = None


class UIStartStep(_Chunk, tag="start-step"):
    pass


class UIFinishStep(_Chunk, tag="finish-step"):
    pass


class UITextStart(_Chunk, tag="text-start"):
    id: str


class UITextDelta(_Chunk, tag="text-delta"):
    id: str
    delta: str


class UITextEnd(_Chunk, tag="text-end"):
    id: str


class UIToolInputAvailable(_Chunk, tag="tool-input-available"):
    tool_call_id: str
    tool_name: str
    input: Any


class UIToolOutputAvailable(_Chunk, tag="tool-output-available"):
    tool_call_id: str
    output: Any


class UIToolApprovalRequest(_Chunk, tag="tool-approval-request"):
    approval_id: str
    tool_call_id: str


class UIToolOutputDenied(_Chunk, tag="tool-output-denied"):
    tool_call_id: str


class UIToolOutputError(_Chunk, tag="tool-output-error"):
    tool_call_id: str
    error_text: str


class UIError(_Chunk, tag="error"):
    error_text: str


class UIFinish(_Chunk, tag="finish"):
    finish_reason: str | None = None
    message_metadata: dict[str, Any] | None = None


class UIAbort(_Chunk, tag="abort"):
    reason: str | None = None


Chunk = (UIStart | UIStartStep | UIFinishStep | UITextStart | UITextDelta | UITextEnd | UIToolInputAvailable
         | UIToolApprovalRequest | UIToolOutputAvailable | UIToolOutputDenied | UIToolOutputError | UIError | UIFinish
         | UIAbort)
_encode = msgspec.json.Encoder().encode


class ChunkTranslator:
    """One run's chat events as UI message chunks: text between tool calls is one text part
    each; a call cut short ends as a tool error, one waiting for approval asks for it; ``done``
    becomes finish, abort or an error.

    A continuation after approvals goes on in the client's message (``message_id``), and the
    calls the user rejected (``denied``) end as the SDK ends them: denied, not with a result."""

    def __init__(self, message_id: str | None = None, denied: frozenset[str] = frozenset()) -> None:
        self._message_id = message_id
        self._denied = denied
        self._text: str | None = None  # the open text part's id
        self._calls: set[str] = set()  # calls without a result yet

    def translate(self, event: events.Event) -> list[Chunk]:
        match event:
            case events.Start(run_id=run_id, conversation_id=conversation_id, message_id=message_id):
                metadata = {"runId": run_id, "conversationId": conversation_id}
                return [UIStart(message_id=self._message_id or message_id, message_metadata=metadata), UIStartStep()]
            case events.Text(content=content, seq=seq):
                out: list[Chunk] = []
                if self._text is None:
                    self._text = f"text-{seq}"
                    out.append(UITextStart(id=self._text))
                out.append(UITextDelta(id=self._text, delta=content))
                return out
            case events.ToolCall(call_id=call_id, name=name, arguments=arguments):
                self._calls.add(call_id)
                return [*self._end_text(), UIToolInputAvailable(tool_call_id=call_id, tool_name=name, input=arguments)]
            case events.ApprovalRequest(run_id=run_id, call_id=call_id):
                self._calls.discard(call_id)  # not cut short: it waits for the user
                return [UIToolApprovalRequest(approval_id=run_call_id(run_id, call_id), tool_call_id=call_id)]
            case events.ToolResult(call_id=call_id, result=result):
                self._calls.discard(call_id)
                if call_id in self._denied:
                    return [UIToolOutputDenied(tool_call_id=call_id)]
                return [UIToolOutputAvailable(tool_call_id=call_id, output=result)]
            case events.Error(message=message):
                return [*self._end_text(), UIError(error_text=message)]
            case events.Done(status=status, usage=usage):
                out = self._end_text()
                unfinished = unfinished_tool_result(status)["error"]
                out += [UIToolOutputError(tool_call_id=call_id, error_text=unfinished) for call_id in sorted(self._calls)]
                self._calls.clear()
                out.append(UIFinishStep())
                if status == "cancelled":
                    return [*out, UIAbort(reason="stopped")]
                if status == "interrupted":
                    out.append(UIError(error_text=cut_short_message(status) or ""))
                metadata = None if usage is None else {
                    "usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens}
                }
                reason = {"completed": "stop", "failed": "error", "interrupted": "interrupted",
                          "awaiting_approval": "tool-calls"}[status]
                return [*out, UIFinish(finish_reason=reason, message_metadata=metadata)]
        return []

    def still_waiting(self) -> list[Chunk]:
        """Answers recorded while other calls of the run still wait: nothing runs yet."""
        return [UIStart(message_id=self._message_id or ""), UIFinish(finish_reason="tool-calls")]

    def _end_text(self) -> list[Chunk]:
        if self._text is None:
            return []
        ended, self._text = self._text, None
        return [UITextEnd(id=ended)]


class Reply(NamedTuple):
    """What a send streams: a run followed, read by its translator; no subscription when the
    send recorded approval answers while other calls of the run still wait."""

    subscription: Subscription | None
    translator: ChunkTranslator


def encode_chunks(chunks: list[Chunk]) -> list[bytes]:
    return [_encode(chunk) for chunk in chunks]


def ui_framing(translator: ChunkTranslator) -> Translated:
    return Translated("ai_sdk", translator, _encode, end=DONE_FRAME)


async def _each(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame


UI_STREAM_RESPONSE = {
    200: ResponseSpec(
        data_container=event_stream(Chunk, name="UIChunkFrame", done_marker="[DONE]"),
        media_type="text/event-stream", generate_examples=False,
        description="`data: <UI message chunk JSON>` frames (this schema), then `data: [DONE]`.",
    ),
}
NOTHING_RUNNING = ResponseSpec(data_container=None, description="No reply is running in this chat.")


def newest_user_text(messages: list[UIMessage]) -> UIMessage:
    for message in reversed(messages):
        if message.role == "user":
            return message
    raise InvalidInput("The request holds no user message.", field="messages")



async def start_reply(runs: RunManager, user: str, chat_id: str, messages: list[UIMessage], trigger: Trigger,
                      on_leave: OnLeave, *, idle: bool = True, transport: Transport = "ai_sdk") -> Reply:
    """The reply a send asks for, followed: the newest user message answered (or, on
    regenerate, the last one answered again; or, when the send answers tool approvals, the
    run's continuation); the same UI message sent twice follows the reply it started."""
    if trigger == "submit-message" and (answered := answered_approvals(messages)) is not None:
        return await continue_after_approvals(runs, user, chat_id, messages[-1].id, *answered, on_leave, idle=idle,
                                              transport=transport)
    conversation = await runs.conversation_of_client(user, chat_id)
    if trigger == "regenerate-message":
        said = conversation and await conversations.last_user_message_id(conversation)
        if not said:
            raise NotFound("No such chat.")
        subscription = await start_or_follow(runs, user, "", conversation, again=said, on_leave=on_leave, idle=idle,
                                             transport=transport)
    else:
        message = newest_user_text(messages)
        text = "".join(part.text or "" for part in message.parts if part.type == "text")
        subscription = await start_or_follow(
            runs, user, text, conversation, client_conversation_id=None if conversation else chat_id,
            # A UI message id is unique within its chat: scoped by the chat, it names one send.
            client_message_id=key if len(key := f"{chat_id}/{message.id}") <= 64 else None,
            on_leave=on_leave, idle=idle, transport=transport,
        )
    return Reply(subscription, ChunkTranslator())


def answered_approvals(messages: list[UIMessage]) -> tuple[str, list[Decision]] | None:
    """The run and the user's decisions, when the send answers its tool approvals: the last
    message is the assistant's, with tool parts ``approval-responded`` (what
    ``addToolApprovalResponse`` leaves); None for any other send."""
    answered = [part for part in messages[-1].parts if part.state == "approval-responded"] if messages else []
    if not answered or messages[-1].role != "assistant":
        return None
    run_ids, decisions = set(), []
    for part in answered:
        if part.approval is None or part.approval.approved is None:
            raise InvalidInput("An answered tool approval needs `approval.approved`.", field="messages")
        if (ids := split_run_call_id(part.approval.id)) is None:
            raise NotFound("No such approval request.")
        run_id, call_id = ids
        if call_id != part.tool_call_id:
            raise InvalidInput("The approval id names another tool call than its part.", field="messages")
        run_ids.add(run_id)
        decisions.append(Decision(call_id, part.approval.approved, part.approval.reason))
    if len(run_ids) > 1:
        raise InvalidInput("The answered approvals belong to more than one reply.", field="messages")
    return run_ids.pop(), decisions


async def continue_after_approvals(runs: RunManager, user: str, chat_id: str, message_id: str, run_id: str,
                                   decisions: list[Decision], on_leave: OnLeave, *, idle: bool,
                                   transport: Transport) -> Reply:
    """Each decision recorded; the continuation, once the last is, streamed into the client's
    message. Answers sent again (a retried request) follow the chat's running reply, if one
    runs; otherwise they are refused as already decided (409)."""
    translator = ChunkTranslator(message_id, frozenset(d.call_id for d in decisions if not d.approve))
    followed = await continue_or_follow(runs, user, run_id, decisions, chat_id, on_leave=on_leave, idle=idle,
                                        transport=transport)
    return Reply(None if isinstance(followed, list) else followed, translator)


class AISDKController(Controller):
    path = "/ai-sdk/chat"
    tags = ["ai-sdk"]

    @post(
        "/",
        status_code=200,
        summary="AI SDK: send a message, stream the reply (UI message stream v1)",
        description="What `useChat`'s `DefaultChatTransport` sends. Answers `data: <UI message chunk>` "
        "frames and `data: [DONE]`. Aborting is Stop unless the body says `onDisconnect: continue`.",
        responses={**UI_STREAM_RESPONSE, **errors(*CHAT_ERRORS)},
    )
    async def chat(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], data: JSONBody[UIChatRequest],
    ) -> EventStream:
        on_leave: OnLeave = "stop" if data.on_disconnect == "stop" else "continue"
        subscription, translator = await start_reply(runs, user, data.id, data.messages, data.trigger, on_leave)
        if subscription is None:
            frames = [data_frames(encode_chunks(translator.still_waiting())), DONE_FRAME]
            return EventStream(_each(frames), headers=UI_STREAM_HEADERS)
        return following(runs, subscription, ui_framing(translator), UI_STREAM_HEADERS)

    @get(
        "/{chat_id:str}/stream",
        summary="AI SDK: resume the chat's running reply (what `useChat({resume: true})` calls)",
        description="The running reply replayed from its start, then live; 204 when none runs.",
        responses={**UI_STREAM_RESPONSE, 204: NOTHING_RUNNING, **errors(*FOLLOW_ERRORS)},
    )
    async def resume(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], chat_id: FromPath[str],
    ) -> EventStream | Response[None]:
        subscription = await running_reply(runs, user, chat_id)
        if subscription is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return following(runs, subscription, ui_framing(ChunkTranslator()), UI_STREAM_HEADERS)
