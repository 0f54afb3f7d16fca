"""AG-UI (protocol 1.0, what ``@ag-ui/client``'s ``HttpAgent`` speaks) over SSE.

``POST /api/{user_id}/ag-ui`` takes a ``RunAgentInput`` and answers ``data: <event>\\n\\n``
frames: ``RUN_STARTED``, text messages and tool calls, then ``RUN_FINISHED`` (outcome
``success`` or ``cancelled``) or ``RUN_ERROR``. The ids are the client's: ``threadId`` names a
conversation of the user's (an unknown one starts it), and the events echo ``threadId`` and
``runId``. Only the newest user message is read from ``messages`` (history comes from the store,
so a client cannot rewrite it); the client's ``tools``, ``context``, ``state`` and
``forwardedProps`` are accepted and not used: this agent's tools run on the server.

A ``runId`` is the send's idempotency key: posting it again follows the run it started.
Aborting the request is Stop, as on the plain SSE route.

Tool approvals are the protocol's interrupts: a run that reaches a tool needing the user's yes
ends with ``RUN_FINISHED`` whose outcome is ``interrupt``, one interrupt per waiting call (id
``<server run id>:<call id>``, ``reason: "tool_approval"``, the call's ``toolCallId``, its tool
and arguments in ``metadata``). The next run's ``resume`` answers them: ``resolved`` with the
payload ``{"approve": bool, "reason"?: str}``, or ``cancelled`` (a rejection). Once every call
is answered, that run streams the continuation; its ``messages`` are not read.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.params import JSONBody

from domain import events
from domain.approvals import Decision, run_call_id, split_run_call_id
from domain.errors import InvalidInput, NotFound
from domain.limits import MAX_CLIENT_ID_CHARS, check_text
from domain.runs import RunManager, continue_or_follow, cut_short_message, start_or_follow, unfinished_tool_result
from transports.event_stream import EventStream
from transports.http_errors import errors
from transports.reply_stream import Translated, following
from transports.route_specs import CHAT_ERRORS, NOT_BLANK, TEXT, event_stream
from transports.sse_framing import data_frames

PROTOCOL_VERSION = "1.0"
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

# -- what the client sends (RunAgentInput) -------------------------------------------------
# The protocol's objects are closed: a field it does not define is an error, not ignored.
# Open values (state, metadata, forwardedProps, a tool's parameters) are any JSON.


class _In(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class _Tagged(_In, tag_field="type"):
    pass


class AGUIDataSource(_Tagged, tag="data"):
    value: str
    mime_type: str


class AGUIUrlSource(_Tagged, tag="url"):
    value: str
    mime_type: str | None = None


class AGUIFileSource(_Tagged, tag="file"):
    value: str
    provider: str | None = None
    mime_type: str | None = None


PartSource = AGUIDataSource | AGUIUrlSource | AGUIFileSource


class AGUITextPart(_Tagged, tag="text"):
    text: str
    id: str | None = None
    metadata: Any = None


class AGUIImagePart(_Tagged, tag="image"):
    source: PartSource
    id: str | None = None
    metadata: Any = None


class AGUIAudioPart(_Tagged, tag="audio"):
    source: PartSource
    id: str | None = None
    metadata: Any = None


class AGUIVideoPart(_Tagged, tag="video"):
    source: PartSource
    id: str | None = None
    metadata: Any = None


class AGUIDocumentPart(_Tagged, tag="document"):
    source: PartSource
    id: str | None = None
    metadata: Any = None


ContentPart = AGUITextPart | AGUIImagePart | AGUIAudioPart | AGUIVideoPart | AGUIDocumentPart


class AGUIFunctionCall(_In):
    name: str
    arguments: str


class AGUIToolCall(_In):
    id: str
    type: Literal["function"]
    function: AGUIFunctionCall
    encrypted_value: str | None = None
    metadata: dict[str, Any] | None = None


class _Message(_In, tag_field="role", kw_only=True):
    id: str
    subagent_run_id: str | None = None
    metadata: dict[str, Any] | None = None


class AGUIDeveloperMessage(_Message, tag="developer"):
    content: str
    name: str | None = None
    encrypted_value: str | None = None


class AGUISystemMessage(_Message, tag="system"):
    content: str
    name: str | None = None
    encrypted_value: str | None = None


class AGUIAssistantMessage(_Message, tag="assistant"):
    content: str | None = None
    tool_calls: list[AGUIToolCall] | None = None
    name: str | None = None
    encrypted_value: str | None = None


class AGUIUserMessage(_Message, tag="user"):
    # What the run reads of it (``newest_user_text``), for the document: text that is not
    # blank, as a string or in its text parts.
    content: Annotated[str | list[ContentPart], msgspec.Meta(extra_json_schema={"extra": {"anyOf": [
        {"type": "string", **NOT_BLANK},
        {"type": "array",
         "contains": {"required": ["type", "text"], "properties": {"type": {"const": "text"}, "text": {"type": "string", **NOT_BLANK}}},
         "items": {"if": {"properties": {"type": {"const": "text"}}}, "then": {"properties": {"text": TEXT}}}},
    ]}})]
    name: str | None = None
    encrypted_value: str | None = None


class AGUIToolMessage(_Message, tag="tool"):
    content: str | list[ContentPart]
    tool_call_id: str
    error: str | None = None
    encrypted_value: str | None = None


class AGUIActivityMessage(_Message, tag="activity"):
    activity_type: str
    content: dict[str, Any]


class AGUIReasoningMessage(_Message, tag="reasoning"):
    content: str
    encrypted_value: str | None = None


Message = (AGUIDeveloperMessage | AGUISystemMessage | AGUIAssistantMessage | AGUIUserMessage | AGUIToolMessage
           | AGUIActivityMessage | AGUIReasoningMessage)


class AGUITool(_In):
    name: str
    description: str
    parameters: Any = None
    metadata: dict[str, Any] | None = None


class AGUIContext(_In):
    description: str
    value: str


class AGUIResumeEntry(_In):
    # ``resolved`` carries the user's decision (``ApprovalAnswer``), for the document.
    __schema_extra__ = {
        "schema_if": Schema(required=["status"], properties={"status": Schema(const="resolved")}),
        "then": Schema(required=["payload"], properties={"payload": Schema(
            type="object", required=["approve"], additional_properties=False,
            properties={"approve": Schema(type="boolean"), "reason": Schema(one_of=[
                Schema(type="string"), Schema(type="null")])},
        )}),
    }

    interrupt_id: str
    status: Literal["resolved", "cancelled"]
    payload: Any = None
    metadata: dict[str, Any] | None = None


class RunAgentInput(_In):
    """What ``HttpAgent.runAgent`` posts."""

    thread_id: Annotated[str, msgspec.Meta(
        min_length=1, max_length=MAX_CLIENT_ID_CHARS, extra_json_schema={"extra": TEXT},
        description="Your id for the conversation (per user): the same id continues it.")]
    run_id: Annotated[NonEmpty, msgspec.Meta(
        description="Your id for this run: posting it again follows the run it started.")]
    messages: Annotated[list[Message], msgspec.Meta(
        description="The thread's messages; the newest user message is what the run answers.",
        extra_json_schema={"extra": {"contains": {"required": ["role"], "properties": {"role": {"const": "user"}}}}},
    )]
    protocol_version: str | None = None
    parent_run_id: str | None = None
    state: Any = None
    tools: list[AGUITool] = []
    context: list[AGUIContext] = []
    forwarded_props: Any = None
    resume: Annotated[list[AGUIResumeEntry], msgspec.Meta(
        description="Answers to the tool approvals (interrupts) that ended the thread's last run: "
        "`resolved` with the payload `{\"approve\": bool, \"reason\"?: str}`, or `cancelled` (reject).")] = []


# -- what the server sends (AG-UI events) -----------------------------------------------------

class _Event(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, frozen=True):
    pass


class AGUIRunStarted(_Event, tag="RUN_STARTED"):
    thread_id: str
    run_id: str
    protocol_version: str
    parent_run_id: str | None = None
    metadata: dict[str, Any] | None = None


class AGUITextMessageStart(_Event, tag="TEXT_MESSAGE_START"):
    message_id: str
    role: Literal["assistant"]


class AGUITextMessageContent(_Event, tag="TEXT_MESSAGE_CONTENT"):
    message_id: str
    delta: str


class AGUITextMessageEnd(_Event, tag="TEXT_MESSAGE_END"):
    message_id: str


class AGUIToolCallStart(_Event, tag="TOOL_CALL_START"):
    tool_call_id: str
    tool_call_name: str
    parent_message_id: str


class AGUIToolCallArgs(_Event, tag="TOOL_CALL_ARGS"):
    tool_call_id: str
    delta: str


class AGUIToolCallEnd(_Event, tag="TOOL_CALL_END"):
    tool_call_id: str


class AGUIToolCallResult(_Event, tag="TOOL_CALL_RESULT"):
    message_id: str
    tool_call_id: str
    content: str


class AGUITokenUsage(msgspec.Struct, rename="camel", frozen=True):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class AGUISuccess(msgspec.Struct, tag_field="type", tag="success", frozen=True):
    pass


class AGUICancelled(msgspec.Struct, tag_field="type", tag="cancelled", frozen=True):
    pass


class AGUIInterrupt(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """A call waiting for the user's decision; a resume entry answers it by ``id``."""

    id: str
    reason: str
    tool_call_id: str
    message: str | None = None
    response_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class AGUIInterruptOutcome(msgspec.Struct, tag_field="type", tag="interrupt", frozen=True):
    interrupts: list[AGUIInterrupt]


class AGUIRunFinished(_Event, tag="RUN_FINISHED"):
    thread_id: str
    run_id: str
    outcome: AGUISuccess | AGUICancelled | AGUIInterruptOutcome
    usage: list[AGUITokenUsage] | None = None


class AGUIRunError(_Event, tag="RUN_ERROR"):
    message: str
    code: str
    usage: list[AGUITokenUsage] | None = None


Event = (AGUIRunStarted | AGUITextMessageStart | AGUITextMessageContent | AGUITextMessageEnd | AGUIToolCallStart
         | AGUIToolCallArgs | AGUIToolCallEnd | AGUIToolCallResult | AGUIRunFinished | AGUIRunError)
_encode = msgspec.json.Encoder().encode
TOOL_APPROVAL = "tool_approval"


class ApprovalAnswer(_In):
    """A ``resolved`` resume entry's payload: the user's decision on the call."""

    approve: bool
    reason: str | None = None


# What an interrupt's answer looks like, for a client that builds a form from it.
APPROVAL_ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"approve": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["approve"],
    "additionalProperties": False,
}


def approval_interrupt(run_id: str, call_id: str, name: str | None = None,
                       arguments: dict[str, Any] | None = None) -> AGUIInterrupt:
    return AGUIInterrupt(
        id=run_call_id(run_id, call_id), reason=TOOL_APPROVAL, tool_call_id=call_id,
        message=f"Allow {name}?" if name else None, response_schema=APPROVAL_ANSWER_SCHEMA,
        metadata={"toolName": name, "arguments": arguments} if name else None,
    )


class EventTranslator:
    """One run's chat events as AG-UI events for the client's ``threadId`` and ``runId``.

    Each model turn is one assistant message: its text and the tool calls it makes (their
    ``parentMessageId``); a tool's result is a tool message; text after it starts the next
    assistant message. A call cut short gets its result from ``unfinished_tool_result``, so a
    finished run leaves no call the client would take for one of its own to answer."""

    def __init__(self, thread_id: str, run_id: str, parent_run_id: str | None = None) -> None:
        self._thread_id, self._run_id, self._parent_run_id = thread_id, run_id, parent_run_id
        self._reply = ""  # the reply's message id: the first turn's, and the stem of every other id
        self._turn: str | None = None  # the current turn's assistant message
        self._turns = 0
        self._text: str | None = None  # that message, while its text is open
        self._calls: set[str] = set()  # calls without a result yet
        self._interrupts: list[AGUIInterrupt] = []  # calls waiting for approval
        self._error: events.Error | None = None

    def translate(self, event: events.Event) -> list[Event]:
        match event:
            case events.Start(run_id=run_id, conversation_id=conversation_id, message_id=message_id):
                self._reply = message_id
                return [AGUIRunStarted(
                    thread_id=self._thread_id, run_id=self._run_id, protocol_version=PROTOCOL_VERSION,
                    parent_run_id=self._parent_run_id,
                    metadata={"serverRunId": run_id, "conversationId": conversation_id},
                )]
            case events.Text(content=content, seq=seq):
                if self._text is not None:
                    return [AGUITextMessageContent(message_id=self._text, delta=content)]
                self._text = self._message(seq)
                return [AGUITextMessageStart(message_id=self._text, role="assistant"),
                        AGUITextMessageContent(message_id=self._text, delta=content)]
            case events.ToolCall(call_id=call_id, name=name, arguments=arguments, seq=seq):
                self._calls.add(call_id)
                return [
                    *self._end_text(),
                    AGUIToolCallStart(tool_call_id=call_id, tool_call_name=name, parent_message_id=self._message(seq)),
                    AGUIToolCallArgs(tool_call_id=call_id, delta=_encode(arguments).decode()),
                    AGUIToolCallEnd(tool_call_id=call_id),
                ]
            case events.ToolResult(call_id=call_id, result=result, seq=seq):
                self._calls.discard(call_id)
                self._turn = None  # the model answers the result in a new turn
                return [*self._end_text(), self._result(call_id, result, seq)]
            case events.ApprovalRequest(run_id=run_id, call_id=call_id, name=name, arguments=arguments):
                self._calls.discard(call_id)  # not cut short: it waits for the user
                self._interrupts.append(approval_interrupt(run_id, call_id, name, arguments))
                return []  # listed by the ``done`` that follows
            case events.Error():
                self._error = event  # reported, with the run's usage, by the ``done`` that follows
                return []
            case events.Done(status=status, usage=usage, seq=seq):
                unfinished = unfinished_tool_result(status)
                out = self._end_text()
                out += [self._result(call_id, unfinished, seq, n) for n, call_id in enumerate(sorted(self._calls))]
                self._calls.clear()
                return [*out, self._end(status, usage)]
        return []

    def _end(self, status: events.DoneStatus, usage: events.Usage | None) -> Event:
        used = None if usage is None else [AGUITokenUsage(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
        )]
        if status == "completed":
            return AGUIRunFinished(thread_id=self._thread_id, run_id=self._run_id, outcome=AGUISuccess(), usage=used)
        if status == "cancelled":  # a Stop is not a failure: the protocol's own outcome for it
            return AGUIRunFinished(thread_id=self._thread_id, run_id=self._run_id, outcome=AGUICancelled(), usage=used)
        if status == "awaiting_approval":
            return self.interrupted(self._interrupts, used)
        if status == "interrupted":
            return AGUIRunError(message=cut_short_message(status) or "", code="interrupted", usage=used)
        error = self._error
        return AGUIRunError(message=error.message if error else cut_short_message(status) or "",
                            code=error.code if error else "failed", usage=used)

    def interrupted(self, interrupts: list[AGUIInterrupt], usage: list[AGUITokenUsage] | None = None) -> Event:
        return AGUIRunFinished(thread_id=self._thread_id, run_id=self._run_id,
                               outcome=AGUIInterruptOutcome(interrupts), usage=usage)

    def still_waiting(self, run_id: str, call_ids: list[str]) -> list[Event]:
        """A resume that answered some of a run's calls: a run that ends still waiting for the rest."""
        return [AGUIRunStarted(thread_id=self._thread_id, run_id=self._run_id, protocol_version=PROTOCOL_VERSION,
                               parent_run_id=self._parent_run_id),
                self.interrupted([approval_interrupt(run_id, call_id) for call_id in call_ids])]

    def _message(self, seq: int) -> str:
        """The current turn's assistant message id, minted at its first event."""
        if self._turn is None:
            self._turn = f"{self._reply}-{seq}" if self._turns else self._reply
            self._turns += 1
        return self._turn

    def _end_text(self) -> list[Event]:
        if self._text is None:
            return []
        ended, self._text = self._text, None
        return [AGUITextMessageEnd(message_id=ended)]

    def _result(self, call_id: str, result: Any, seq: int, n: int = 0) -> AGUIToolCallResult:
        # A tool's structured result travels as its JSON text, as the protocol asks.
        content = result if isinstance(result, str) else _encode(result).decode()
        return AGUIToolCallResult(message_id=f"{self._reply}-{seq}" + (f"-{n}" if n else ""),
                                  tool_call_id=call_id, content=content)


def agui_framing(translator: EventTranslator) -> Translated:
    return Translated("ag_ui", translator, _encode)


AGUI_STREAM_RESPONSE = {
    200: ResponseSpec(
        data_container=event_stream(Event, name="AGUIEventFrame"), media_type="text/event-stream",
        generate_examples=False,
        description="`data: <AG-UI event JSON>\\n\\n` frames (this schema), from `RUN_STARTED` to one "
        "`RUN_FINISHED` or `RUN_ERROR`, with `: ping` comments while idle.",
    ),
}


def newest_user_text(messages: list[Message]) -> str:
    for message in reversed(messages):
        if isinstance(message, AGUIUserMessage):
            if isinstance(message.content, str):
                return message.content
            return "".join(part.text for part in message.content if isinstance(part, AGUITextPart))
    raise InvalidInput("The request holds no user message.", field="messages")


def resume_decisions(resume: list[AGUIResumeEntry]) -> tuple[str, list[Decision]]:
    """The run the entries answer and the user's decisions, every entry checked before any
    is acted on. An entry: ``resolved`` with an ``ApprovalAnswer`` payload, or ``cancelled``
    (the call is rejected)."""
    run_ids, decisions = set(), []
    for n, entry in enumerate(resume):
        if (ids := split_run_call_id(entry.interrupt_id)) is None:
            raise NotFound("No such interrupt.")
        run_id, call_id = ids
        if entry.status == "cancelled":
            decisions.append(Decision(call_id, approve=False))
        else:
            try:
                answer = msgspec.convert(entry.payload, ApprovalAnswer)
            except msgspec.ValidationError as exc:
                raise InvalidInput(f'A resolved approval\'s payload is {{"approve": bool, "reason"?: str}}: {exc}',
                                   field=f"resume[{n}].payload") from None
            decisions.append(Decision(call_id, answer.approve, answer.reason))
        run_ids.add(run_id)
    if len(run_ids) > 1:
        raise InvalidInput("The resume entries answer interrupts of more than one run.", field="resume")
    return run_ids.pop(), decisions


def send_key(thread_id: str, run_id: str) -> str:
    """The send's idempotency key: the client's run, scoped by its thread. A digest, because
    two ids (``HttpAgent`` makes UUIDs) do not fit the 64 characters a client id may have."""
    return hashlib.sha256(f"ag-ui\0{thread_id}\0{run_id}".encode()).hexdigest()


class AGUIController(Controller):
    path = "/ag-ui"
    tags = ["ag-ui"]

    @post(
        "/",
        status_code=200,
        summary="AG-UI: run the agent on the thread's newest user message (protocol 1.0, SSE)",
        description="What `@ag-ui/client`'s `HttpAgent` posts. Answers AG-UI events as `data:` frames. "
        "`threadId` is your conversation id, `runId` your id for the run (posting it again follows that "
        "run). Only the newest user message is read. Aborting the request is Stop. A run waiting for tool "
        "approvals finishes with the `interrupt` outcome; the next run's `resume` answers it and streams "
        "the continuation.",
        responses={**AGUI_STREAM_RESPONSE, **errors(*CHAT_ERRORS)},
    )
    async def run(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], data: JSONBody[RunAgentInput],
    ) -> EventStream:
        check_text(data.thread_id, "threadId", "The thread id", MAX_CLIENT_ID_CHARS)
        translator = EventTranslator(data.thread_id, data.run_id, data.parent_run_id)
        if data.resume:
            return await resumed(runs, user, data, translator)
        text = newest_user_text(data.messages)
        conversation = await runs.conversation_of_client(user, data.thread_id)
        # The same run posted again follows that run.
        subscription = await start_or_follow(
            runs, user, text, conversation, client_conversation_id=None if conversation else data.thread_id,
            client_message_id=send_key(data.thread_id, data.run_id), on_leave="stop", transport="ag_ui",
        )
        return following(runs, subscription, agui_framing(translator))


async def resumed(runs: RunManager, user: str, data: RunAgentInput, translator: EventTranslator) -> EventStream:
    """A run that answers interrupts: each decision recorded; once the last is, the
    continuation streamed as this run. Answers sent again (a retried post) follow the
    thread's running reply, if one runs; otherwise they are refused as already decided (409)."""
    run_id, decisions = resume_decisions(data.resume)
    followed = await continue_or_follow(runs, user, run_id, decisions, data.thread_id, on_leave="stop",
                                        transport="ag_ui")
    if isinstance(followed, list):
        out = translator.still_waiting(run_id, followed)
        return EventStream(_once(data_frames(map(_encode, out))))
    return following(runs, subscription=followed, framing=agui_framing(translator))


async def _once(frames: bytes) -> AsyncIterator[bytes]:
    yield frames
