"""A retried send (the same ``client_message_id``) answers the run it started, never a second one."""

from __future__ import annotations

import msgspec

from tests.conftest import auth, count_rows, start_live_server, token_for
from tests.sse import parse_frames


def test_chat_sent_twice_answers_one_reply(client, settings):
    body = {"message": "add buy milk", "client_message_id": "send-1"}
    first = client.post("/api/alice/chat", json=body, headers=auth("alice")).json()
    again = client.post("/api/alice/chat", json=body, headers=auth("alice")).json()
    assert again == first
    assert count_rows(settings.database, "run") == 1 and count_rows(settings.database, "task") == 1
    assert count_rows(settings.database, "message", "role = 'user'") == 1


def test_a_dropped_stream_sent_again_follows_the_same_run(settings):
    import httpx

    slow = msgspec.structs.replace(settings, offline_token_delay_ms=20)
    live = start_live_server(slow)
    body = {"message": "add " + " ".join(f"w{n}" for n in range(20)), "client_message_id": "send-2",
            "on_disconnect": "continue"}
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        first = msgspec.json.decode(line.removeprefix("data: "))
                        break
            # The connection dropped after start; the client sends the same message again.
            retried = parse_frames(http.post("/api/alice/chat/stream", json=body).content)
            # And once more after the reply finished: the stored run, from its start.
            finished = parse_frames(http.post("/api/alice/chat/stream", json=body).content)
    finally:
        live.stop()
    assert retried[0] == first and retried[-1]["type"] == "done" and retried[-1]["status"] == "completed"
    assert [e["seq"] for e in retried] == list(range(1, len(retried) + 1))
    assert finished == retried
    assert count_rows(settings.database, "run") == 1 and count_rows(settings.database, "task") == 1


def test_a_chat_frame_sent_again_follows_the_run_it_started(client, settings):
    frame = {"type": "chat", "message": "add buy bread", "client_message_id": "send-3"}
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json(frame)
        first = [ws.receive_json()]
        while first[-1]["type"] != "done":
            first.append(ws.receive_json())
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json(frame)
        again = [ws.receive_json()]
        while again[-1]["type"] != "done":
            again.append(ws.receive_json())
    assert again == first
    assert count_rows(settings.database, "run") == 1


def test_client_message_ids_are_per_user(client, settings):
    body = {"message": "add x", "client_message_id": "same"}
    alice = client.post("/api/alice/chat", json=body, headers=auth("alice")).json()
    bob = client.post("/api/bob/chat", json=body, headers=auth("bob")).json()
    assert alice["run_id"] != bob["run_id"] and count_rows(settings.database, "run") == 2


def test_an_over_long_client_message_id_is_400(client, settings):
    response = client.post("/api/alice/chat", json={"message": "hi", "client_message_id": "x" * 65},
                           headers=auth("alice"))
    assert response.status_code == 400 and count_rows(settings.database, "run") == 0
