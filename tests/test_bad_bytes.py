"""Malformed bytes and out-of-range values: a documented 4xx (or an error frame on an open
socket), never a 5xx, and both engines refuse exactly the same values."""

from __future__ import annotations

import pytest

from tests.conftest import auth, count_rows, token_for
from tests.test_bad_input import assert_nothing_written
from tests.test_chatkit import chatkit, create, request, stream_events

JSON = {"Content-Type": "application/json"}
CHAT_ROUTES = ["/api/alice/chat", "/api/alice/chat/stream"]


@pytest.mark.parametrize("route", CHAT_ROUTES)
@pytest.mark.parametrize("body", [
    b'{"message": "\xff\xfe caf\xe9"}',  # not UTF-8 inside a string
    b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deeper than any decoder recurses
])
def test_undecodable_bodies_are_400(client, settings, route, body):
    response = client.post(route, content=body, headers={**auth("alice"), **JSON})
    assert response.status_code == 400, response.text
    assert response.json()["status_code"] == 400 and "Traceback" not in response.text
    assert_nothing_written(settings)


@pytest.mark.parametrize("body", [
    b'{"type": "threads.create", "params": {"input": {"content": [{"type": "input_text", "text": "\xff"}]}}}',
    b"[" * 100_000 + b"]" * 100_000,
])
def test_undecodable_chatkit_bodies_are_400(client, settings, body):
    response = client.post("/chatkit", content=body, headers={**auth("alice"), **JSON})
    assert response.status_code == 400, response.text
    assert_nothing_written(settings)


@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_a_nul_in_a_message_is_400_on_both_engines(client, settings, route):
    response = client.post(route, json={"message": "add milk\u0000"}, headers=auth("alice"))
    assert response.status_code == 400
    assert response.json()["extra"] == [
        {"key": "message", "message": "The message contains a NUL character.", "source": "body"}
    ]
    assert_nothing_written(settings)


def test_a_nul_on_the_websocket_is_an_error_frame_and_the_socket_stays_open(client, settings):
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "add milk\u0000"})
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "invalid_frame" and "NUL" in error["message"]
        ws.send_bytes(b'{"type": "chat", "message": "\xff\xfe"}')  # a binary frame, not UTF-8
        assert ws.receive_json() == {"type": "error", "code": "invalid_frame", "message": "Invalid frame: not UTF-8"}
        ws.send_json({"type": "resume", "run_id": "x", "after": 2**31})
        assert ws.receive_json()["code"] == "invalid_frame"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert_nothing_written(settings)


def test_a_chatkit_title_with_a_nul_or_too_long_is_400_and_unchanged(client, settings):
    events = stream_events(chatkit(client, create("hello")))
    thread = next(e for e in events if e["type"] == "thread.created")["thread"]
    for title in ["a\u0000b", "x" * 201]:
        response = chatkit(client, request("threads.update", thread_id=thread["id"], title=title))
        assert response.status_code == 400, response.text
    got = chatkit(client, request("threads.get_by_id", thread_id=thread["id"])).json()
    assert got["title"] == "hello"


def test_a_user_id_over_128_characters_is_refused_before_the_database(client, settings):
    long_user = "u" * 129
    response = client.post(f"/api/{long_user}/chat", json={"message": "hi"}, headers=auth(long_user))
    assert response.status_code == 401
    assert "128" in response.json()["detail"]
    assert_nothing_written(settings)


def test_a_nul_in_a_static_path_is_404(client):
    response = client.get("/static/%00")
    assert response.status_code == 404
    assert "Traceback" not in response.text


@pytest.mark.parametrize("header", ["9223372036854775808", "2147483648", "-5", "x"])
def test_an_impossible_last_event_id_is_400(client, settings, header):
    run = client.post("/api/alice/chat", json={"message": "hi"}, headers=auth("alice")).json()
    response = client.get(f"/api/alice/runs/{run['run_id']}/events", headers={**auth("alice"), "Last-Event-ID": header})
    assert response.status_code == 400, response.text


def test_a_task_title_over_500_characters_is_refused_on_both_engines(client, settings):
    reply = client.post("/api/alice/chat", json={"message": "add " + "t" * 501}, headers=auth("alice")).json()
    assert reply["status"] == "completed"
    assert "500" in reply["tool_calls"][0]["result"]["error"]
    assert count_rows(settings.database, "task") == 0


def test_deleting_another_users_busy_conversation_is_404(settings):
    """Only the owner learns that a reply is running in a conversation."""
    import msgspec
    from litestar.testing import TestClient

    from app.main import create_app

    slow = msgspec.structs.replace(settings, offline_token_delay_ms=50)
    with TestClient(create_app(slow), timeout=30) as client, client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "add " + " ".join(f"w{n}" for n in range(40))})
        start = ws.receive_json()
        conversation = start["conversation_id"]
        assert client.delete(f"/api/bob/conversations/{conversation}", headers=auth("bob")).status_code == 404
        assert chatkit(client, request("threads.delete", thread_id=conversation), user="bob").status_code == 404
        assert client.delete(f"/api/alice/conversations/{conversation}", headers=auth("alice")).status_code == 409
        ws.send_json({"type": "cancel", "run_id": start["run_id"]})
        while ws.receive_json()["type"] != "done":
            pass
    assert count_rows(settings.database, "conversation") == 1


def test_a_model_streaming_a_lone_surrogate_or_a_nul_completes_and_is_stored(client, settings, monkeypatch):
    """What a provider streams is cleaned once: the reply completes, and saving it cannot fail."""
    import msgspec

    from domain.offline_model import OfflineModel

    original = OfflineModel.stream_response

    async def garbled(self, *args, **kwargs):
        async for event in original(self, *args, **kwargs):
            if event.type == "response.output_text.delta":
                event = event.model_copy(update={"delta": event.delta + "\ud800\u0000"})
            yield event

    monkeypatch.setattr(OfflineModel, "stream_response", garbled)
    reply = client.post("/api/alice/chat", json={"message": "hello"}, headers=auth("alice")).json()
    assert reply["status"] == "completed" and "\ufffd\ufffd" in reply["response"]
    assert "\ud800" not in reply["response"] and "\u0000" not in reply["response"]
    detail = client.get(f"/api/alice/conversations/{reply['conversation_id']}", headers=auth("alice")).json()
    assert detail["messages"][-1]["content"] == reply["response"]
    assert msgspec.json.encode(detail)  # everything stored encodes
