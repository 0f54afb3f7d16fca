"""The ChatKit server protocol: one ``POST /chatkit`` for the stock ChatKit web client.

Threads are conversations and items are their messages, from the same store and run
manager as the plain API. A user message is a ``user_message`` item, the assistant's reply
an ``assistant_message``, each tool call a ``workflow`` item with one ``custom`` task; hidden
notes for the model are never sent. Item ids are message ids (tool calls: ``wf_`` + the call
id), so an item keeps its id from its first stream event to every later read.

A tool call that needs the user's yes is a ``widget`` item (``approval_`` + the call id): a card
that says the call in words, with Approve and Reject buttons whose actions come back as
``threads.custom_action``. Deciding replaces the card with one that shows the decision and
streams the continuation; reads rebuild the card from the approval as stored.

Streaming requests answer ``data: <json>\\n\\n`` frames; closing the connection is ChatKit's
Stop and cancels the run (its partial text and a hidden note for the model are stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn

import msgspec
from litestar import Controller, MediaType, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody
from piccolo.engine.base import Engine

from domain import conversations, events, feedback
from domain.approvals import SUPERSEDED, Decision, describe
from domain.conversations import (
    ApprovalView,
    ConversationView,
    MessagePage,
    MessageView,
    PageOrder,
    ToolRecord,
)
from domain.errors import ChatError, InvalidInput, NotFound
from domain.events import DoneStatus
from domain.limits import Limits
from domain.runs import ActiveRun, RunManager, cut_short_message, unfinished_tool_result
from transports.chatkit_types import (
    ActionConfig,
    ActiveStatus,
    AssistantMessageItem,
    AttachmentsCreate,
    AttachmentsDelete,
    Button,
    Card,
    SERVED_REQUEST,
    ChatKitRequest,
    ContentPartAdded,
    ContentPartDone,
    CustomActionParams,
    CustomSummary,
    CustomTask,
    ErrorEvent,
    InferenceOptions,
    InputTag,
    InputText,
    InputTranscribe,
    ItemPage,
    ItemsFeedback,
    ItemsList,
    OutputText,
    Row,
    StreamEvent,
    StreamingRequest,
    StreamOptions,
    StreamOptionsEvent,
    TextDelta,
    Thread,
    ThreadCreated,
    ThreadItem,
    ThreadItemAdded,
    ThreadItemDone,
    ThreadItemReplaced,
    ThreadItemUpdated,
    ThreadPage,
    ThreadsAddUserMessage,
    ThreadsCreate,
    ThreadsCustomAction,
    ThreadsDelete,
    ThreadsGetById,
    ThreadsList,
    ThreadsRetryAfterItem,
    ThreadsSyncCustomAction,
    ThreadsUpdate,
    ThreadUpdated,
    UserMessageInput,
    UserMessageItem,
    WidgetItem,
    WidgetText,
    Workflow,
    WorkflowItem,
    WorkflowTaskUpdated,
)
from transports.event_stream import EventStream
from transports.http_errors import TOKEN_ONLY, errors
from transports.route_specs import CHAT_ERRORS, event_stream
from transports.reply_stream import Translated, reply_frames
from transports.sse_framing import SSE_HEADERS, data_frames

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(ChatKitRequest)
_encoder = msgspec.json.Encoder()


# -- requests ---------------------------------------------------------------------------

def decode_request(body: bytes) -> ChatKitRequest:
    """The envelope, or a 400 that says what is wrong with it."""
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
        reason, _, where = str(exc).partition(" - at `")
        key = where.rstrip("`").removeprefix("$.") or "body"
        if key == "type":
            kind = _raw_type(body)
            _bad_request(
                f"Unknown ChatKit request type {kind!r}." if kind else f"Invalid ChatKit request: {reason}.", key
            )
        _bad_request(f"Invalid ChatKit request: {reason}" + (f" (at {key})." if key != "body" else "."), key)
    except msgspec.DecodeError as exc:
        _bad_request(f"The body is not JSON ({exc}).", "body")
    except UnicodeDecodeError:
        _bad_request("The body is not valid UTF-8.", "body")
    except RecursionError:
        _bad_request("The body is nested too deeply.", "body")


def _raw_type(body: bytes) -> str | None:
    with contextlib.suppress(msgspec.DecodeError):
        value = msgspec.json.decode(body)
        kind = value.get("type") if isinstance(value, dict) else None
        return kind if isinstance(kind, str) else None
    return None


def _bad_request(message: str, key: str) -> NoReturn:
    raise InvalidInput(message, field=key)


def _unsupported(kind: str, what: str) -> NoReturn:
    _bad_request(f"{kind} is not supported: this server {what}.", "type")


def message_text(content: Iterable[InputText | InputTag]) -> str:
    """What the user wrote, as the model and the plain API see it: tags read as their text."""
    return "".join(part.text for part in content)


# -- conversations as threads and items -------------------------------------------------

def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _json_text(value: Any) -> str:
    return _encoder.encode(value).decode()


def workflow_id(call_id: str) -> str:
    return f"wf_{call_id}"


def _calling(tool: ToolRecord) -> CustomTask:
    return CustomTask(
        status_indicator="loading", title=f"Calling {tool.name}",
        content=_json_text(tool.arguments) if tool.arguments else None,
    )


def workflow_item(thread_id: str, created_at: datetime, tool: ToolRecord) -> WorkflowItem:
    """A finished tool call: one complete task whose content is the tool's result."""
    title = f"Called {tool.name}"
    task = CustomTask(status_indicator="complete", title=title, content=_json_text(tool.result))
    return WorkflowItem(
        id=workflow_id(tool.call_id), thread_id=thread_id, created_at=_utc(created_at),
        workflow=Workflow(type="custom", tasks=[task], expanded=False, summary=CustomSummary(title=title)),
    )


def user_item(thread_id: str, message: MessageView) -> UserMessageItem:
    return UserMessageItem(
        id=message.id, thread_id=thread_id, created_at=_utc(message.created_at),
        content=[InputText(text=message.content)], attachments=[], inference_options=InferenceOptions(),
    )


def assistant_item(thread_id: str, item_id: str, created_at: datetime, text: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id, thread_id=thread_id, created_at=_utc(created_at),
        content=[OutputText(text=text, annotations=[])],
    )


def item_of(thread_id: str, message: MessageView) -> ThreadItem | None:
    if message.role == "user":
        return user_item(thread_id, message)
    if message.role == "assistant":
        return assistant_item(thread_id, message.id, message.created_at, message.content)
    if message.role == "tool" and message.tool is not None:
        return workflow_item(thread_id, message.created_at, message.tool)
    return None  # hidden: a note for the model only


APPROVAL_ACTION = "approval"


class ApprovalPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What an approval card's button sends back: which call, and the user's answer."""

    run_id: str
    call_id: str
    approve: bool


def approval_id(call_id: str) -> str:
    return f"approval_{call_id}"


def _outcome(approval: ApprovalView) -> WidgetText:
    if approval.decision == "approved":
        return WidgetText(value="Approved", color="success", size="sm")
    reason = "you sent a new message instead" if approval.reason == SUPERSEDED else approval.reason
    return WidgetText(value=f"Declined: {reason}" if reason else "Declined", color="danger", size="sm")


def approval_item(thread_id: str, approval: ApprovalView) -> WidgetItem:
    """A call waiting for the user's yes: a card asking in words, with Approve and Reject
    buttons; once decided, the same card (same id) says what was decided instead."""
    words = describe(approval.name, approval.arguments)
    if approval.decision is None:
        buttons = [
            Button(label=label, style=style, onClickAction=ActionConfig(
                type=APPROVAL_ACTION, payload=ApprovalPayload(approval.run_id, approval.call_id, approve),
                handler="server",
            ))
            for label, style, approve in (("Approve", "primary", True), ("Reject", "secondary", False))
        ]
        children: list[WidgetText | Row] = [WidgetText(value=f"{words}?", weight="semibold"), Row(buttons, gap=2)]
    else:
        children = [WidgetText(value=words, weight="semibold"), _outcome(approval)]
    return WidgetItem(
        id=approval_id(approval.call_id), thread_id=thread_id, created_at=_utc(approval.created_at),
        widget=Card(children), copy_text=words,
    )


def _on_page(approval: ApprovalView, page: MessagePage, order: PageOrder) -> bool:
    """Whether a card belongs to this page of messages. A card sorts just after the messages of
    its instant (its reply's text is written then), so a page holds the cards between its cursor
    and its last message, or every later one on the last page."""
    at, since = approval.created_at, page.after_at
    until = page.messages[-1].created_at if page.has_more and page.messages else None
    if order == "asc":
        return (since is None or at > since) and (until is None or at <= until)
    return (since is None or at < since) and (until is None or at >= until)


def item_page(thread_id: str, page: MessagePage, order: PageOrder = "asc",
              approvals: Iterable[ApprovalView] = ()) -> ItemPage:
    """A page of messages as items, with the approval cards of its stretch of time among them."""
    shown = [(m.created_at, 0, item) for m in page.messages if (item := item_of(thread_id, m)) is not None]
    cards = [(a.created_at, 1, approval_item(thread_id, a)) for a in approvals if _on_page(a, page, order)]
    if order == "desc":
        cards.reverse()
    # A stable sort: messages keep their order among themselves, and so do cards.
    merged = sorted(shown + cards, key=lambda entry: entry[:2], reverse=order == "desc")
    after = page.messages[-1].id if page.has_more and page.messages else None
    return ItemPage(data=[item for *_, item in merged], has_more=page.has_more, after=after)


_NO_ITEMS = ItemPage(data=[], has_more=False)


def thread_of(conversation: ConversationView, items: ItemPage = _NO_ITEMS) -> Thread:
    return Thread(
        id=conversation.id, title=conversation.title, created_at=_utc(conversation.created_at),
        status=ActiveStatus(), metadata={}, items=items,
    )


# -- a run as ChatKit events ------------------------------------------------------------

class ReplyTranslator:
    """One run's chat events as ChatKit events.

    The assistant message streams as added → content_part.added → text_deltas →
    content_part.done → done, under the run's message id; each tool call is a workflow item,
    added (loading) at the call and done (complete) at its result. After an ``error`` the
    translation has ended and says nothing more.
    """

    def __init__(self, thread_id: str, assistant_id: str):
        self.thread_id = thread_id
        self.assistant_id = assistant_id
        self.ended = False
        self._text: list[str] = []
        self._assistant_at: datetime | None = None
        self._calls: dict[str, tuple[datetime, ToolRecord]] = {}
        self._waiting: set[str] = set()  # calls waiting for approval: open until decided

    def translate(self, event: events.Event) -> list[StreamEvent]:
        if self.ended:
            return []
        match event:
            case events.Text(content=content):
                return self._text_delta(content)
            case events.ToolCall(call_id=call_id, name=name, arguments=arguments):
                at, tool = _now(), ToolRecord(call_id, name, arguments)
                self._calls[call_id] = (at, tool)
                item = WorkflowItem(
                    id=workflow_id(call_id), thread_id=self.thread_id, created_at=at,
                    workflow=Workflow(type="custom", tasks=[_calling(tool)], expanded=False),
                )
                return [ThreadItemAdded(item=item)]
            case events.ToolResult(call_id=call_id, name=name, result=result):
                return self._tool_done(call_id, name, result)
            case events.ApprovalRequest(run_id=run_id, call_id=call_id, name=name, arguments=arguments):
                return self._ask(ApprovalView(run_id, call_id, name, arguments, _now()))
            case events.Error(message=message):
                self.ended = True
                return [ErrorEvent(code="custom", message=message, allow_retry=True)]
            case events.Done(status=status):
                return self._finish(status)
        return []

    def _text_delta(self, content: str) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._assistant_at is None:
            self._assistant_at = _now()
            out.append(ThreadItemAdded(item=AssistantMessageItem(
                id=self.assistant_id, thread_id=self.thread_id, created_at=self._assistant_at, content=[],
            )))
            out.append(ThreadItemUpdated(
                item_id=self.assistant_id,
                update=ContentPartAdded(content_index=0, content=OutputText(text="", annotations=[])),
            ))
        self._text.append(content)
        out.append(ThreadItemUpdated(item_id=self.assistant_id, update=TextDelta(content_index=0, delta=content)))
        return out

    def _ask(self, approval: ApprovalView) -> list[StreamEvent]:
        """The call's workflow stays open, no longer loading: the card asks, and the
        continuation's result completes it."""
        out: list[StreamEvent] = []
        self._waiting.add(approval.call_id)
        if approval.call_id in self._calls:
            task = CustomTask(status_indicator="none", title=f"{approval.name} waits for your approval",
                              content=_json_text(approval.arguments) if approval.arguments else None)
            out.append(ThreadItemUpdated(item_id=workflow_id(approval.call_id),
                                         update=WorkflowTaskUpdated(task_index=0, task=task)))
        out.append(ThreadItemDone(item=approval_item(self.thread_id, approval)))
        return out

    def _tool_done(self, call_id: str, name: str, result: Any) -> list[StreamEvent]:
        pending = self._calls.pop(call_id, None)
        at, tool = pending or (_now(), ToolRecord(call_id, name, {}))
        item = workflow_item(self.thread_id, at, msgspec.structs.replace(tool, result=result))
        out: list[StreamEvent] = []
        if pending is not None:
            out.append(ThreadItemUpdated(
                item_id=item.id, update=WorkflowTaskUpdated(task_index=0, task=item.workflow.tasks[0])
            ))
        out.append(ThreadItemDone(item=item))
        return out

    def _finish(self, status: DoneStatus) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        # Calls cut short: shown with the result they are stored with.
        for call_id, (_, tool) in list(self._calls.items()):
            if call_id not in self._waiting:
                out += self._tool_done(call_id, tool.name, unfinished_tool_result(status))
        if self._assistant_at is not None:
            final = OutputText(text="".join(self._text), annotations=[])
            out.append(ThreadItemUpdated(
                item_id=self.assistant_id, update=ContentPartDone(content_index=0, content=final)
            ))
            out.append(ThreadItemDone(item=AssistantMessageItem(
                id=self.assistant_id, thread_id=self.thread_id, created_at=self._assistant_at, content=[final],
            )))
        if (words := cut_short_message(status)) is not None:
            out.append(ErrorEvent(code="custom", message=words, allow_retry=True))
        self.ended = True
        return out


def frames(batch: Iterable[StreamEvent]) -> bytes:
    return data_frames(map(_encoder.encode, batch))


def error_frame(message: str, *, allow_retry: bool = False) -> bytes:
    return frames([ErrorEvent(code="custom", message=message, allow_retry=allow_retry)])


def chat_error_frame(exc: ChatError) -> bytes:
    return error_frame(exc.message, allow_retry=exc.allow_retry)


class _Preamble(msgspec.Struct, frozen=True):
    """What to say before the reply: a new thread, the user's message, its title, or the
    approval card the decision that started it updated."""

    new_thread: bool
    echo_user_message: bool
    decided: WidgetItem | None = None


async def _superseded(run: ActiveRun) -> list[WidgetItem]:
    """The cards this run's message declined (a new message answers what still waited): shown
    decided at once, so their buttons go."""
    said = run.new.user_message
    if said is None or run.new.created_conversation:
        return []
    return [
        approval_item(run.conversation_id, approval)
        for approval in await conversations.list_approvals(run.conversation_id)
        if approval.reason == SUPERSEDED and approval.decided_at is not None and approval.decided_at >= said.created_at
    ]


async def _follow(runs: RunManager, run: ActiveRun, preamble: _Preamble) -> AsyncIterator[bytes]:
    """The run's events as ChatKit frames; leaving early (the client closed) is Stop."""
    subscription = runs.subscribe(run, on_leave="stop", idle=False)
    try:
        head: list[StreamEvent] = []
        created: Thread | None = None
        message = run.new.user_message if preamble.echo_user_message else None
        if message is not None:
            if preamble.new_thread:
                # The conversation began with its message, at the same instant.
                created = Thread(
                    id=run.conversation_id, created_at=_utc(message.created_at), status=ActiveStatus(),
                    metadata={}, items=_NO_ITEMS,
                )
                head.append(ThreadCreated(thread=created))
            head.append(ThreadItemDone(item=user_item(run.conversation_id, message)))
        head.append(StreamOptionsEvent(stream_options=StreamOptions(allow_cancel=True)))
        if preamble.decided is not None:
            head.append(ThreadItemReplaced(item=preamble.decided))
        head += [ThreadItemReplaced(item=card) for card in await _superseded(run)]
        if created is not None and run.new.title:
            # Titled from the first message: announced at once, so a Stop or a failure keeps it.
            head.append(ThreadUpdated(thread=msgspec.structs.replace(created, title=run.new.title)))
        yield frames(head)
        framing = Translated("chatkit", ReplyTranslator(run.conversation_id, run.message_id), _encoder.encode)
        async with contextlib.aclosing(reply_frames(runs, subscription, framing)) as reply:
            async for framed in reply:
                yield framed
    finally:
        await subscription.aclose()


async def message_stream(runs: RunManager, user: str, message: UserMessageInput,
                         thread_id: str | None) -> AsyncIterator[bytes]:
    """``threads.create`` (no thread id) and ``threads.add_user_message``."""
    try:
        if message.attachments:
            raise InvalidInput("Attachments are not supported by this server.", field="attachments")
        run = await runs.start(user, message_text(message.content), thread_id, transport="chatkit")
    except ChatError as exc:
        yield chat_error_frame(exc)
        return
    async with contextlib.aclosing(_follow(runs, run, _Preamble(thread_id is None, echo_user_message=True))) as reply:
        async for frame in reply:
            yield frame


async def retry_stream(runs: RunManager, user: str, thread_id: str, item_id: str) -> AsyncIterator[bytes]:
    """``threads.retry_after_item``: answer that user message again. What followed it is
    dropped; the client drops those items itself (the reference sends no ``removed`` events)."""
    try:
        run = await runs.start(user, "", thread_id, again=item_id, transport="chatkit")
    except ChatError as exc:
        yield chat_error_frame(exc)
        return
    async with contextlib.aclosing(_follow(runs, run, _Preamble(new_thread=False, echo_user_message=False))) as reply:
        async for frame in reply:
            yield frame


def _approval_of(action_payload: Any) -> ApprovalPayload:
    try:
        return msgspec.convert(action_payload, ApprovalPayload)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"The approval action is malformed: {exc}.", field="action.payload") from None


async def custom_action_stream(runs: RunManager, user: str, params: CustomActionParams) -> AsyncIterator[bytes]:
    """``threads.custom_action`` from an approval card: record the decision, show it on the
    card, and stream the continuation once every call of that reply is decided."""
    try:
        if params.action.type != APPROVAL_ACTION:
            raise InvalidInput(f"This server has no action {params.action.type!r}.", field="action.type")
        payload = _approval_of(params.action.payload)
        conversation = await _owned(user, params.thread_id)
        asked = next((a for a in await conversations.list_approvals(conversation.id)
                      if a.run_id == payload.run_id and a.call_id == payload.call_id), None)
        if asked is None or params.item_id not in (None, approval_id(asked.call_id)):
            raise NotFound("No such approval in this thread.")
        decided = await runs.decide(user, payload.run_id, Decision(payload.call_id, payload.approve), transport="chatkit")
    except ChatError as exc:
        yield chat_error_frame(exc)
        return
    card = approval_item(conversation.id, msgspec.structs.replace(
        asked, decision="approved" if payload.approve else "rejected"
    ))
    if isinstance(decided, list):  # other calls of that reply still wait: only the card changes
        yield frames([StreamOptionsEvent(stream_options=StreamOptions(allow_cancel=True)),
                      ThreadItemReplaced(item=card)])
        return
    preamble = _Preamble(new_thread=False, echo_user_message=False, decided=card)
    async with contextlib.aclosing(_follow(runs, decided, preamble)) as reply:
        async for frame in reply:
            yield frame


async def guarded(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Any failure becomes an ``error`` event that ends the stream, never a broken body."""
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        try:
            async for frame in stream:
                yield frame
        except Exception:
            log.exception("ChatKit stream failed")
            yield error_frame("Something went wrong on the server. Please try again.", allow_retry=True)


async def unsupported_stream(kind: str) -> AsyncIterator[bytes]:
    await asyncio.sleep(0)
    yield error_frame(f"{kind} is not supported by this server.")


# -- JSON requests ----------------------------------------------------------------------

async def _owned(user: str, thread_id: str) -> ConversationView:
    conversation = await conversations.get_conversation(user, thread_id)
    if conversation is None:
        raise NotFound("No such thread.")
    return conversation


async def answer(request: ChatKitRequest, user: str, db: Engine, runs: RunManager, limits: Limits) -> bytes:
    """The JSON body for a non-streaming request."""
    match request:
        case ThreadsGetById(params=params):
            conversation = await _owned(user, params.thread_id)
            page = await conversations.page_messages(conversation.id, limits.items_page, "asc")
            approvals = await conversations.list_approvals(conversation.id)
            return _encoder.encode(thread_of(conversation, item_page(conversation.id, page, "asc", approvals)))
        case ThreadsList(params=params):
            threads = await conversations.page_conversations(
                user, limits.items_page_size(params.limit), params.order, params.after
            )
            found = threads.conversations
            after = found[-1].id if threads.has_more and found else None
            return _encoder.encode(ThreadPage(data=[thread_of(c) for c in found], has_more=threads.has_more,
                                              after=after))
        case ItemsList(params=params):
            conversation = await _owned(user, params.thread_id)
            page = await conversations.page_messages(
                conversation.id, limits.items_page_size(params.limit), params.order, params.after
            )
            approvals = await conversations.list_approvals(conversation.id)
            return _encoder.encode(item_page(conversation.id, page, params.order, approvals))
        case ThreadsUpdate(params=params):
            if not await runs.rename_conversation(user, params.thread_id, params.title.strip()):
                raise NotFound("No such thread.")
            return _encoder.encode(thread_of(await _owned(user, params.thread_id)))
        case ThreadsDelete(params=params):
            if not await runs.delete_conversation(user, params.thread_id):
                raise NotFound("No such thread.")
            return b"{}"
        case ItemsFeedback(params=params):
            rating = "up" if params.kind == "positive" else "down"
            if not await feedback.rate_items(db, user, params.thread_id, params.item_ids, rating, runs.observer):
                raise NotFound("No such thread.")
            return b"{}"
        case AttachmentsCreate() | AttachmentsDelete():
            _unsupported(request.__struct_config__.tag, "does not accept attachments")
        case InputTranscribe():
            _unsupported("input.transcribe", "has no speech-to-text")
        case ThreadsSyncCustomAction():
            _unsupported("threads.sync_custom_action", "answers widget actions as a stream (threads.custom_action)")
    raise AssertionError(f"unhandled ChatKit request {type(request).__name__}")


def stream_for(request: StreamingRequest, user: str, runs: RunManager) -> AsyncIterator[bytes]:
    match request:
        case ThreadsCreate(params=params):
            return message_stream(runs, user, params.input, None)
        case ThreadsAddUserMessage(params=params):
            return message_stream(runs, user, params.input, params.thread_id)
        case ThreadsRetryAfterItem(params=params):
            return retry_stream(runs, user, params.thread_id, params.item_id)
        case ThreadsCustomAction(params=params):
            return custom_action_stream(runs, user, params)
    # Client tools and structured input: nothing here ever asks for them.
    return unsupported_stream(request.__struct_config__.tag)


# -- the route ---------------------------------------------------------------------------

def _inlined(*types: Any) -> dict[str, Any]:
    """msgspec's JSON schema of ``types`` (any of them) with every ``$ref`` replaced by its
    definition: Litestar keeps no custom components, and these types are not recursive."""
    schemas, definitions = msgspec.json.schema_components(types)

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schemas[0]) if len(schemas) == 1 else {"anyOf": inline(list(schemas))}


class Empty(msgspec.Struct):
    """``{}``: what delete and feedback answer."""


_REQUEST_SCHEMA = _inlined(SERVED_REQUEST)
_JSON_ANSWER_SCHEMA = _inlined(Thread, ThreadPage, ItemPage, Empty)


@dataclass
class _ChatKitOperation(Operation):
    """The body is decoded by the handler (auth first, then clear 400s), so Litestar does not
    see it: document it here."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="A ChatKit request envelope; `type` selects the operation.",
            content={"application/json": OpenAPIMediaType(schema=_REQUEST_SCHEMA)},  # type: ignore[arg-type]
        )
        ok = (self.responses or {}).get("200")
        if ok is not None and not isinstance(ok, Reference) and ok.content is not None:
            ok.content["application/json"] = OpenAPIMediaType(schema=_JSON_ANSWER_SCHEMA)  # type: ignore[arg-type]


_STREAM_RESPONSE = {
    200: ResponseSpec(
        data_container=event_stream(StreamEvent, name="ChatKitEventFrame"),
        media_type="text/event-stream",
        generate_examples=False,
        description=(
            "Streaming types: `data: <ChatKit event JSON>\\n\\n` frames (this schema), ending when the "
            "reply is done or after an `error` event. Other types answer `application/json`: a Thread "
            "(`threads.get_by_id`, `threads.update`), a page of threads (`threads.list`) or of items "
            "(`items.list`), or `{}` (`threads.delete`, `items.feedback`)."
        ),
    )
}


class ChatKitController(Controller):
    path = "/chatkit"
    tags = ["chatkit"]

    @post(
        "/",
        status_code=200,
        summary="The ChatKit server protocol (one endpoint; dispatch on the body's type)",
        description=(
            "Body: a ChatKit request envelope `{type, params, metadata?}`. `threads.create`, "
            "`threads.add_user_message`, `threads.retry_after_item` and `threads.custom_action` (an "
            "approval card's Approve / Reject) answer an event stream (`data: <json>` frames); closing "
            "it stops the reply. The other types answer JSON."
        ),
        responses={**_STREAM_RESPONSE, **errors(*CHAT_ERRORS, base=TOKEN_ONLY)},
        security=[{"BearerToken": []}],
        operation_class=_ChatKitOperation,
    )
    async def chatkit(
        self,
        request: Request[Any, Any, Any],
        token_user: NamedDependency[str],
        runs: NamedDependency[RunManager],
        db: NamedDependency[Engine],
        limits: NamedDependency[Limits],
    ) -> Response[bytes]:
        envelope = decode_request(await request.body())
        if isinstance(envelope, StreamingRequest):
            return EventStream(guarded(stream_for(envelope, token_user, runs)), headers=SSE_HEADERS,
                               send_timeout_s=limits.send_timeout_s)
        return Response(await answer(envelope, token_user, db, runs, limits), media_type=MediaType.JSON, status_code=200)
