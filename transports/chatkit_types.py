"""ChatKit wire types (openai-chatkit 1.6.5, ``chatkit/types.py``) as msgspec Structs.

Only what this server reads or sends. Requests: every envelope of the protocol, so an
unsupported one is recognised and refused by name. Responses: threads, pages, the item
kinds a conversation maps to (and the widget of an approval card), and the stream events
that carry them.
Fields that may be null default to None and are omitted, as the reference does
(``exclude_none``); every other field has no default, so it is always sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from transports.route_specs import NOT_BLANK

Order = Literal["asc", "desc"]
TaskStatus = Literal["none", "loading", "complete"]


class _Wire(msgspec.Struct, omit_defaults=True, frozen=True):
    pass


class _Tagged(_Wire, tag_field="type", frozen=True):
    pass


# -- requests -------------------------------------------------------------------------

class InputText(_Tagged, tag="input_text", frozen=True):
    text: str


class InputTag(_Tagged, tag="input_tag", frozen=True):
    """An entity the user mentioned; its ``text`` is what the model reads."""

    id: str
    text: str
    data: dict[str, Any] = {}
    group: str | None = None
    interactive: bool = False


class ToolChoice(_Wire, frozen=True):
    id: str


class InferenceOptions(_Wire, frozen=True):
    tool_choice: ToolChoice | None = None
    model: str | None = None


class UserMessageInput(_Wire, frozen=True):
    content: list[InputText | InputTag]
    # Required by the reference; a missing one costs nothing here, so it defaults.
    attachments: list[str] = []
    quoted_text: str | None = None
    inference_options: InferenceOptions = InferenceOptions()


class ThreadParams(_Wire, frozen=True):
    thread_id: str


class CreateParams(_Wire, frozen=True):
    input: UserMessageInput


class AddUserMessageParams(_Wire, frozen=True):
    thread_id: str
    input: UserMessageInput


class ItemParams(_Wire, frozen=True):
    thread_id: str
    item_id: str


class ClientToolOutputParams(_Wire, frozen=True):
    thread_id: str
    result: Any


class StructuredInputParams(_Wire, frozen=True):
    thread_id: str
    item_id: str
    input: dict[str, Any]


class Action(_Wire, frozen=True):
    """A widget's action as the client sends it back: its ``type`` and ``payload``, verbatim."""

    type: str
    payload: Any = None


class CustomActionParams(_Wire, frozen=True):
    thread_id: str
    action: Action
    item_id: str | None = None


class ListParams(_Wire, frozen=True):
    limit: int | None = None
    order: Order = "desc"
    after: str | None = None


class ItemsListParams(_Wire, frozen=True):
    thread_id: str
    limit: int | None = None
    order: Order = "desc"
    after: str | None = None


class UpdateParams(_Wire, frozen=True):
    thread_id: str
    # Not blank (``check_conversation_title``, after the title is stripped): for the document.
    title: Annotated[str, msgspec.Meta(max_length=200, extra_json_schema=NOT_BLANK)]


class FeedbackParams(_Wire, frozen=True):
    thread_id: str
    item_ids: list[str]
    kind: Literal["positive", "negative"]


class AttachmentCreateParams(_Wire, frozen=True):
    name: str
    size: int
    mime_type: str


class AttachmentDeleteParams(_Wire, frozen=True):
    attachment_id: str


class TranscribeParams(_Wire, frozen=True):
    audio_base64: str
    mime_type: str


class _Request(_Tagged, kw_only=True, frozen=True):
    metadata: dict[str, Any] = {}


class ThreadsCreate(_Request, tag="threads.create", frozen=True):
    params: CreateParams


class ThreadsAddUserMessage(_Request, tag="threads.add_user_message", frozen=True):
    params: AddUserMessageParams


class ThreadsRetryAfterItem(_Request, tag="threads.retry_after_item", frozen=True):
    params: ItemParams


class ThreadsAddClientToolOutput(_Request, tag="threads.add_client_tool_output", frozen=True):
    params: ClientToolOutputParams


class ThreadsAddStructuredInput(_Request, tag="threads.add_structured_input", frozen=True):
    params: StructuredInputParams


class ThreadsCustomAction(_Request, tag="threads.custom_action", frozen=True):
    params: CustomActionParams


class ThreadsSyncCustomAction(_Request, tag="threads.sync_custom_action", frozen=True):
    params: CustomActionParams


class ThreadsGetById(_Request, tag="threads.get_by_id", frozen=True):
    params: ThreadParams


class ThreadsList(_Request, tag="threads.list", frozen=True):
    params: ListParams


class ItemsList(_Request, tag="items.list", frozen=True):
    params: ItemsListParams


class ThreadsUpdate(_Request, tag="threads.update", frozen=True):
    params: UpdateParams


class ThreadsDelete(_Request, tag="threads.delete", frozen=True):
    params: ThreadParams


class ItemsFeedback(_Request, tag="items.feedback", frozen=True):
    params: FeedbackParams


class AttachmentsCreate(_Request, tag="attachments.create", frozen=True):
    params: AttachmentCreateParams


class AttachmentsDelete(_Request, tag="attachments.delete", frozen=True):
    params: AttachmentDeleteParams


class InputTranscribe(_Request, tag="input.transcribe", frozen=True):
    params: TranscribeParams


StreamingRequest = (
    ThreadsCreate | ThreadsAddUserMessage | ThreadsRetryAfterItem | ThreadsAddClientToolOutput
    | ThreadsAddStructuredInput | ThreadsCustomAction
)
JSONRequest = (
    ThreadsGetById | ThreadsList | ItemsList | ThreadsUpdate | ThreadsDelete | ItemsFeedback
    | ThreadsSyncCustomAction | AttachmentsCreate | AttachmentsDelete | InputTranscribe
)
ChatKitRequest = StreamingRequest | JSONRequest
# What the OpenAPI document lists: the types this server serves. The rest are decoded only to
# be refused by name (400, "... is not supported").
SERVED_REQUEST = (
    StreamingRequest | ThreadsGetById | ThreadsList | ItemsList | ThreadsUpdate | ThreadsDelete | ItemsFeedback
)


# -- threads and items ----------------------------------------------------------------

class ActiveStatus(_Tagged, tag="active", frozen=True):
    pass


class OutputText(_Tagged, tag="output_text", frozen=True):
    text: str
    annotations: list[dict[str, Any]]


class CustomTask(_Tagged, tag="custom", frozen=True):
    status_indicator: TaskStatus
    title: str | None = None
    icon: str | None = None
    content: str | None = None


class CustomSummary(_Wire, frozen=True):
    title: str
    icon: str | None = None


class Workflow(_Wire, frozen=True):
    type: Literal["custom"]
    tasks: list[CustomTask]
    expanded: bool
    summary: CustomSummary | None = None


class _Item(_Tagged, frozen=True):
    id: str
    thread_id: str
    created_at: datetime


class UserMessageItem(_Item, tag="user_message", frozen=True):
    content: list[InputText]
    attachments: list[dict[str, Any]]
    inference_options: InferenceOptions
    quoted_text: str | None = None


class AssistantMessageItem(_Item, tag="assistant_message", frozen=True):
    content: list[OutputText]


class WorkflowItem(_Item, tag="workflow", frozen=True):
    workflow: Workflow


# Widgets (``chatkit/widgets.py``): only the components the approval card is made of.

class ActionConfig(_Wire, frozen=True):
    """What a click sends: ``threads.custom_action`` with this ``type`` and ``payload``."""

    type: str
    payload: Any
    handler: Literal["server"]


class WidgetText(_Tagged, tag="Text", frozen=True):
    value: str
    weight: Literal["normal", "medium", "semibold", "bold"] | None = None
    color: str | None = None
    size: Literal["xs", "sm", "md", "lg", "xl"] | None = None


class Button(_Tagged, tag="Button", frozen=True):
    label: str
    onClickAction: ActionConfig
    style: Literal["primary", "secondary"] | None = None


class Row(_Tagged, tag="Row", frozen=True):
    children: list[Button]
    gap: int | None = None


class Card(_Tagged, tag="Card", frozen=True):
    children: list[WidgetText | Row]
    size: Literal["sm", "md", "lg", "full"] | None = None


class WidgetItem(_Item, tag="widget", frozen=True):
    widget: Card
    copy_text: str | None = None


ThreadItem = UserMessageItem | AssistantMessageItem | WorkflowItem | WidgetItem


class ItemPage(_Wire, frozen=True):
    data: list[ThreadItem]
    has_more: bool
    after: str | None = None


class Thread(_Wire, frozen=True):
    id: str
    created_at: datetime
    status: ActiveStatus
    metadata: dict[str, Any]
    items: ItemPage
    title: str | None = None


class ThreadPage(_Wire, frozen=True):
    data: list[Thread]
    has_more: bool
    after: str | None = None


# -- stream events --------------------------------------------------------------------

class ContentPartAdded(_Tagged, tag="assistant_message.content_part.added", frozen=True):
    content_index: int
    content: OutputText


class TextDelta(_Tagged, tag="assistant_message.content_part.text_delta", frozen=True):
    content_index: int
    delta: str


class ContentPartDone(_Tagged, tag="assistant_message.content_part.done", frozen=True):
    content_index: int
    content: OutputText


class WorkflowTaskUpdated(_Tagged, tag="workflow.task.updated", frozen=True):
    task_index: int
    task: CustomTask


ItemUpdate = ContentPartAdded | TextDelta | ContentPartDone | WorkflowTaskUpdated


class StreamOptions(_Wire, frozen=True):
    allow_cancel: bool


class ThreadCreated(_Tagged, tag="thread.created", frozen=True):
    thread: Thread


class ThreadUpdated(_Tagged, tag="thread.updated", frozen=True):
    thread: Thread


class ThreadItemAdded(_Tagged, tag="thread.item.added", frozen=True):
    item: ThreadItem


class ThreadItemUpdated(_Tagged, tag="thread.item.updated", frozen=True):
    item_id: str
    update: ItemUpdate


class ThreadItemDone(_Tagged, tag="thread.item.done", frozen=True):
    item: ThreadItem


class ThreadItemReplaced(_Tagged, tag="thread.item.replaced", frozen=True):
    item: ThreadItem


class StreamOptionsEvent(_Tagged, tag="stream_options", frozen=True):
    stream_options: StreamOptions


class ErrorEvent(_Tagged, tag="error", frozen=True):
    """``custom`` shows ``message``; ``allow_retry`` offers the retry button."""

    code: Literal["stream.error", "custom"]
    allow_retry: bool
    message: str | None = None


StreamEvent = (
    ThreadCreated | ThreadUpdated | ThreadItemAdded | ThreadItemUpdated | ThreadItemDone | ThreadItemReplaced
    | StreamOptionsEvent | ErrorEvent
)
