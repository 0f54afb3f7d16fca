"""A user chats with the Todo assistant over plain SSE."""

from __future__ import annotations

import httpx
import httpx_sse
import msgspec
import pytest

from tests.conftest import auth, stored_events
from tests.sse import parse_frames, text_of


@pytest.fixture
def settings(settings):
    """The agent deletes without asking here: approvals have their own tests (test_approvals.py)."""
    return msgspec.structs.replace(settings, tool_approval="none")


def test_add_task_streams_start_tool_call_result_text_and_done(client, settings):
    response = client.post("/api/alice/chat/stream", json={"message": "add buy milk to my list"}, headers=auth("alice"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    events = parse_frames(response.content)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "done"
    assert types.count("done") == 1
    assert types[1:3] == ["tool_call", "tool_result"]
    assert types.count("text") > 3
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    start = events[0]
    assert {"run_id", "conversation_id", "message_id", "agent"} <= start.keys()
    assert all(e["run_id"] == start["run_id"] for e in events)
    call, result = events[1], events[2]
    assert call["name"] == "add_task" and call["arguments"] == {"title": "buy milk"}
    assert result["call_id"] == call["call_id"] and result["result"]["added"]["title"] == "buy milk"
    assert "buy milk" in text_of(events)
    assert events[-1]["status"] == "completed"
    assert events[-1]["usage"]["output_tokens"] > 0

    tasks = client.get("/api/alice/tasks", headers=auth("alice")).json()
    assert [t["title"] for t in tasks] == ["buy milk"]
    assert stored_events(settings.database, start["run_id"]) == events


def test_conversation_continues_with_history_from_the_database(client):
    first = parse_frames(client.post("/api/alice/chat/stream", json={"message": "add walk the dog"},
                                     headers=auth("alice")).content)
    conversation_id = first[0]["conversation_id"]
    client.post("/api/alice/chat/stream", json={"message": "add water plants"}, headers=auth("alice"))
    listed = parse_frames(client.post("/api/alice/chat/stream",
                                      json={"message": "list my tasks", "conversation_id": conversation_id},
                                      headers=auth("alice")).content)
    assert listed[0]["conversation_id"] == conversation_id
    # "delete 1" only means "walk the dog" to a model that saw the list in this conversation's history.
    deleted = parse_frames(client.post("/api/alice/chat/stream",
                                       json={"message": "delete 1", "conversation_id": conversation_id},
                                       headers=auth("alice")).content)
    call = next(e for e in deleted if e["type"] == "tool_call")
    assert call["name"] == "delete_task"
    assert "walk the dog" in text_of(deleted)
    remaining = client.get("/api/alice/tasks", headers=auth("alice")).json()
    assert [t["title"] for t in remaining] == ["water plants"]

    detail = client.get(f"/api/alice/conversations/{conversation_id}", headers=auth("alice")).json()
    roles = [m["role"] for m in detail["messages"]]
    assert roles == ["user", "tool", "assistant"] * 3


def test_non_streaming_chat_returns_the_whole_reply(client):
    response = client.post("/api/alice/chat", json={"message": "add call mom with description about the trip"},
                           headers=auth("alice"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert "call mom" in body["response"]
    assert body["tool_calls"][0]["name"] == "add_task"
    assert body["tool_calls"][0]["arguments"] == {"title": "call mom", "description": "about the trip"}
    assert body["conversation_id"] and body["run_id"]


def test_stream_through_uvicorn_with_a_real_sse_client(live_server):
    with httpx.Client(base_url=live_server.url, headers=auth("alice"), timeout=30) as http:
        with httpx_sse.connect_sse(http, "POST", "/api/alice/chat/stream",
                                   json={"message": "add buy bread"}) as source:
            assert source.response.headers["x-accel-buffering"] == "no"
            events = [sse.json() for sse in source.iter_sse()]
        raw = http.post("/api/alice/chat/stream", json={"message": "list my tasks"})
    assert [e["type"] for e in events][0] == "start"
    assert events[-1] == {**events[-1], "type": "done", "status": "completed"}
    listed = parse_frames(raw.content)
    assert "buy bread" in text_of(listed)


def test_idle_stream_sends_ping_comments(tmp_path, settings):
    from tests.conftest import start_live_server

    slow = msgspec.structs.replace(settings, offline_token_delay_ms=150, sse_ping_interval_s=0.05)
    live = start_live_server(slow)
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            body = http.post("/api/alice/chat/stream", json={"message": "add buy milk"}).content
    finally:
        live.stop()
    assert b": ping\n\n" in body
    events = parse_frames(body)
    assert events[-1]["type"] == "done"
