"""Usage per user per UTC day, ``GET /usage``, and the daily quota on every transport."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import auth, count_rows, token_for
from tests.sse import parse_frames

TABLES = ("conversation", "message", "run")


def chat(client, message: str, user: str = "alice", conversation_id: str | None = None) -> list[dict]:
    response = client.post(f"/api/{user}/chat/stream", json={"message": message, "conversation_id": conversation_id},
                           headers=auth(user))
    assert response.status_code == 200, response.text
    return parse_frames(response.content)


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def seconds_to_midnight_utc() -> float:
    now = datetime.now(timezone.utc)
    return (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc) - now).total_seconds()


def test_tokens_are_stored_per_user_and_day_and_outlive_the_conversation(client, settings):
    first, second = chat(client, "add buy milk"), chat(client, "list my tasks")
    told = [events[-1]["usage"] for events in (first, second)]
    assert all(u["input_tokens"] > 0 and u["output_tokens"] > 0 for u in told)  # the offline model reports them

    usage = client.get("/api/alice/usage", headers=auth("alice"))
    assert usage.status_code == 200, usage.text
    body = usage.json()
    assert body["from"] == body["to"] == today()  # the day is UTC's
    assert body["input_tokens"] == sum(u["input_tokens"] for u in told)
    assert body["output_tokens"] == sum(u["output_tokens"] for u in told)
    assert body["days"] == [{"day": today(), "input_tokens": body["input_tokens"],
                             "output_tokens": body["output_tokens"], "runs": 2}]
    assert body["tokens_per_day"] is None and body["tokens_left_today"] is None

    # Deleting the conversation deletes its runs, not what they used.
    assert client.delete(f"/api/alice/conversations/{first[0]['conversation_id']}", headers=auth("alice")).status_code == 204
    assert client.get("/api/alice/usage", headers=auth("alice")).json()["input_tokens"] == body["input_tokens"]

    # A range lists every day, unused ones as zeros; another user's usage is their own.
    week_ago = (datetime.now(timezone.utc).date() - timedelta(days=6)).isoformat()
    week = client.get(f"/api/alice/usage?from={week_ago}&to={today()}", headers=auth("alice")).json()
    assert [d["day"] for d in week["days"]][0] == week_ago and len(week["days"]) == 7
    assert week["input_tokens"] == body["input_tokens"] and sum(d["runs"] for d in week["days"]) == 2
    bob = client.get("/api/bob/usage", headers=auth("bob")).json()
    assert bob["input_tokens"] == bob["output_tokens"] == 0
    assert client.get("/api/bob/usage", headers=auth("alice")).status_code == 403


@pytest.mark.parametrize("query", ["from=yesterday", "to=2026-13-01", "from=2026-01-01T00:00:00Z"])
def test_bad_usage_dates_are_400(client, query):
    response = client.get(f"/api/alice/usage?{query}", headers=auth("alice"))
    assert response.status_code == 400, response.text
    assert response.json()["detail"] and response.json()["code"] == "invalid_input"


def test_the_longest_range_is_a_year(client):
    response = client.get("/api/alice/usage?from=2025-01-01&to=2026-01-01", headers=auth("alice"))
    assert response.status_code == 200 and len(response.json()["days"]) == 366


def test_any_two_dates_are_answered_as_the_document_promises(client):
    """Issue 33: the document allows any two dates (it cannot state a rule across two
    parameters), and the server refused a long range or a reversed one with a 400. A long
    range is answered for its last year, its ``from`` saying so; a reversed one covers no day."""
    long = client.get("/api/alice/usage?from=2000-01-01&to=2026-01-01", headers=auth("alice"))
    assert long.status_code == 200, long.text
    assert (long.json()["from"], long.json()["to"], len(long.json()["days"])) == ("2025-01-01", "2026-01-01", 366)
    reversed_ = client.get("/api/alice/usage?from=2026-01-02&to=2026-01-01", headers=auth("alice"))
    assert reversed_.status_code == 200, reversed_.text
    assert reversed_.json()["days"] == [] and reversed_.json()["input_tokens"] == 0
    oldest = client.get("/api/alice/usage?from=0001-01-01&to=0001-01-01", headers=auth("alice"))
    assert oldest.status_code == 200 and len(oldest.json()["days"]) == 1


def assert_http_quota_refusal(response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["extra"] == {"code": "quota_exceeded"}
    assert "tokens for today" in response.json()["detail"]
    # Retry-After: the next UTC midnight.
    assert abs(int(response.headers["retry-after"]) - seconds_to_midnight_utc()) < 120


def plain_sse(client) -> None:
    assert_http_quota_refusal(client.post("/api/alice/chat/stream", json={"message": "add more"}, headers=auth("alice")))


def rest(client) -> None:
    assert_http_quota_refusal(client.post("/api/alice/chat", json={"message": "add more"}, headers=auth("alice")))


def websocket(client) -> None:
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "add more"})
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "quota_exceeded", error
        ws.send_json({"type": "chat", "message": ""})  # the socket stays open
        assert ws.receive_json()["code"] == "invalid_frame"


def chatkit(client) -> None:
    body = {"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": "add more"}], "attachments": [], "inference_options": {}}}}
    response = client.post("/chatkit", json=body, headers=auth("alice"))
    assert response.status_code == 200
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["error"], events
    assert "tokens for today" in events[0]["message"] and events[0]["allow_retry"] is True


def ai_sdk_sse(client) -> None:
    body = {"id": "chat-1", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "add more"}]}]}
    assert_http_quota_refusal(client.post("/api/alice/ai-sdk/chat", json=body, headers=auth("alice")))


def ai_sdk_ws(client) -> None:
    with client.websocket_connect(f"/api/alice/ai-sdk/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "send", "requestId": "r1", "id": "chat-1", "trigger": "submit-message",
                      "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "add more"}]}],
                      "headers": {}, "body": {}})
        error = ws.receive_json()
        assert error["type"] == "error" and error["requestId"] == "r1", error
        assert "tokens for today" in error["errorText"]


def ag_ui(client) -> None:
    body = {"threadId": "t", "runId": "r", "messages": [{"id": "u1", "role": "user", "content": "add more"}]}
    assert_http_quota_refusal(client.post("/api/alice/ag-ui", json=body, headers=auth("alice")))


@pytest.mark.parametrize("refused", [plain_sse, rest, websocket, chatkit, ai_sdk_sse, ai_sdk_ws, ag_ui])
def test_past_the_daily_quota_every_transport_refuses_a_new_message(settings, refused):
    quota = msgspec.structs.replace(settings, tokens_per_day=1)
    with TestClient(create_app(quota), timeout=30) as client:
        assert client.get("/api/alice/usage", headers=auth("alice")).json()["tokens_left_today"] == 1
        chat(client, "add buy milk")  # under the quota when it starts: it runs to its end
        assert client.get("/api/alice/usage", headers=auth("alice")).json()["tokens_left_today"] == 0
        before = {table: count_rows(settings.database, table) for table in TABLES}
        refused(client)
        assert {table: count_rows(settings.database, table) for table in TABLES} == before  # nothing written
        chat(client, "add for bob", user="bob")  # another user's quota is their own


def test_an_approval_that_would_continue_past_the_quota_is_refused(settings):
    """The continuation after the last decision is a new reply: it counts against the quota."""
    approving = msgspec.structs.replace(settings, tool_approval="delete_task")
    with TestClient(create_app(approving), timeout=30) as client:  # the offline model is deterministic
        first = chat(client, "add buy milk", user="probe")[-1]["usage"]
    quota = msgspec.structs.replace(approving, tokens_per_day=first["input_tokens"] + first["output_tokens"] + 1)
    with TestClient(create_app(quota), timeout=30) as client:
        conversation = chat(client, "add buy milk")[0]["conversation_id"]
        asked = chat(client, "delete buy milk", conversation_id=conversation)  # still under the quota
        request = next(e for e in asked if e["type"] == "approval_request")
        decided = client.post(f"/api/alice/runs/{asked[0]['run_id']}/approvals", headers=auth("alice"),
                              json={"call_id": request["call_id"], "approve": True})
        assert_http_quota_refusal(decided)
        assert count_rows(settings.database, "approval", "decision IS NULL") == 1  # still waiting: decide tomorrow
