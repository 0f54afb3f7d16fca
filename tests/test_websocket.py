"""WebSocket apps: chat, several runs on one socket, Stop that really stops, bad frames."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest
import websockets
from litestar.testing import TestClient
from websockets.exceptions import ConnectionClosed

from app.main import create_app
from tests.conftest import auth, count_rows, fetch_rows, start_live_server, token_for


@pytest.fixture
def slow_client(settings):
    """Replies take seconds, so there is time to press Stop."""
    with TestClient(create_app(msgspec.structs.replace(settings, offline_token_delay_ms=30)), timeout=30) as c:
        yield c


def read_run(ws, run_id=None) -> list[dict]:
    events = []
    while True:
        event = ws.receive_json()
        if run_id is None or event.get("run_id") == run_id:
            events.append(event)
            if event["type"] == "done":
                return events


def test_chat_over_websocket_streams_the_run(client):
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "add buy milk"})
        events = read_run(ws)
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert [e["type"] for e in events][:3] == ["start", "tool_call", "tool_result"]
    assert events[-1]["status"] == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [t["title"] for t in client.get("/api/alice/tasks", headers=auth("alice")).json()] == ["buy milk"]


def test_auth_with_a_first_frame(client):
    with client.websocket_connect("/api/alice/ws") as ws:
        ws.send_json({"type": "auth", "token": token_for("alice")})
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


@pytest.mark.parametrize("path", [
    "/api/alice/ws?token=not-a-jwt",
    f"/api/bob/ws?token={token_for('alice')}",
])
def test_bad_or_foreign_token_closes_with_1008(client, path, settings):
    with client.websocket_connect(path) as ws:
        with pytest.raises(Exception) as closed:
            ws.receive_json()
    assert getattr(closed.value, "code", None) == 1008
    assert count_rows(settings.database, "conversation") == 0


def test_missing_token_closes_with_1008(client):
    with client.websocket_connect("/api/alice/ws") as ws:
        ws.send_json({"type": "chat", "message": "add x"})
        with pytest.raises(Exception) as closed:
            ws.receive_json()
    assert getattr(closed.value, "code", None) == 1008


def test_cancel_stops_the_reply_and_saves_the_partial_text(slow_client, settings):
    with slow_client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "hello"})
        start = ws.receive_json()
        first_text = ws.receive_json()
        assert first_text["type"] == "text"
        ws.send_json({"type": "cancel", "run_id": start["run_id"]})
        rest = read_run(ws)
        # Nothing may follow done: the next frame is the answer to this ping.
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    done = rest[-1]
    assert done["status"] == "cancelled"
    assert all(e["type"] == "text" for e in rest[:-1])
    partial = first_text["content"] + "".join(e["content"] for e in rest[:-1])
    assert len(partial) < 200  # the whole greeting is far longer

    detail = slow_client.get(f"/api/alice/conversations/{start['conversation_id']}", headers=auth("alice")).json()
    assistant = detail["messages"][-1]
    assert assistant["role"] == "assistant" and assistant["status"] == "cancelled"
    assert assistant["content"] == partial
    assert all(m["role"] != "hidden" for m in detail["messages"])
    assert count_rows(settings.database, "message", "role = 'hidden'") == 1
    assert fetch_rows(settings.database, "SELECT status FROM run") == [("cancelled",)]


def test_several_runs_on_one_socket_and_run_active_for_a_busy_conversation(slow_client):
    with slow_client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "add one"})
        first = ws.receive_json()
        ws.send_json({"type": "chat", "message": "add two"})
        ws.send_json({"type": "chat", "message": "list my tasks", "conversation_id": first["conversation_id"]})
        frames = []
        done_runs = set()
        while len(done_runs) < 2:
            frame = ws.receive_json()
            frames.append(frame)
            if frame["type"] == "done":
                done_runs.add(frame["run_id"])
    starts = [f for f in frames if f["type"] == "start"]
    assert len(starts) == 1 and starts[0]["conversation_id"] != first["conversation_id"]
    busy = [f for f in frames if f["type"] == "error" and "seq" not in f]
    assert busy and busy[0]["code"] == "run_active"
    for run_id in done_runs:
        seqs = [f["seq"] for f in [first, *frames] if f.get("run_id") == run_id]
        assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("frame, code", [
    ("not json", "invalid_frame"),
    (json.dumps({"type": "shout", "message": "x"}), "invalid_frame"),
    (json.dumps({"type": "chat"}), "invalid_frame"),
    (json.dumps({"type": "chat", "message": 5}), "invalid_frame"),
    (json.dumps({"type": "chat", "message": "   "}), "invalid_frame"),
    (json.dumps({"type": "chat", "message": "x" * 70_000}), "limit_exceeded"),
    (json.dumps({"type": "cancel", "run_id": "00000000-0000-0000-0000-000000000000"}), "not_found"),
    (json.dumps({"type": "resume", "run_id": "nope", "after": 0}), "not_found"),
    (json.dumps({"type": "chat", "message": "hi", "conversation_id": "nope"}), "not_found"),
])
def test_bad_frames_get_an_error_and_the_socket_stays_usable(client, settings, frame, code):
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_text(frame)
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == code and error["message"]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert count_rows(settings.database, "conversation") == 0
    assert count_rows(settings.database, "message") == 0


def test_cancel_of_another_users_run_is_not_found(slow_client):
    with slow_client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as alice, \
            slow_client.websocket_connect(f"/api/bob/ws?token={token_for('bob')}") as bob:
        alice.send_json({"type": "chat", "message": "add secret"})
        start = alice.receive_json()
        bob.send_json({"type": "cancel", "run_id": start["run_id"]})
        assert bob.receive_json()["code"] == "not_found"
        bob.send_json({"type": "resume", "run_id": start["run_id"], "after": 0})
        assert bob.receive_json()["code"] == "not_found"
        assert read_run(alice)[-1]["status"] == "completed"


def test_dropping_the_socket_does_not_cancel_the_run(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=20))
    ws_url = live.url.replace("http", "ws") + f"/api/alice/ws?token={token_for('alice')}"

    async def scenario():
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "chat", "message": "add survive the drop"}))
            start = json.loads(await ws.recv())
        # The socket is gone; the run finishes anyway and can be resumed on a new socket.
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "resume", "run_id": start["run_id"], "after": 1}))
            events = []
            while not events or events[-1]["type"] != "done":
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        return start, events

    try:
        start, events = asyncio.run(scenario())
    finally:
        live.stop()
    assert events[0]["seq"] == 2
    assert [e["seq"] for e in events] == list(range(2, len(events) + 2))
    assert events[-1]["status"] == "completed"
    assert fetch_rows(settings.database, "SELECT status FROM run") == [("completed",)]
    assert count_rows(settings.database, "task") == 1


def test_a_burst_through_uvicorn_arrives_one_event_per_frame_in_order(live_server):
    """A batch of events goes to uvicorn as one send and one write (app/uvicorn_batched_websocket.py);
    a replay of a whole run is such a batch. Each frame must still be one event, none lost."""
    url = live_server.url.replace("http", "ws") + f"/api/alice/ws?token={token_for('alice')}"
    words = [f"w{n}" for n in range(300)]

    async def read_until_done(ws) -> list[str]:
        frames: list[str] = []
        while not frames or json.loads(frames[-1])["type"] != "done":
            frames.append(await asyncio.wait_for(ws.recv(), 10))
        return frames

    async def scenario():
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "chat", "message": "complete " + " ".join(words)}))
            live = await read_until_done(ws)
            await ws.send(json.dumps({"type": "resume", "run_id": json.loads(live[0])["run_id"], "after": 0}))
            return live, await read_until_done(ws)

    live, replayed = asyncio.run(scenario())
    events = [json.loads(frame) for frame in live]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    text = "".join(e["content"] for e in events if e["type"] == "text")
    assert " ".join(words) in text
    assert events[-1]["status"] == "completed"
    assert replayed == live


def test_websocket_through_uvicorn_rejects_a_bad_token_with_1008(live_server):
    async def scenario():
        url = live_server.url.replace("http", "ws") + "/api/alice/ws?token=bad"
        async with websockets.connect(url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 1008


def test_cancel_during_a_tool_rolls_its_write_back(client, settings, monkeypatch):
    import asyncio as aio

    from domain import tasks
    from domain.tables import Task

    entered = []

    async def slow_add_task(db, user_id, title, description):
        async with db.transaction():
            await Task.insert(Task(user_id=user_id, title=title, description=description))
            entered.append(title)
            await aio.sleep(30)  # Stop arrives while the row is written but not committed
        raise AssertionError("the tool should have been cancelled")

    monkeypatch.setattr(tasks, "add_task", slow_add_task)
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "add half written"})
        start = ws.receive_json()
        assert ws.receive_json()["type"] == "tool_call"
        while not entered:
            time.sleep(0.01)
        ws.send_json({"type": "cancel", "run_id": start["run_id"]})
        done = ws.receive_json()
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # no tool_result or text after done
    assert done["type"] == "done" and done["status"] == "cancelled"
    assert count_rows(settings.database, "task") == 0
    tool = fetch_rows(settings.database, "SELECT tool FROM message WHERE role = 'tool'")
    assert "stopped before it finished" in tool[0][0]
