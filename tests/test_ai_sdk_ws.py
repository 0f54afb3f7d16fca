"""The AI SDK's ``WebSocketChatTransport`` (``ai`` on npm, on the ``ws`` package) as the
referee: it numbers every frame, validates every chunk against the SDK's schema, and fails a
stream on an out-of-order or malformed frame."""

from __future__ import annotations

import json
import os
import subprocess

import msgspec
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import count_rows, start_live_server, token_for, wait_until_no_run_runs
from tests.test_ai_sdk import NODE_DIR, require_node_clients

LONG = "add " + " ".join(f"w{n}" for n in range(30))


def ws_client(server, user: str, mode: str, chat_id: str, text: str = "", *, query_auth: bool = False) -> dict:
    require_node_clients()
    done = subprocess.run(
        ["node", str(NODE_DIR / "ai_sdk_ws.mjs"), server.url, token_for(user), mode, chat_id, text],
        capture_output=True, text=True, timeout=60, cwd=NODE_DIR,
        env={**os.environ, "AUTH": "query" if query_auth else "header"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def text_of(message: dict) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


@pytest.fixture
def server(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5))
    yield live
    live.stop()


@pytest.fixture
def slow_server(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=40))
    yield live
    live.stop()


@pytest.mark.parametrize("query_auth", [False, True], ids=["header-in-each-frame", "token-in-url"])
def test_a_reply_with_a_tool_call_over_the_socket(server, settings, query_auth):
    result = ws_client(server, "alice", "send", "ws-chat-1", "add buy milk", query_auth=query_auth)
    assert result["errors"] == []
    message = result["message"]
    tool = next(p for p in message["parts"] if p["type"] == "tool-add_task")
    assert tool["state"] == "output-available" and tool["input"] == {"title": "buy milk"}
    assert "buy milk" in text_of(message)
    assert message["metadata"]["usage"]["outputTokens"] > 0
    again = ws_client(server, "alice", "send", "ws-chat-1", "list my tasks", query_auth=query_auth)
    assert "buy milk" in text_of(again["message"])
    assert count_rows(settings.database, "conversation") == 1


def test_two_replies_share_one_socket(server, settings):
    result = ws_client(server, "alice", "two-chats", "ws-mux", "hello")
    for side in ("a", "b"):
        assert result[side]["errors"] == [] and text_of(result[side]["message"])
    assert count_rows(settings.database, "run", "status = 'completed'") == 2


def test_abort_is_stop(slow_server, settings):
    result = ws_client(slow_server, "alice", "abort", "ws-stop", LONG)
    wait_until_no_run_runs(settings.database)
    assert result["chunks"][0]["type"] == "start" and result["afterAbort"] is True
    # A resume right after the abort finds the reply ending as stopped, or nothing running.
    resumed = result["resumed"]
    assert resumed is None or resumed["errors"] == []
    assert count_rows(settings.database, "run", "status = 'cancelled'") == 1


def test_a_dropped_socket_is_not_stop_and_resume_replays_the_reply(slow_server, settings):
    result = ws_client(slow_server, "alice", "drop-and-resume", "ws-drop", LONG)
    resumed = result["resumed"]
    assert resumed is not None and resumed["errors"] == []
    # Replayed from its first chunk: the whole reply, the tool call included.
    assert "w29" in text_of(resumed["message"])
    assert any(p["type"] == "tool-add_task" for p in resumed["message"]["parts"])
    wait_until_no_run_runs(settings.database)
    assert count_rows(settings.database, "run", "status = 'completed'") == 1


def test_resume_with_nothing_running_is_no_active(server):
    ws_client(server, "alice", "send", "ws-idle", "hello")
    assert ws_client(server, "alice", "resume", "ws-idle") == {"none": True}
    assert ws_client(server, "alice", "resume", "ws-never-seen") == {"none": True}


def test_chat_ids_are_per_user(server, settings):
    ws_client(server, "alice", "send", "ws-same", "add alice's secret")
    bob = ws_client(server, "bob", "send", "ws-same", "list my tasks")
    assert "secret" not in json.dumps(bob["message"])
    assert count_rows(settings.database, "conversation") == 2


# -- bad frames: an error frame for the request, the socket stays open, nothing written ------

def send_frame(request_id: str, chat: str = "c", **fields) -> dict:
    return {"type": "send", "requestId": request_id, "id": chat, "trigger": "submit-message",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}],
            "headers": {"authorization": f"Bearer {token_for('alice')}"}, "body": {}, **fields}


@pytest.mark.parametrize("frame, request_id", [
    (b"not json", ""),
    (b"\xff\xfe", ""),
    (b'{"type": "send", "requestId": "r1"}', "r1"),
    (b'{"type": "launch", "requestId": "r2"}', "r2"),
    (json.dumps(send_frame("r3", messages="no")).encode(), "r3"),
    (json.dumps(send_frame("r4", messages=[])).encode(), "r4"),  # no user message
    (json.dumps(send_frame("r5", chat="")).encode(), "r5"),
    (json.dumps(send_frame("r6", headers={})).encode(), "r6"),  # no token anywhere
    (json.dumps(send_frame("r7", headers={"Authorization": f"Bearer {token_for('bob')}"})).encode(), "r7"),
    (json.dumps(send_frame("r8", headers={"Authorization": "Bearer junk"})).encode(), "r8"),
    (json.dumps(send_frame("r9", trigger="regenerate-message")).encode(), "r9"),  # nothing to regenerate
    (json.dumps({"type": "resume", "requestId": "r10", "id": "c", "lastSequence": -1, "headers": {},
                 "body": {}}).encode(), "r10"),
    (b'{"type": "abort", "requestId": "r11"}', "r11"),  # a stream that is not open
])
def test_a_bad_frame_gets_an_error_for_its_request_and_writes_nothing(settings, frame, request_id):
    with TestClient(create_app(settings)) as client, client.websocket_connect("/api/alice/ai-sdk/ws") as ws:
        ws.send_bytes(frame)
        error = ws.receive_json()
        assert error["type"] == "error" and error["requestId"] == request_id and error["errorText"]
        # The socket stays open and serves a good request next.
        ws.send_json(send_frame("ok", chat="after"))
        frames = []
        while not frames or frames[-1]["type"] != "end":
            frames.append(ws.receive_json())
    assert frames[0] == {"type": "start", "requestId": "ok"}
    assert [f["sequence"] for f in frames if f["type"] == "chunk"] == list(range(len(frames) - 2))
    assert count_rows(settings.database, "conversation") == 1


def test_a_foreign_token_in_the_url_closes_the_socket_1008(settings):
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect(f"/api/alice/ai-sdk/ws?token={token_for('bob')}") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
    assert closed.value.code == 1008


def read_request(ws, request_id: str) -> list[dict]:
    """A request's frames up to its end (or its error)."""
    frames = []
    while not frames or frames[-1]["type"] not in ("end", "error"):
        frame = ws.receive_json()
        assert frame["requestId"] == request_id
        frames.append(frame)
    return frames


def test_approval_answers_over_the_socket_and_what_is_refused(settings):
    """The SDK's Chat drives the happy path (tests/test_ai_sdk.py); here the frames around it:
    an answer sent again, an unknown approval id and another user's each get an error frame
    for their request, the socket stays open and nothing changes."""
    with TestClient(create_app(msgspec.structs.replace(settings, tool_approval="delete_task"))) as client, \
            client.websocket_connect(f"/api/alice/ai-sdk/ws?token={token_for('alice')}") as ws:
        said = [{"id": f"u{n}", "role": "user", "parts": [{"type": "text", "text": text}]}
                for n, text in enumerate(["add buy milk", "delete buy milk"])]
        for n in (1, 2):
            ws.send_json(send_frame(f"s{n}", chat="ws-approve", messages=said[:n], headers={}))
            chunks = [f["chunk"] for f in read_request(ws, f"s{n}") if f["type"] == "chunk"]
        [asked] = [c for c in chunks if c["type"] == "tool-approval-request"]
        assert chunks[-1]["finishReason"] == "tool-calls"
        message_id = chunks[0]["messageId"]

        def answered(approval_id: str, approved: bool = True) -> list[dict]:
            part = {"type": "tool-delete_task", "toolCallId": asked["toolCallId"], "state": "approval-responded",
                    "input": {"title": "buy milk"}, "approval": {"id": approval_id, "approved": approved}}
            return [*said, {"id": message_id, "role": "assistant", "parts": [{"type": "step-start"}, part]}]

        ws.send_json(send_frame("unknown", chat="ws-approve", messages=answered("nope:" + asked["toolCallId"]),
                                headers={}))
        [error] = read_request(ws, "unknown")
        assert error["type"] == "error" and error["errorText"] == "No such run."
        with client.websocket_connect(f"/api/bob/ai-sdk/ws?token={token_for('bob')}") as bob:
            bob.send_json(send_frame("foreign", chat="ws-approve", messages=answered(asked["approvalId"]), headers={}))
            [error] = read_request(bob, "foreign")
            assert error["type"] == "error" and error["errorText"] == "No such run."
        assert count_rows(settings.database, "approval", "decision IS NULL") == 1

        ws.send_json(send_frame("yes", chat="ws-approve", messages=answered(asked["approvalId"]), messageId=message_id,
                                headers={}))
        frames = read_request(ws, "yes")
        chunks = [f["chunk"] for f in frames if f["type"] == "chunk"]
        assert chunks[0] == {**chunks[0], "type": "start", "messageId": message_id}
        assert {"type": "tool-output-available", "toolCallId": asked["toolCallId"]}.items() <= chunks[2].items()
        assert chunks[-1]["finishReason"] == "stop"
        runs = count_rows(settings.database, "run")

        ws.send_json(send_frame("again", chat="ws-approve", messages=answered(asked["approvalId"], False), headers={}))
        [error] = read_request(ws, "again")
        assert error["type"] == "error" and "already" in error["errorText"]
    assert count_rows(settings.database, "run") == runs and count_rows(settings.database, "task") == 0
