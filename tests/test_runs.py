"""Runs outlive connections: Stop, resume after a drop, shutdown and crash."""

from __future__ import annotations

import signal
import time

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import ServerProcess, auth, fetch_rows, start_live_server, token_for
from tests.sse import parse_frames, text_of


def stream_lines(response: httpx.Response):
    """Events of a plain SSE stream as they arrive."""
    import json

    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def run_status(database_url: str, run_id: str) -> str:
    return fetch_rows(database_url, "SELECT status FROM run WHERE id = $1", _run_key(database_url, run_id))[0][0]


def _run_key(database_url: str, run_id: str):
    import uuid

    return run_id if database_url.startswith("sqlite") else uuid.UUID(run_id)


def wait_for_status(database_url: str, run_id: str, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while (status := run_status(database_url, run_id)) == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


@pytest.fixture
def slow_settings(settings):
    return msgspec.structs.replace(settings, offline_token_delay_ms=30)


def test_http_cancel_stops_a_run_started_elsewhere(slow_settings):
    with TestClient(create_app(slow_settings), timeout=30) as client:
        with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
            ws.send_json({"type": "chat", "message": "hello"})
            start = ws.receive_json()
            assert ws.receive_json()["type"] == "text"
            run_id = start["run_id"]

            assert client.post(f"/api/bob/runs/{run_id}/cancel", headers=auth("bob")).status_code == 404
            accepted = client.post(f"/api/alice/runs/{run_id}/cancel", headers=auth("alice"))
            assert accepted.status_code == 202 and accepted.json()["run_id"] == run_id
            while (event := ws.receive_json())["type"] != "done":
                assert event["type"] == "text"
            assert event["status"] == "cancelled"

        again = client.post(f"/api/alice/runs/{run_id}/cancel", headers=auth("alice"))
        assert again.status_code == 409 and again.json()["extra"]["code"] == "run_finished"
        unknown = client.post("/api/alice/runs/00000000-0000-0000-0000-000000000000/cancel", headers=auth("alice"))
        assert unknown.status_code == 404


def test_closing_the_sse_stream_is_stop(slow_settings):
    live = start_live_server(slow_settings)
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream", json={"message": "hello"}) as response:
                events = stream_lines(response)
                start = next(events)
                first = next(events)
            assert first["type"] == "text"
            assert wait_for_status(slow_settings.database, start["run_id"]) == "cancelled"
            detail = http.get(f"/api/alice/conversations/{start['conversation_id']}").json()
    finally:
        live.stop()
    assistant = detail["messages"][-1]
    assert assistant["status"] == "cancelled" and assistant["content"].startswith(first["content"])
    assert len(assistant["content"]) < 200


def test_resume_after_a_drop_yields_exactly_the_missed_events(slow_settings):
    live = start_live_server(slow_settings)
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream",
                             # Long enough (≈ 1 s) for the run to be saved in several batches.
                             json={"message": "add resume me " + " ".join(f"w{n}" for n in range(20)),
                                   "on_disconnect": "continue"}) as response:
                events = stream_lines(response)
                seen = [next(events) for _ in range(4)]
            run_id = seen[0]["run_id"]
            # Resume live, from the in-memory log, with Last-Event-ID.
            with http.stream("GET", f"/api/alice/runs/{run_id}/events",
                             headers={"Last-Event-ID": str(seen[-1]["seq"])}) as resumed:
                assert resumed.headers["content-type"].startswith("text/event-stream")
                body = resumed.read()
            assert wait_for_status(slow_settings.database, run_id) == "completed"
            # And again once it is finished, from the database, with ?after=.
            stored = http.get(f"/api/alice/runs/{run_id}/events", params={"after": 0}).content
            count = stored.count(b"\ndata: ")
            tails = [http.get(f"/api/alice/runs/{run_id}/events", params={"after": n}).content
                     for n in range(count + 1)]
            foreign = http.get(f"/api/bob/runs/{run_id}/events", headers=auth("bob"))
    finally:
        live.stop()
    rows = fetch_rows(slow_settings.database, "SELECT seq FROM run_event WHERE run = $1", run_id)
    # Each commit is a row: a paced reply commits an event or a few at a time (a resume inside
    # a row of several is the store contract's test).
    assert 1 < len(rows) <= count
    assert tails[0] == stored and tails[-1] == b""
    assert all(tail == stored[stored.index(b"id: %d\n" % (n + 1)):] for n, tail in enumerate(tails[:-1]))
    rest = [msgspec.json.decode(line.removeprefix(b"data: ")) for line in body.split(b"\n") if line.startswith(b"data: ")]
    ids = [int(line.removeprefix(b"id: ")) for line in body.split(b"\n") if line.startswith(b"id: ")]
    assert [e["seq"] for e in rest] == ids == list(range(5, 5 + len(rest)))
    assert rest[-1]["type"] == "done" and rest[-1]["status"] == "completed"
    everything = [msgspec.json.decode(line.removeprefix(b"data: "))
                  for line in stored.split(b"\n") if line.startswith(b"data: ")]
    assert everything == seen + rest
    assert "resume me" in text_of(everything)
    assert foreign.status_code == 404


def test_resume_of_a_finished_run_through_the_test_client(client):
    events = parse_frames(client.post("/api/alice/chat/stream", json={"message": "add a"}, headers=auth("alice")).content)
    run_id = events[0]["run_id"]
    replay = client.get(f"/api/alice/runs/{run_id}/events", headers={**auth("alice"), "Last-Event-ID": "2"})
    assert replay.status_code == 200
    frames = replay.content.split(b"\n\n")[:-1]
    assert frames[0].startswith(b"id: 3\ndata: ")
    assert [msgspec.json.decode(f.split(b"data: ", 1)[1]) for f in frames] == events[2:]
    assert client.get("/api/alice/runs/nope/events", headers=auth("alice")).status_code == 404


def test_sigterm_ends_active_runs_as_interrupted(settings):
    server = ServerProcess(msgspec.structs.replace(settings, offline_token_delay_ms=50))
    try:
        with httpx.Client(base_url=server.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream", json={"message": "hello"}) as response:
                events = stream_lines(response)
                start, first = next(events), next(events)
                began = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                rest = list(events)
            stopped_in = time.monotonic() - began
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    assert rest[-1]["type"] == "done" and rest[-1]["status"] == "interrupted"
    assert stopped_in < 5
    assert run_status(settings.database, start["run_id"]) == "interrupted"
    rows = fetch_rows(settings.database, "SELECT content, status FROM message WHERE role = 'assistant'")
    assert rows == [(first["content"] + text_of(rest), "interrupted")]


def test_runs_left_running_by_a_crash_are_interrupted_at_start_up(settings):
    slow = msgspec.structs.replace(settings, offline_token_delay_ms=50)
    server = ServerProcess(slow, RUN_LEASE_S="1")
    try:
        with httpx.Client(base_url=server.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream",
                             json={"message": "hello", "on_disconnect": "continue"}) as response:
                events = stream_lines(response)
                start = next(events)
                texts = [next(events) for _ in range(20)]  # long enough for a batch to be saved
                server.process.kill()
    finally:
        server.stop()
    assert run_status(settings.database, start["run_id"]) == "running"
    time.sleep(1.2)  # the dead instance's lease runs out

    restarted = ServerProcess(slow, RUN_LEASE_S="1")
    try:
        assert run_status(settings.database, start["run_id"]) == "interrupted"
        with httpx.Client(base_url=restarted.url, headers=auth("alice"), timeout=30) as http:
            replay = parse_frames(b"".join(
                b"data: " + f.split(b"data: ", 1)[1] + b"\n\n"
                for f in http.get(f"/api/alice/runs/{start['run_id']}/events").content.split(b"\n\n")[:-1]
            ))
            detail = http.get(f"/api/alice/conversations/{start['conversation_id']}").json()
    finally:
        restarted.stop()
    assert replay[-1]["type"] == "done" and replay[-1]["status"] == "interrupted"
    saved_text = text_of(replay)
    assert saved_text.startswith(text_of(texts)[:10])
    assistant = detail["messages"][-1]
    assert assistant["status"] == "interrupted" and assistant["content"] == saved_text


def test_leaving_before_the_first_frame_is_stop_too(slow_settings):
    """The client hangs up right after sending: the stream never writes a frame."""
    import asyncio
    import json

    body = json.dumps({"message": "hello"}).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/alice/chat/stream", "raw_path": b"/api/alice/chat/stream", "query_string": b"",
        "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 5000),
        "headers": [(b"authorization", f"Bearer {token_for('alice')}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    with TestClient(create_app(slow_settings), timeout=30) as client:
        client.blocking_portal.call(client.app, scope, receive, send)
        assert sent[0]["status"] == 200
        run_id = fetch_rows(slow_settings.database, "SELECT id FROM run")[0][0]
        assert wait_for_status(slow_settings.database, str(run_id)) == "cancelled"
