"""Every limit answers a clear 4xx (429 with Retry-After where waiting helps) and writes nothing."""

from __future__ import annotations

import msgspec
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import auth, count_rows, token_for

# Not run_event: the runs still going in these tests keep saving their events.
TABLES = ("conversation", "message", "run")


def rows(settings) -> dict[str, int]:
    return {table: count_rows(settings.database, table) for table in TABLES}


def test_concurrent_active_runs_per_user(settings):
    limited = msgspec.structs.replace(settings, max_active_runs_per_user=2, offline_token_delay_ms=50)
    with TestClient(create_app(limited), timeout=30) as client:
        with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
            ws.send_json({"type": "chat", "message": "hello"})
            ws.send_json({"type": "chat", "message": "hello"})
            running = set()
            while len(running) < 2:
                if (event := ws.receive_json())["type"] == "start":
                    running.add(event["run_id"])
            before = rows(limited)
            refused = client.post("/api/alice/chat/stream", json={"message": "add third"}, headers=auth("alice"))
            assert refused.status_code == 429
            assert refused.json()["extra"] == {"code": "limit_exceeded"}
            assert "limit is 2" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) >= 1
            assert rows(limited) == before
            # Other users are not affected.
            assert client.post("/api/bob/chat", json={"message": "add x"}, headers=auth("bob")).status_code == 200
            for run_id in running:
                ws.send_json({"type": "cancel", "run_id": run_id})


def test_messages_per_minute(settings):
    limited = msgspec.structs.replace(settings, messages_per_minute=3)
    with TestClient(create_app(limited), timeout=30) as client:
        for n in range(3):
            assert client.post("/api/alice/chat", json={"message": f"add t{n}"}, headers=auth("alice")).status_code == 200
        before = rows(limited)
        refused = client.post("/api/alice/chat", json={"message": "add one more"}, headers=auth("alice"))
        assert refused.status_code == 429
        assert refused.json()["extra"] == {"code": "limit_exceeded"}
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert rows(limited) == before
        with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
            ws.send_json({"type": "chat", "message": "add over the socket"})
            assert ws.receive_json()["code"] == "limit_exceeded"
        assert rows(limited) == before


def test_maximum_run_duration_stops_the_run(settings):
    limited = msgspec.structs.replace(settings, max_run_duration_s=0.3, offline_token_delay_ms=50)
    with TestClient(create_app(limited), timeout=30) as client:
        reply = client.post("/api/alice/chat", json={"message": "hello"}, headers=auth("alice")).json()
    assert reply["status"] == "failed"
    assert reply["error"]["code"] == "limit_exceeded"
    assert "0.3 s" in reply["error"]["message"]
    assert reply["response"]  # the text so far is kept...
    stored = count_rows(limited.database, "message", "role = 'assistant' AND status = 'failed'")
    assert stored == 1  # ...and saved
