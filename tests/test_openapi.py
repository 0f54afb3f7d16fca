"""Developers read and try the API in the explorer: a valid, complete, offline document."""

from __future__ import annotations

import re

import pytest
from litestar.testing import TestClient
from openapi_spec_validator import validate

from app.main import create_app
from tests.conftest import JWT_SECRET, auth, token_for


@pytest.fixture(scope="module")
def docs_client(tmp_path_factory):
    from app.settings import Settings

    data = tmp_path_factory.mktemp("docs")
    settings = Settings(data_dir=str(data), jwt_secret=JWT_SECRET, offline_token_delay_ms=0)
    with TestClient(create_app(settings)) as client:
        yield client


def test_schema_is_valid_openapi_3_1_and_lists_every_route(docs_client):
    schema = docs_client.get("/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    validate(schema)
    documented = {(path, method.upper()) for path, item in schema["paths"].items() for method in item}
    for route in docs_client.app.routes:
        for method in getattr(route, "methods", ()):
            handler = route.route_handler_map[method][0]
            if not handler.resolve_include_in_schema() or method in ("HEAD", "OPTIONS"):
                continue
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            assert (path, method) in documented, f"{method} {path} is not documented"


def test_every_api_route_has_a_summary_bearer_auth_and_its_errors(docs_client):
    schema = docs_client.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["BearerToken"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"
    }
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
            if path.startswith("/api/"):
                assert operation["security"] == [{"BearerToken": []}]
                assert {"401", "403"} <= operation["responses"].keys(), f"{method} {path}"


def test_sse_routes_declare_the_event_stream_and_its_event_union(docs_client):
    schema = docs_client.get("/schema/openapi.json").json()
    for path, method in [("/api/{user_id}/chat/stream", "post"), ("/api/{user_id}/runs/{run_id}/events", "get"),
                         ("/api/{user_id}/runs/{run_id}/approvals", "post")]:
        content = schema["paths"][path][method]["responses"]["200"]["content"]
        refs = {ref["$ref"].rsplit("/", 1)[1] for ref in content["text/event-stream"]["schema"]["oneOf"]}
        assert refs == {"Start", "Text", "ToolCall", "ToolResult", "ApprovalRequest", "Error", "Done"}
    components = schema["components"]["schemas"]
    assert components["ToolCall"]["properties"]["type"] == {"type": "string", "enum": ["tool_call"]} or \
        components["ToolCall"]["properties"]["type"].get("const") == "tool_call"
    assert {"run_id", "seq", "call_id", "name", "arguments"} <= components["ToolCall"]["properties"].keys()
    assert "ChatRequest" in components


def test_explorer_is_served_offline(docs_client):
    page = docs_client.get("/schema").text
    assert "SwaggerUIBundle" in page
    assert not re.search(r"(src|href)=[\"']https?://", page), "the explorer must not load from a CDN"
    for asset in re.findall(r"(?:src|href)=\"(/schema-assets/[^\"]+)\"", page):
        assert docs_client.get(asset).status_code == 200, asset
    assert docs_client.get("/schema/swagger").status_code == 200


def test_asyncapi_documents_the_websocket_frames(docs_client):
    document = docs_client.get("/schema/asyncapi.json").json()
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["chat"]["address"] == "/api/{user_id}/ws"
    schemas = document["components"]["schemas"]
    assert {"ChatFrame", "CancelFrame", "ResumeFrame", "PingFrame", "AuthFrame", "Pong", "ErrorFrame",
            "Start", "Text", "Done"} <= schemas.keys()
    assert schemas["CancelFrame"]["required"] == ["type", "run_id"] or "run_id" in schemas["CancelFrame"]["required"]
    assert "/schema/asyncapi.json" in docs_client.get("/schema/openapi.json").json()["info"]["description"]
    assert document["channels"]["aiSdk"]["address"] == "/api/{user_id}/ai-sdk/ws"
    assert {"SendRequest", "ResumeRequest", "AbortRequest", "Started", "ChunkFrame", "Ended", "Failed",
            "NoActive", "UITextDelta"} <= schemas.keys()
    assert schemas["ChunkFrame"]["required"] == ["type", "requestId", "sequence", "chunk"]


def test_every_response_carries_a_request_id(docs_client):
    ok = docs_client.get("/health")
    refused = docs_client.get("/api/alice/tasks")
    given = docs_client.get("/api/alice/tasks", headers={**auth("alice"), "X-Request-ID": "trace-me-42"})
    assert re.fullmatch(r"[0-9a-f]{32}", ok.headers["x-request-id"])
    assert refused.status_code == 401 and refused.headers["x-request-id"]
    assert given.status_code == 200 and given.headers["x-request-id"] == "trace-me-42"
    assert ok.headers["x-request-id"] != refused.headers["x-request-id"]
    with docs_client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
