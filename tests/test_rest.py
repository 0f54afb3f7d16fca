"""Conversations and tasks over plain JSON, and persistence across a restart."""

from __future__ import annotations

from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import auth, count_rows


def test_list_get_and_delete_conversations(client, settings):
    first = client.post("/api/alice/chat", json={"message": "add one"}, headers=auth("alice")).json()
    second = client.post("/api/alice/chat", json={"message": "add two"}, headers=auth("alice")).json()

    listed = client.get("/api/alice/conversations", headers=auth("alice")).json()
    assert [c["id"] for c in listed] == [second["conversation_id"], first["conversation_id"]]
    assert listed[0]["title"] == "add two"

    detail = client.get(f"/api/alice/conversations/{first['conversation_id']}", headers=auth("alice")).json()
    assert [(m["role"], m["status"]) for m in detail["messages"]] == [
        ("user", "completed"), ("tool", "completed"), ("assistant", "completed")
    ]
    assert detail["messages"][1]["tool"]["name"] == "add_task"

    assert client.delete(f"/api/alice/conversations/{first['conversation_id']}", headers=auth("alice")).status_code == 204
    assert client.get(f"/api/alice/conversations/{first['conversation_id']}", headers=auth("alice")).status_code == 404
    assert client.delete(f"/api/alice/conversations/{first['conversation_id']}", headers=auth("alice")).status_code == 404
    # Its messages, run and events went with it; the other conversation and the tasks stay.
    assert count_rows(settings.database, "run") == 1
    assert count_rows(settings.database, "message") == 3
    assert len(client.get("/api/alice/tasks", headers=auth("alice")).json()) == 2


def test_get_one_task(client):
    client.post("/api/alice/chat", json={"message": "add one"}, headers=auth("alice"))
    task = client.get("/api/alice/tasks", headers=auth("alice")).json()[0]
    assert client.get(f"/api/alice/tasks/{task['id']}", headers=auth("alice")).json() == task
    assert client.get(f"/api/bob/tasks/{task['id']}", headers=auth("bob")).status_code == 404


def test_everything_is_still_there_after_a_restart(settings):
    with TestClient(create_app(settings)) as client:
        reply = client.post("/api/alice/chat", json={"message": "add survive restarts"}, headers=auth("alice")).json()
        before = client.get(f"/api/alice/conversations/{reply['conversation_id']}", headers=auth("alice")).json()
        events = client.get(f"/api/alice/runs/{reply['run_id']}/events", headers=auth("alice")).content

    with TestClient(create_app(settings)) as client:
        after = client.get(f"/api/alice/conversations/{reply['conversation_id']}", headers=auth("alice")).json()
        assert after == before
        assert client.get(f"/api/alice/runs/{reply['run_id']}/events", headers=auth("alice")).content == events
        assert [t["title"] for t in client.get("/api/alice/tasks", headers=auth("alice")).json()] == ["survive restarts"]
        listed = client.post("/api/alice/chat", json={"message": "list my tasks",
                                                      "conversation_id": reply["conversation_id"]},
                             headers=auth("alice")).json()
        assert "survive restarts" in listed["response"]


def test_health(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["model_provider"] == "offline"
