"""The OpenAPI document, its explorer served offline, and the AsyncAPI document of the WebSocket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import swagger_ui_bundle
from litestar import Router, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Server
from litestar.static_files import create_static_files_router

from domain.events import Event
from domain.feed import FeedEvent
from transports import ai_sdk_ws
from transports.websocket import ClientFrame, ServerFrame

ASSETS = "/schema-assets"
VERSION = "0.1.0"
DESCRIPTION = """\
A Todo assistant that streams its replies.

* **Plain SSE**: `POST /api/{user_id}/chat/stream` streams chat events; resume with
  `GET /api/{user_id}/runs/{run_id}/events`.
* **ChatKit**: `POST /chatkit` speaks the OpenAI ChatKit server protocol.
* **AI SDK**: `POST /api/{user_id}/ai-sdk/chat` (UI message stream v1) for `useChat`.
* **AG-UI**: `POST /api/{user_id}/ag-ui` (AG-UI 1.0 events over SSE) for `HttpAgent` and CopilotKit.
* **WebSocket**: `/api/{user_id}/ws`, and `/api/{user_id}/ai-sdk/ws` for the AI SDK's
  `WebSocketChatTransport`; their frames are documented in the AsyncAPI document at
  [/schema/asyncapi.json](/schema/asyncapi.json).

Authenticate with `Authorization: Bearer <JWT>` whose `sub` is the user id in the path.
Errors use one body: `{"status_code", "detail", "extra"}`; `extra.code` is a stable machine code
(`not_found`, `run_active`, `run_finished`, `limit_exceeded`, …) where a client must branch.
"""


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Todo chat server",
        version=VERSION,
        description=DESCRIPTION,
        path="/schema",
        servers=[Server(url="/")],
        render_plugins=[
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                js_url=f"{ASSETS}/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
                favicon=f'<link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">',
            )
        ],
        components=Components(
            security_schemes={
                "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
            }
        ),
    )


def explorer_assets() -> Router:
    """Swagger UI's files from the installed package: the explorer works offline."""
    return create_static_files_router(
        path=ASSETS, directories=[Path(swagger_ui_bundle.swagger_ui_path)], include_in_schema=False
    )


class Socket(msgspec.Struct, frozen=True):
    """One WebSocket endpoint for the AsyncAPI document: what the client sends, what it gets."""

    name: str
    address: str
    description: str
    client: tuple[str, Any]  # a message's name, its type
    server: tuple[tuple[str, Any], ...]


SOCKETS = (
    Socket(
        "chat", "/api/{user_id}/ws",
        "Connect with `?token=<JWT>` (or send an `auth` frame first). Send `chat`, `cancel`, `resume` "
        "and `ping` frames; receive the chat events of every run (each with `run_id` and `seq`), "
        "`pong`, and `error` for a refused frame. A bad token closes the socket with code 1008, a frame "
        "over the server's `MAX_WS_FRAME_BYTES` with 1009 (message too big). "
        "Dropping the socket never cancels a run. A `subscribe` frame turns on the user's feed: "
        "`subscribed`, then a feed event whenever a run starts (with its `run_id`: send `resume` to "
        "follow it) or finishes, a conversation is created, renamed or deleted, or a task is added, "
        "changed or removed, on any instance. Each feed event has an `id`; `subscribe` with `after` "
        "set to the last one seen resumes within the window (the last 256 events of the last 10 "
        "minutes held by that instance), otherwise the first event is `reload`.",
        ("clientFrame", ClientFrame),
        (("event", Event), ("serverFrame", ServerFrame), ("feedEvent", FeedEvent)),
    ),
    Socket(
        "aiSdk", "/api/{user_id}/ai-sdk/ws",
        "The Vercel AI SDK's `WebSocketChatTransport` protocol. Send `send`, `resume` and `abort` "
        "(Stop) frames, each with its own `requestId`; receive `start`, `chunk` (a UI message chunk, "
        "`sequence` from 0 per request), `end`, `error` (a refused request: the socket stays open) and "
        "`no-active`. Authenticate with `?token=<JWT>` or an `Authorization: Bearer` header in each "
        "request frame's `headers`. A dropped socket is not Stop: `resume` replays the reply. A frame over "
        "the server's `MAX_WS_FRAME_BYTES` closes the socket with 1009 (message too big).",
        ("aiSdkRequest", ai_sdk_ws.Request), (("aiSdkResponse", ai_sdk_ws.Response),),
    ),
)


def _asyncapi() -> dict[str, Any]:
    types = [kind for socket in SOCKETS for _, kind in (socket.client, *socket.server)]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    payloads = iter(schemas)
    channels, operations, messages = {}, {}, {}
    for socket in SOCKETS:
        names = [name for name, _ in (socket.client, *socket.server)]
        for name in names:
            messages[name] = {"name": name, "contentType": "application/json", "payload": next(payloads)}
        channels[socket.name] = {
            "address": socket.address,
            "description": socket.description,
            "parameters": {"user_id": {"description": "The user, the `sub` of the token."}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        }
        ref = f"#/channels/{socket.name}/messages/"
        operations[f"{socket.name}Receive"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{socket.name}"}, "messages": [{"$ref": ref + names[0]}],
        }
        operations[f"{socket.name}Send"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{socket.name}"},
            "messages": [{"$ref": ref + name} for name in names[1:]],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Todo chat server: WebSocket protocols",
            "version": VERSION,
            "description": "Two sockets: this server's own chat protocol and the AI SDK's WebSocket transport.",
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components, "messages": messages},
    }


ASYNCAPI = msgspec.json.encode(_asyncapi())


@get("/schema/asyncapi.json", include_in_schema=False, media_type="application/json", sync_to_thread=False)
def asyncapi_document() -> bytes:
    return ASYNCAPI
