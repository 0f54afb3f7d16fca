"""JSON routes: the non-streaming chat, conversations, tasks, run cancel, usage, health."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from piccolo.engine.base import Engine

from domain import conversations, tasks, usage
from domain.conversations import ApprovalView, ConversationView, MessageView
from domain.errors import NotFound, RunActive, RunFinished
from domain.limits import MAX_CONVERSATION_TITLE_CHARS, MAX_TASK_TITLE_CHARS, MAX_USAGE_DAYS, Limits
from domain.database import answers
from domain.models import ModelProvider
from domain.runs import RunManager, RunReply, start_or_find
from domain.runs.store import now
from domain.tasks import TaskFilter, TaskView
from domain.usage import UsageReport
from transports.chat_body import ChatRequest
from transports.http_errors import errors
from transports.route_specs import CHAT_ERRORS, NOT_BLANK, TEXT


class ConversationDetail(msgspec.Struct, frozen=True):
    id: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    messages: list[MessageView]
    # Tool calls its replies stopped at for the user's yes: waiting (no ``decision``) or decided.
    approvals: list[ApprovalView]


class ConversationRename(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The bounds are the domain's (``check_conversation_title``), stated for the document only:
    # the domain's coded error, not msgspec's, is what a client gets for a bad title.
    title: Annotated[str, msgspec.Meta(
        description="The conversation's new title: not blank.",
        extra_json_schema={"extra": {"minLength": 1, "maxLength": MAX_CONVERSATION_TITLE_CHARS, **NOT_BLANK}},
    )]


class TaskChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What to change; a field left out stays as it is."""

    title: Annotated[str | None, msgspec.Meta(
        description="The new title (not blank).",
        extra_json_schema={"extra": {"minLength": 1, "maxLength": MAX_TASK_TITLE_CHARS, **NOT_BLANK}},
    )] = None
    description: Annotated[str | None, msgspec.Meta(
        description="The new description.", extra_json_schema={"extra": TEXT})] = None
    completed: Annotated[bool | None, msgspec.Meta(description="`true`: done; `false`: pending again.")] = None


class CancelAccepted(msgspec.Struct, frozen=True):
    run_id: str
    status: str = "cancelling"


class ChatController(Controller):
    tags = ["chat"]

    @post("/chat", status_code=200, summary="Send a message and get the whole reply (no streaming)",
          responses=errors(*CHAT_ERRORS))
    async def chat(
        self,
        user: NamedDependency[str],
        runs: NamedDependency[RunManager],
        data: JSONBody[ChatRequest],
    ) -> RunReply:
        run = await start_or_find(runs, user, data.message, data.conversation_id, again=data.again,
                                  client_message_id=data.client_message_id, transport="rest")
        if isinstance(run, str):  # a retried send: the reply it started
            return await runs.stored_reply(user, run)
        return await runs.reply(run)

    @post("/runs/{run_id:str}/cancel", status_code=202, summary="Stop a running reply",
          description="Stops the model and any running tool; the run ends with `done{status: cancelled}`.",
          responses=errors(NotFound, RunFinished))
    async def cancel_run(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], run_id: FromPath[str]
    ) -> CancelAccepted:
        await runs.cancel(user, run_id)
        return CancelAccepted(run_id=run_id)


class ConversationController(Controller):
    path = "/conversations"
    tags = ["conversations"]

    @get("/", summary="List conversations, most recent first", responses=errors())
    async def list_conversations(
        self, user: NamedDependency[str], limits: NamedDependency[Limits], limit: FromQuery[int] = 50
    ) -> list[ConversationView]:
        return await conversations.list_conversations(user, limits.conversations_page_size(limit))

    @get("/{conversation_id:str}", summary="A conversation with its messages", responses=errors(NotFound))
    async def get_conversation(
        self, user: NamedDependency[str], conversation_id: FromPath[str]
    ) -> ConversationDetail:
        found = await conversations.get_conversation(user, conversation_id)
        if found is None:
            raise NotFound("No such conversation.")
        messages = await conversations.list_messages(found.id)
        return ConversationDetail(
            id=found.id, title=found.title, created_at=found.created_at, updated_at=found.updated_at,
            messages=messages, approvals=await conversations.list_approvals(found.id),
        )

    @delete("/{conversation_id:str}", summary="Delete a conversation, its messages and runs",
            responses=errors(NotFound, RunActive))
    async def delete_conversation(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], conversation_id: FromPath[str]
    ) -> None:
        if not await runs.delete_conversation(user, conversation_id):
            raise NotFound("No such conversation.")

    @patch("/{conversation_id:str}", summary="Rename a conversation", responses=errors(NotFound, "too_large"))
    async def rename_conversation(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], conversation_id: FromPath[str],
        data: JSONBody[ConversationRename],
    ) -> ConversationView:
        if not await runs.rename_conversation(user, conversation_id, data.title):
            raise NotFound("No such conversation.")
        found = await conversations.get_conversation(user, conversation_id)
        if found is None:  # deleted in between
            raise NotFound("No such conversation.")
        return found


class TaskController(Controller):
    path = "/tasks"
    tags = ["tasks"]

    @get("/", summary="The user's tasks", responses=errors())
    async def list_tasks(self, user: NamedDependency[str], status: FromQuery[TaskFilter] = "all") -> list[TaskView]:
        return await tasks.list_tasks(user, status)

    @get("/{task_id:int}", summary="One task", responses=errors(NotFound))
    async def get_task(self, user: NamedDependency[str], task_id: FromPath[int]) -> TaskView:
        found = await tasks.get_task(user, task_id)
        if found is None:
            raise NotFound("No such task.")
        return found

    @patch("/{task_id:int}", summary="Change a task: complete or reopen it, rename it, describe it",
           responses=errors(NotFound, "too_large"))
    async def change_task(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], task_id: FromPath[int],
        data: JSONBody[TaskChange],
    ) -> TaskView:
        changed = await runs.change_task(user, task_id, title=data.title, description=data.description,
                                         completed=data.completed)
        if changed is None:
            raise NotFound("No such task.")
        return changed

    @delete("/{task_id:int}", summary="Delete a task", responses=errors(NotFound))
    async def delete_task(self, user: NamedDependency[str], runs: NamedDependency[RunManager],
                          task_id: FromPath[int]) -> None:
        if await runs.remove_task(user, task_id) is None:
            raise NotFound("No such task.")


@get("/usage", summary="Tokens used per day (UTC): today, or a range of days", tags=["usage"],
     description="Input and output tokens of the user's replies per UTC day, counted when each reply "
     "ends. `from` and `to` (both `YYYY-MM-DD`, both included) default to today; a longer range than "
     f"{MAX_USAGE_DAYS} days is answered for its last {MAX_USAGE_DAYS} (the answer's `from` says so), and `from` "
     "after `to` covers no day. With `TOKENS_PER_DAY` set, `tokens_left_today` is what today's quota leaves.",
     responses=errors())
async def get_usage(
    user: NamedDependency[str],
    limits: NamedDependency[Limits],
    first: Annotated[date | None, QueryParameter(name="from", description="First day, YYYY-MM-DD (UTC)")] = None,
    last: Annotated[date | None, QueryParameter(name="to", description="Last day, YYYY-MM-DD (UTC)")] = None,
) -> UsageReport:
    return await usage.usage(user, first, last, limits.tokens_per_day, now())


class Health(msgspec.Struct, frozen=True):
    status: str
    database: str
    database_engine: str
    model_provider: str
    model: str
    api: str
    model_base_url: str | None = None


@get("/health", summary="Liveness, database and model configuration (no secrets)", tags=["health"],
     description="200 with `status: ok` when the database answers; 503 with `status: degraded` while it "
     "does not (the server keeps running and recovers by itself when it returns).",
     responses={503: ResponseSpec(data_container=Health, generate_examples=False,
                                  description="`status: degraded`: the database does not answer.")})
async def health(db: NamedDependency[Engine], provider: NamedDependency[ModelProvider]) -> Response[Health]:
    database = "ok" if await answers(db) else "unreachable"
    report = Health(
        status="ok" if database == "ok" else "degraded", database=database, database_engine=db.engine_type,
        model_provider=provider.name, model=provider.model_name, api=provider.api,
        model_base_url=provider.base_url,
    )
    return Response(report, status_code=200 if database == "ok" else 503)
