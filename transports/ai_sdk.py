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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from domain import conversations, events
from domain.errors import AlreadyStarted, InvalidInput, NotFound
from domain.runs import OnLeave, RunManager, Subscription, unfinished_tool_result
from domain.runs.observer import Transport
from transports.event_stream import EventStream
from transports.route_specs import AUTH_ERRORS, CHAT_ERRORS
from transports.sse import PING, SSE_HEADERS, data_frames, following

UI_STREAM_HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
DONE_FRAME = b"data: [DONE]\n\n"
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Trigger = Literal["submit-message", "regenerate-message"]


# -- what the client sends ---------------------------------------------------------------

class UIPart(msgspec.Struct, frozen=True):
    """A part of a UI message; only text parts are read (the rest the store already has)."""

    type: str
    text: str | None = None


class UIMessage(msgspec.Struct, frozen=True):
    id: str
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = []


class UIChatRequest(msgspec.Struct, frozen=True, rename="camel"):
    """``DefaultChatTransport``'s body; fields it adds from ``body`` options are ignored."""

    id: ClientId
    messages: list[UIMessage]
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
         | UIToolOutputAvailable | UIToolOutputError | UIError | UIFinish | UIAbort)
_encode = msgspec.json.Encoder().encode


class ChunkTranslator:
    """One run's chat events as UI message chunks: text between tool calls is one text part
    each; a call cut short ends as a tool error; ``done`` becomes finish, abort or an error."""

    def __init__(self) -> None:
        self._text: str | None = None  # the open text part's id
        self._calls: set[str] = set()  # calls without a result yet

    def translate(self, event: events.Event) -> list[Chunk]:
        match event:
            case events.Start(run_id=run_id, conversation_id=conversation_id, message_id=message_id):
                metadata = {"runId": run_id, "conversationId": conversation_id}
                return [UIStart(message_id=message_id, message_metadata=metadata), UIStartStep()]
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
            case events.ToolResult(call_id=call_id, result=result):
                self._calls.discard(call_id)
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
                    out.append(UIError(error_text="The server restarted; the reply was cut short."))
                metadata = None if usage is None else {
                    "usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens}
                }
                reason = {"completed": "stop", "failed": "error", "interrupted": "interrupted",
                          "awaiting_approval": "tool-calls"}[status]
                return [*out, UIFinish(finish_reason=reason, message_metadata=metadata)]
        return []

    def _end_text(self) -> list[Chunk]:
        if self._text is None:
            return []
        ended, self._text = self._text, None
        return [UITextEnd(id=ended)]


async def ui_frames(runs: RunManager, subscription: Subscription) -> AsyncIterator[bytes]:
    translator, streamed = ChunkTranslator(), runs.observer.streamed
    async for batch in subscription:
        if not batch:
            yield PING
            continue
        streamed("ai_sdk", len(batch))
        chunks = [chunk for payload in batch for chunk in translator.translate(events.decode(payload))]
        if chunks:
            yield data_frames(map(_encode, chunks))
    yield DONE_FRAME


UI_STREAM_RESPONSE = {
    200: ResponseSpec(
        data_container=Chunk, media_type="text/event-stream", generate_examples=False,
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
                      on_leave: OnLeave, *, idle: bool = True, transport: Transport = "ai_sdk") -> Subscription:
    """The reply a send asks for, followed: the newest user message answered (or, on
    regenerate, the last one answered again); the same UI message sent twice follows the
    reply it started."""
    conversation = await runs.conversation_of_client(user, chat_id)
    try:
        if trigger == "regenerate-message":
            said = conversation and await conversations.last_user_message_id(conversation)
            if not said:
                raise NotFound("No such chat.")
            run = await runs.start(user, "", conversation, again=said, transport=transport)
        else:
            message = newest_user_text(messages)
            text = "".join(part.text or "" for part in message.parts if part.type == "text")
            run = await runs.start(
                user, text, conversation, client_conversation_id=None if conversation else chat_id,
                # A UI message id is unique within its chat: scoped by the chat, it names one send.
                client_message_id=key if len(key := f"{chat_id}/{message.id}") <= 64 else None,
                transport=transport,
            )
        return runs.subscribe(run, on_leave=on_leave, idle=idle)
    except AlreadyStarted as sent:
        return await runs.follow(user, sent.run_id, idle=idle)


async def running_reply(runs: RunManager, user: str, chat_id: str, *, idle: bool = True) -> Subscription | None:
    """The chat's running reply from its start, followed; None when none runs."""
    conversation = await runs.conversation_of_client(user, chat_id)
    run_id = conversation and await runs.running_in(user, conversation)
    return await runs.follow(user, run_id, idle=idle) if run_id else None


class AISDKController(Controller):
    path = "/ai-sdk/chat"
    tags = ["ai-sdk"]

    @post(
        "/",
        status_code=200,
        summary="AI SDK: send a message, stream the reply (UI message stream v1)",
        description="What `useChat`'s `DefaultChatTransport` sends. Answers `data: <UI message chunk>` "
        "frames and `data: [DONE]`. Aborting is Stop unless the body says `onDisconnect: continue`.",
        responses=UI_STREAM_RESPONSE,
        raises=CHAT_ERRORS,
    )
    async def chat(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], data: JSONBody[UIChatRequest],
    ) -> EventStream:
        on_leave: OnLeave = "stop" if data.on_disconnect == "stop" else "continue"
        subscription = await start_reply(runs, user, data.id, data.messages, data.trigger, on_leave)
        return following(runs, subscription, ui_frames(runs, subscription), UI_STREAM_HEADERS)

    @get(
        "/{chat_id:str}/stream",
        summary="AI SDK: resume the chat's running reply (what `useChat({resume: true})` calls)",
        description="The running reply replayed from its start, then live; 204 when none runs.",
        responses={**UI_STREAM_RESPONSE, 204: NOTHING_RUNNING},
        raises=[*AUTH_ERRORS, NotFoundException, ValidationException],
    )
    async def resume(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], chat_id: FromPath[str],
    ) -> EventStream | Response[None]:
        subscription = await running_reply(runs, user, chat_id)
        if subscription is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return following(runs, subscription, ui_frames(runs, subscription), UI_STREAM_HEADERS)
