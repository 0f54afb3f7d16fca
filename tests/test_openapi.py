"""Developers read and try the API in the explorer: a valid, complete, offline document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar.testing import TestClient
from openapi_spec_validator import validate

from app.main import create_app
from transports.http_errors import TABLE
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
        # Each item of the stream is an event (OpenAPI 3.2's reading): its `data` is the JSON.
        data = content["text/event-stream"]["schema"]["properties"]["data"]
        assert data["contentMediaType"] == "application/json"
        refs = {ref["$ref"].rsplit("/", 1)[1] for ref in data["contentSchema"]["oneOf"]}
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


def test_every_error_the_server_sends_is_documented_from_the_one_table(docs_client):
    """Issue 27: the documented errors came from a second status list that left out the 503 the
    server sends, and bodies had no code. Each error response is now generated from the table
    the server answers from: its status is the code's, and its body has the code."""
    schema = docs_client.get("/schema/openapi.json").json()
    body = schema["components"]["schemas"]["ErrorBody"]
    assert {"status_code", "detail", "code"} <= set(body["required"])
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if path.startswith("/api/") or path == "/chatkit":
                assert {"400", "401", "503"} <= responses.keys(), f"{method} {path}"
            for status, response in responses.items():
                if int(status) < 400 or path == "/health":
                    continue
                codes = re.findall(r"`(\w+)`:", response["description"])
                assert codes, f"{method} {path} {status}"
                assert {TABLE[code].status for code in codes} == {int(status)}, f"{method} {path} {status}"
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    chat = schema["paths"]["/api/{user_id}/chat/stream"]["post"]["responses"]
    assert {"404", "409", "413", "429"} <= chat.keys()
    assert "`database_unavailable`" in chat["503"]["description"]
    health = schema["paths"]["/health"]["get"]["responses"]
    assert health["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Health"}


def test_the_document_states_the_bounds_the_server_checks(docs_client):
    """Issue 33: inputs the document allowed and the server refused (unknown fields, a negative
    Last-Event-ID, an empty message, a blank title)."""
    schema = docs_client.get("/schema/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in ("TaskChange", "ConversationRename", "RunAgentInput"):
        assert components[name]["additionalProperties"] is False, name
    assert "additionalProperties" not in components["UIChatRequest"]  # the AI SDK's extra fields are ignored
    resume = schema["paths"]["/api/{user_id}/runs/{run_id}/events"]["get"]["parameters"]
    assert all(p["schema"]["minimum"] == 0 for p in resume if p["name"] in ("Last-Event-ID", "after"))
    chat = components["ChatRequest"]
    assert chat["properties"]["client_message_id"]["minLength"] == 1
    assert len(chat["anyOf"]) == 2  # a message that is not blank, or `again` with an empty one
    title = components["ConversationRename"]["properties"]["title"]
    assert title["minLength"] == 1 and re.search(title["pattern"], "a") and not re.search(title["pattern"], " \t")


def test_no_litestar_http_exception_is_raised_in_transports():
    """Issue 27: every error a client gets is a domain error answered from the one table."""
    transports = Path(__file__).parent.parent / "transports"
    raised = [f"{file.name}: {line.strip()}" for file in transports.glob("*.py")
              for line in file.read_text().splitlines()
              if re.search(r"raise \w*(Exception|NotFound\w+|NotAuthorized\w*|PermissionDenied\w*)\(", line)
              or "litestar.exceptions import" in line and "WebSocketDisconnect" not in line]
    assert raised == []
