"""The Litestar app factory and its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, MediaType, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.response import File
from litestar.static_files import create_static_files_router

from app.auth import Authenticator, cors_config, provide_user
from app.errors import chat_error_response
from app.settings import Settings, load_settings
from app.shutdown import on_shutdown_signal
from domain.agent import todo_agent
from domain.database import close_database, open_database
from domain.errors import ChatError
from domain.models import ModelConfig, build_model, close_model, configure_tracing
from domain.run_records import RunLimits
from domain.runs import RunManager, RunSettings
from transports.chatkit import ChatKitController
from transports.rest import ChatController, ConversationController, TaskController, health
from transports.sse import SSEController
from transports.websocket import chat_socket

log = logging.getLogger("chat_server")

STATIC_DIR = Path(__file__).parent / "static"


@get("/", include_in_schema=False, media_type=MediaType.HTML)
async def chat_page() -> File:
    """The chat page; its script and styles are served under ``/static/``."""
    return File(STATIC_DIR / "index.html", content_disposition_type="inline")


def _from_state(name: str) -> Provide:
    def provide(state: State) -> object:
        return state[name]

    return Provide(provide, sync_to_thread=False)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = await open_database(settings.database)
        model_config = ModelConfig(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url, model=settings.chat_model,
            api=settings.openai_api, timeout_s=settings.model_timeout_s,
            offline_token_delay_ms=settings.offline_token_delay_ms,
        )
        model, model_settings, provider = build_model(model_config)
        configure_tracing(settings.openai_agents_tracing, model_config)
        runs = RunManager(
            db, todo_agent(model, model_settings),
            RunSettings(
                max_turns=settings.max_turns, tracing=settings.openai_agents_tracing,
                max_run_duration_s=settings.max_run_duration_s,
                limits=RunLimits(
                    active_runs_per_user=settings.max_active_runs_per_user,
                    messages_per_minute=settings.messages_per_minute,
                ),
            ),
        )
        await runs.open()
        authenticator = Authenticator.from_settings(settings)
        app.state.update(db=db, runs=runs, authenticator=authenticator, provider=provider)
        log.info("model: %s (%s, %s api%s); tracing %s; database: %s", provider.name, provider.model_name,
                 provider.api, f" at {provider.base_url}" if provider.base_url else "",
                 "on" if settings.openai_agents_tracing else "off", db.engine_type)
        if settings.dev_mode:
            link = f"{settings.public_url}/#token={authenticator.issue('demo')}"
            log.warning(
                "DEVELOPMENT MODE: JWT_SECRET is not set, tokens are signed with a local secret in %s/. "
                "Set JWT_SECRET in production. Demo user link: %s", settings.data_dir, link,
            )
        restore_signals = on_shutdown_signal(lambda: asyncio.ensure_future(runs.close()))
        try:
            yield
        finally:
            restore_signals()
            await runs.close()
            await close_model(model)
            await close_database(db)

    api = Router(
        path="/api/{user_id:str}",
        route_handlers=[SSEController, ChatController, ConversationController, TaskController, chat_socket],
        dependencies={"user": Provide(provide_user)},
    )
    return Litestar(
        route_handlers=[
            api, ChatKitController, health,
            chat_page, create_static_files_router("/static", [STATIC_DIR], name="page_static"),
        ],
        lifespan=[lifespan],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            "runs": _from_state("runs"),
            "db": _from_state("db"),
            "authenticator": _from_state("authenticator"),
            "provider": _from_state("provider"),
        },
        exception_handlers={ChatError: chat_error_response},
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors_config(settings),
        openapi_config=OpenAPIConfig(title="Todo chat server", version="0.1.0"),
    )
