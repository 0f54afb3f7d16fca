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
from transports.websocket import ClientFrame, ServerFrame

ASSETS = "/schema-assets"
VERSION = "0.1.0"
DESCRIPTION = """\
A Todo assistant that streams its replies.

* **Plain SSE**: `POST /api/{user_id}/chat/stream` streams chat events; resume with
  `GET /api/{user_id}/runs/{run_id}/events`.
* **ChatKit**: `POST /chatkit` speaks the OpenAI ChatKit server protocol.
* **WebSocket**: `/api/{user_id}/ws`; its frames are documented in the AsyncAPI document at
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


def _asyncapi() -> dict[str, Any]:
    (client, server, event), components = msgspec.json.schema_components(
        [ClientFrame, ServerFrame, Event], ref_template="#/components/schemas/{name}"
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Todo chat server: WebSocket protocol",
            "version": VERSION,
            "description": (
                "Connect to `/api/{user_id}/ws?token=<JWT>` (or send an `auth` frame first). Send "
                "`chat`, `cancel`, `resume` and `ping` frames; receive the chat events of every run "
                "(each with `run_id` and `seq`), `pong`, and `error` for a refused frame. A bad token "
                "closes the socket with code 1008. Dropping the socket never cancels a run."
            ),
        },
        "channels": {
            "chat": {
                "address": "/api/{user_id}/ws",
                "parameters": {"user_id": {"description": "The user, the `sub` of the token."}},
                "messages": {
                    "clientFrame": {"$ref": "#/components/messages/clientFrame"},
                    "event": {"$ref": "#/components/messages/event"},
                    "serverFrame": {"$ref": "#/components/messages/serverFrame"},
                },
            }
        },
        "operations": {
            "receiveClientFrames": {
                "action": "receive",
                "channel": {"$ref": "#/channels/chat"},
                "messages": [{"$ref": "#/channels/chat/messages/clientFrame"}],
            },
            "sendEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/chat"},
                "messages": [
                    {"$ref": "#/channels/chat/messages/event"},
                    {"$ref": "#/channels/chat/messages/serverFrame"},
                ],
            },
        },
        "components": {
            "schemas": components,
            "messages": {
                "clientFrame": {"name": "clientFrame", "contentType": "application/json", "payload": client},
                "event": {"name": "event", "contentType": "application/json", "payload": event},
                "serverFrame": {"name": "serverFrame", "contentType": "application/json", "payload": server},
            },
        },
    }


ASYNCAPI = msgspec.json.encode(_asyncapi())


@get("/schema/asyncapi.json", include_in_schema=False, media_type="application/json", sync_to_thread=False)
def asyncapi_document() -> bytes:
    return ASYNCAPI
