"""CORS for browser front ends on another origin: off by default, on for CORS_ORIGINS only."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import auth

ALLOWED = "https://cdn.platform.openai.com"
OTHER_ALLOWED = "http://localhost:5173"


@pytest.fixture
def cors_client(settings) -> Iterator[TestClient]:
    configured = msgspec.structs.replace(settings, cors_origins=f"{ALLOWED}, {OTHER_ALLOWED}/")
    with TestClient(create_app(configured), timeout=30) as client:
        yield client


def preflight(client: TestClient, path: str, origin: str, method: str = "POST", headers: str = "authorization"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers,
    })


def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize("origin", [ALLOWED, OTHER_ALLOWED])
@pytest.mark.parametrize("path", ["/chatkit", "/api/alice/chat/stream", "/api/alice/runs/r1/events"])
def test_preflight_from_an_allowed_origin_is_answered(cors_client, origin, path):
    response = preflight(cors_client, path, origin, headers="authorization, content-type, last-event-id")
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] == origin
    allowed_headers = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "last-event-id"} <= allowed_headers
    assert "POST" in response.headers["access-control-allow-methods"]
    # Bearer tokens, not cookies: a browser must not send credentials cross-origin.
    assert "access-control-allow-credentials" not in response.headers


def test_actual_request_from_an_allowed_origin_exposes_request_id_and_retry_after(cors_client):
    response = cors_client.get("/api/alice/tasks", headers={**auth("alice"), "Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "retry-after"} <= exposed


def test_errors_carry_cors_headers_so_the_browser_can_read_them(cors_client):
    response = cors_client.get("/api/alice/tasks", headers={"Origin": ALLOWED})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ALLOWED


def test_a_disallowed_origin_gets_no_cors_headers(cors_client):
    response = preflight(cors_client, "/chatkit", "https://evil.example")
    assert response.status_code >= 400
    assert "access-control-allow-origin" not in response.headers
    response = cors_client.get("/api/alice/tasks", headers={**auth("alice"), "Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_a_disallowed_request_header_is_refused(cors_client):
    response = preflight(cors_client, "/chatkit", ALLOWED, headers="authorization, x-something-else")
    assert response.status_code >= 400


def test_by_default_no_cors_headers_at_all(client):
    response = preflight(client, "/chatkit", ALLOWED)
    assert cors_headers(response) == {}
    response = client.get("/api/alice/tasks", headers={**auth("alice"), "Origin": ALLOWED})
    assert response.status_code == 200
    assert cors_headers(response) == {}


def test_an_mcp_client_in_a_browser_may_send_and_read_the_session_headers(cors_client):
    asked = preflight(cors_client, "/mcp", ALLOWED, headers="authorization, content-type, mcp-session-id, "
                      "mcp-protocol-version")
    assert asked.status_code in (200, 204) and asked.headers["access-control-allow-origin"] == ALLOWED
    allowed = {h.strip().lower() for h in asked.headers["access-control-allow-headers"].split(",")}
    assert {"mcp-session-id", "mcp-protocol-version"} <= allowed
    opened = cors_client.post("/mcp", headers={**auth("alice"), "Origin": ALLOWED,
                                               "Accept": "application/json, text/event-stream"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "web", "version": "1"}},
    })
    assert opened.status_code == 200 and opened.headers["mcp-session-id"]
    exposed = {h.strip().lower() for h in opened.headers["access-control-expose-headers"].split(",")}
    assert "mcp-session-id" in exposed
