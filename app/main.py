"""The Litestar app factory and its lifespan."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from agents import Agent, Model, ModelSettings
from litestar import Litestar, MediaType, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.file_system import BaseLocalFileSystem
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import PathType
from litestar.types.file_types import FileInfo

from app.auth import Authenticator, bearer_guard, cors_config, provide_token_user, provide_user
from app.broker import broker_for
from app.errors import (
    chat_error_response,
    database_unreachable_response,
    http_error_response,
    internal_error_response,
    no_such_file,
    undecodable_body_response,
)
from app.log_redaction import redact_server_logs
from app.logs import logging_config
from app.metrics import HTTP, ChatMetrics, metrics_route
from app.openapi import asyncapi_document, explorer_assets, openapi_config
from app.options import answer_options
from app.request_id import RequestIdMiddleware
from app.settings import Settings, load_settings
from app.shutdown import on_shutdown_signal
from domain.agent import todo_agent
from domain.approvals import ApprovalPolicy
from domain.database import UNREACHABLE, Deadlines, close_database, open_database, run_store
from domain.errors import ChatError
from domain.limits import Limits
from domain.mcp_servers import RemoteMCPServer, with_servers
from domain.models import ModelConfig, build_model, close_model, configure_tracing
from domain.runs import RunManager, RunSettings
from domain.runs.tracing import NO_TRACER
from domain.tools import TODO_TOOLS, TodoContext
from transports.ag_ui import AGUIController
from transports.ai_sdk import AISDKController
from transports.ai_sdk_ws import ai_sdk_socket
from transports.chatkit import ChatKitController
from transports.feed import user_events
from transports.feedback import list_feedback, rate_reply
from transports.fork import fork_conversation
from transports.mcp import ToolEndpoint, mcp_route
from transports.rest import (
    ChatController,
    ConversationController,
    TaskController,
    get_usage,
    health,
)
from transports.route_specs import OPENAPI_PLUGINS
from transports.search import search_conversations
from transports.sse import SSEController
from transports.websocket import chat_socket

log = logging.getLogger("chat_server")

STATIC_DIR = Path(__file__).parent / "static"


@get("/", include_in_schema=False, media_type=MediaType.HTML)
async def chat_page() -> File:
    """The chat page; its script and styles are served under ``/static/``."""
    return File(STATIC_DIR / "index.html", content_disposition_type="inline")


class PageFiles(BaseLocalFileSystem):
    """The page's files on disk. A path the file system cannot even look up names no file
    (404): a NUL in it, a name longer than the file system allows, a file used as a directory.
    Litestar turns any other ``OSError`` into a 500, which is right for those (a failing disk)."""

    async def info(self, path: PathType, **kwargs: Any) -> FileInfo:
        try:
            return await super().info(path, **kwargs)
        except (ValueError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno not in _NO_SUCH_NAME:
                raise
            raise FileNotFoundError(errno.ENOENT, "No such file", str(path)) from exc


_NO_SUCH_NAME = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP}


def _from_state(name: str) -> Provide:
    def provide(state: State) -> object:
        return state[name]

    return Provide(provide, sync_to_thread=False)


def run_settings(settings: Settings) -> RunSettings:
    return RunSettings(
        tracing=settings.openai_agents_tracing, lease_s=settings.run_lease_s,
        ping_interval_s=settings.sse_ping_interval_s, notice_poll_s=settings.follow_poll_s,
        cancel_poll_s=settings.cancel_poll_s,
    )


def database_deadlines(settings: Settings) -> Deadlines:
    return Deadlines(connect_s=settings.database_connect_timeout_s, acquire_s=settings.database_acquire_timeout_s,
                     statement_s=settings.database_statement_timeout_s, health_s=settings.database_health_timeout_s)


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_message_bytes=settings.max_message_bytes, max_frame_bytes=settings.max_ws_frame_bytes,
        active_runs_per_user=settings.max_active_runs_per_user, messages_per_minute=settings.messages_per_minute,
        max_turns=settings.max_turns, max_run_duration_s=settings.max_run_duration_s,
        followers_per_user=settings.max_followers_per_user, send_timeout_s=settings.send_timeout_s,
        tokens_per_day=settings.tokens_per_day,
    )


def agent_of(settings: Settings, model: Model, model_settings: ModelSettings, approvals: ApprovalPolicy) -> Agent:
    """The Todo assistant, with the tools of the MCP_SERVERS (TOOL_APPROVAL names theirs "server.tool")."""
    servers = [
        RemoteMCPServer(server.name, server.url, server.headers, approvals=approvals,
                        refresh_s=settings.mcp_tools_refresh_s, timeout_s=settings.mcp_timeout_s)
        for server in settings.mcp_servers
    ]
    own = approvals.without_servers({server.name for server in settings.mcp_servers})
    return with_servers(todo_agent(model, model_settings, own), servers)


async def closing(runs: RunManager, tool_endpoint: ToolEndpoint) -> None:
    """On SIGTERM, before uvicorn waits for open streams: runs end, then MCP sessions (theirs too)."""
    await runs.close()
    await tool_endpoint.close()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    limits = limits_of(settings)
    redact_server_logs()
    approvals = ApprovalPolicy.parse(settings.tool_approval)
    # The agent's tools, for other AI clients over MCP (POST/GET /mcp).
    tool_endpoint = ToolEndpoint(TODO_TOOLS, approvals, max_body_bytes=settings.max_body_bytes)
    tracing = None
    if endpoint := settings.traces_endpoint:
        # The SDK and its exporter load only when traces are wanted.
        from app.tracing import Tracing

        tracing = Tracing(settings, endpoint)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            db = await open_database(settings.database, database_deadlines(settings))
            stack.push_async_callback(close_database, db)
            model_config = ModelConfig(
                api_key=settings.openai_api_key, base_url=settings.openai_base_url, model=settings.chat_model,
                api=settings.openai_api, timeout_s=settings.model_timeout_s,
                offline_token_delay_ms=settings.offline_token_delay_ms, fast_path=settings.provider_fast_path,
            )
            model, model_settings, provider = build_model(model_config)
            stack.push_async_callback(close_model, model)
            configure_tracing(settings.openai_agents_tracing, model_config)
            metrics = ChatMetrics(model=provider.model_name)
            await stack.enter_async_context(metrics.flushing())
            broker = broker_for(settings, observer=metrics)
            if broker is not None:
                await stack.enter_async_context(broker)
            if tracing is not None:
                tracing.shutting_down(stack)
            runs = RunManager(
                db, run_store(db), agent_of(settings, model, model_settings, approvals),
                limits, run_settings(settings), broker, observer=metrics,
                tracer=tracing.run_tracer(provider) if tracing else NO_TRACER,
            )
            await runs.open()
            stack.push_async_callback(runs.close)
            await tool_endpoint.open(lambda user: TodoContext(user_id=user, db=db, tell=partial(runs.feed.tell, user)))
            stack.push_async_callback(tool_endpoint.close)
            authenticator = Authenticator.from_settings(settings)
            app.state.update(db=db, runs=runs, authenticator=authenticator, provider=provider, metrics=metrics)
            log.info("model: %s (%s, %s api%s); tracing %s; database: %s; broker: %s", provider.name,
                     provider.model_name, provider.api, f" at {provider.base_url}" if provider.base_url else "",
                     "on" if settings.openai_agents_tracing else "off", db.engine_type,
                     broker.kind if broker else "none (single process)")
            if settings.dev_mode:
                link = f"{settings.public_url}/#token={authenticator.issue('demo')}"
                log.warning(
                    "DEVELOPMENT MODE: JWT_SECRET is not set, tokens are signed with a local secret in %s/. "
                    "Set JWT_SECRET in production. Demo user link: %s", settings.data_dir, link,
                )
            stack.callback(on_shutdown_signal(partial(closing, runs, tool_endpoint)))
            yield

    api = Router(
        path="/api/{user_id:str}",
        route_handlers=[
            SSEController, ChatController, ConversationController, TaskController, AISDKController, AGUIController,
            chat_socket, ai_sdk_socket, user_events, get_usage, search_conversations, fork_conversation, rate_reply,
            list_feedback,
        ],
        dependencies={"user": Provide(provide_user)},
        security=[{"BearerToken": []}],
    )
    return Litestar(
        route_handlers=[
            api, ChatKitController, mcp_route(tool_endpoint, [bearer_guard]), health, metrics_route(settings.metrics_token), explorer_assets(), asyncapi_document,
            chat_page, create_static_files_router(
                "/static", [STATIC_DIR], name="page_static", file_system=PageFiles(),
                exception_handlers={NotFoundException: no_such_file},
            ),
        ],
        lifespan=[lifespan],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            "limits": Provide(lambda: limits, sync_to_thread=False, use_cache=True),
            "token_user": Provide(provide_token_user),
            "runs": _from_state("runs"),
            "db": _from_state("db"),
            "authenticator": _from_state("authenticator"),
            "provider": _from_state("provider"),
        },
        exception_handlers={
            ChatError: chat_error_response,
            HTTPException: http_error_response,
            UnicodeDecodeError: undecodable_body_response,
            RecursionError: undecodable_body_response,
            **{kind: database_unreachable_response for kind in UNREACHABLE},
            HTTP_500_INTERNAL_SERVER_ERROR: internal_error_response,
        },
        middleware=[RequestIdMiddleware, HTTP.middleware, *([tracing.middleware] if tracing else [])],
        logging_config=logging_config(settings.log_level, settings.log_format),
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors_config(settings),
        openapi_config=openapi_config(),
        plugins=[*OPENAPI_PLUGINS, *([tracing.plugin] if tracing else [])],
        before_request=answer_options,
    )
