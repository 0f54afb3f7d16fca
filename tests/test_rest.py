"""Conversations and tasks over plain JSON, and persistence across a restart."""

from __future__ import annotations

import json

import httpx
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import auth, count_rows, start_live_server


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


def test_tasks_are_numbered_per_user_as_the_assistant_lists_them(client):
    for message in ("add one", "add two", "add three"):
        client.post("/api/bob/chat", json={"message": message}, headers=auth("bob"))
    client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice"))
    reply = client.post("/api/alice/chat", json={"message": "add call mom"}, headers=auth("alice")).json()
    assert reply["response"] == "Added “call mom” to your list (task #2)."  # not Bob's count
    [milk, mom] = client.get("/api/alice/tasks", headers=auth("alice")).json()
    assert (milk["number"], mom["number"]) == (1, 2)
    assert client.get(f"/api/alice/tasks/{mom['id']}", headers=auth("alice")).json()["number"] == 2

    client.post("/api/alice/chat", json={"message": "complete 2"}, headers=auth("alice"))  # the number shown
    assert client.get(f"/api/alice/tasks/{mom['id']}", headers=auth("alice")).json()["completed"] is True
    assert [t["number"] for t in client.get("/api/alice/tasks?status=completed", headers=auth("alice")).json()] == [2]
    client.delete(f"/api/alice/tasks/{milk['id']}", headers=auth("alice"))
    assert client.get(f"/api/alice/tasks/{mom['id']}", headers=auth("alice")).json()["number"] == 1


def test_a_task_is_completed_renamed_and_deleted_in_place_and_only_by_its_user(client, settings):
    client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice"))
    task = client.get("/api/alice/tasks", headers=auth("alice")).json()[0]
    url = f"/api/alice/tasks/{task['id']}"

    done = client.patch(url, json={"completed": True}, headers=auth("alice"))
    assert done.status_code == 200 and done.json()["completed"] is True and done.json()["title"] == "buy milk"
    renamed = client.patch(url, json={"title": "buy oat milk", "completed": False}, headers=auth("alice")).json()
    assert (renamed["title"], renamed["completed"]) == ("buy oat milk", False)

    # Another user's id names nothing, and changes nothing.
    assert client.patch(f"/api/bob/tasks/{task['id']}", json={"completed": True}, headers=auth("bob")).status_code == 404
    assert client.delete(f"/api/bob/tasks/{task['id']}", headers=auth("bob")).status_code == 404
    for missing in (0, 2**31, 2**63 - 1):
        assert client.patch(f"/api/alice/tasks/{missing}", json={"completed": True},
                            headers=auth("alice")).status_code == 404

    assert client.delete(url, headers=auth("alice")).status_code == 204
    assert client.delete(url, headers=auth("alice")).status_code == 404
    assert client.get("/api/alice/tasks", headers=auth("alice")).json() == []
    assert count_rows(settings.database, "task") == 0


def test_a_task_change_the_store_could_not_keep_is_refused_on_both_engines(client):
    client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice"))
    task = client.get("/api/alice/tasks", headers=auth("alice")).json()[0]
    url = f"/api/alice/tasks/{task['id']}"
    for body in ({"title": ""}, {"title": "   "}, {"title": "x" * 501}, {"title": "nul\x00byte"},
                 {"completed": "yes"}, {"colour": "red"}, {"description": "\x00"}):
        refused = client.patch(url, json=body, headers=auth("alice"))
        assert refused.status_code == 400, (body, refused.text)
        assert "detail" in refused.json()
    assert client.get(url, headers=auth("alice")).json() == task  # nothing changed


def test_a_conversation_is_renamed_and_the_new_title_is_listed(client):
    reply = client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice")).json()
    url = f"/api/alice/conversations/{reply['conversation_id']}"
    renamed = client.patch(url, json={"title": "Groceries"}, headers=auth("alice"))
    assert renamed.status_code == 200 and renamed.json()["title"] == "Groceries"
    assert client.get("/api/alice/conversations", headers=auth("alice")).json()[0]["title"] == "Groceries"

    assert client.patch(url.replace("alice", "bob"), json={"title": "mine"}, headers=auth("bob")).status_code == 404
    assert client.patch("/api/alice/conversations/not-an-id", json={"title": "x"}, headers=auth("alice")).status_code == 404
    for body in ({"title": "x" * 201}, {"title": "a\x00b"}, {}, {"title": 3}):
        assert client.patch(url, json=body, headers=auth("alice")).status_code == 400, body
    assert client.get(url, headers=auth("alice")).json()["title"] == "Groceries"


def test_task_changes_made_through_rest_are_told_on_the_feed(settings):
    live = start_live_server(settings)
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            http.post("/api/alice/chat", json={"message": "add buy milk"})
            task = http.get("/api/alice/tasks").json()[0]
            with http.stream("GET", "/api/alice/events") as feed:  # subscribed once it answers
                assert feed.status_code == 200
                http.patch(f"/api/alice/tasks/{task['id']}", json={"completed": True})
                http.delete(f"/api/alice/tasks/{task['id']}")
                seen = []
                for line in feed.iter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line.removeprefix("data: ")))
                    if len(seen) == 2:
                        break
    finally:
        live.stop()
    assert [(e["type"], e["task_id"]) for e in seen] == [("task_changed", task["id"]), ("task_removed", task["id"])]
    assert seen[0]["completed"] is True


def test_an_edited_message_is_answered_anew_and_what_followed_it_is_dropped(client):
    first = client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice")).json()
    conversation = first["conversation_id"]
    client.post("/api/alice/chat", json={"message": "list my tasks", "conversation_id": conversation},
                headers=auth("alice"))
    messages = client.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    said = [m for m in messages if m["role"] == "user"][1]

    stream = client.post("/api/alice/chat/stream", json={"message": "add call mom", "conversation_id": conversation,
                                                         "again": said["id"]}, headers=auth("alice"))
    assert stream.status_code == 200 and b'"done"' in stream.content
    after = client.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    assert [m["content"] for m in after if m["role"] == "user"] == ["add buy milk", "add call mom"]
    assert [m["id"] for m in after if m["role"] == "user"][1] == said["id"]
    assert [t["title"] for t in client.get("/api/alice/tasks", headers=auth("alice")).json()] == ["buy milk", "call mom"]

    regenerated = client.post("/api/alice/chat/stream", json={"message": "", "conversation_id": conversation,
                                                              "again": said["id"]}, headers=auth("alice"))
    assert regenerated.status_code == 200
    again = client.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    assert [m["content"] for m in again if m["role"] == "user"] == ["add buy milk", "add call mom"]
    assert len(again) == len(after)  # the old answer was replaced, not kept beside the new one


def test_the_plain_chat_regenerates_and_edits_an_earlier_message_with_again(client):
    first = client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice")).json()
    conversation = first["conversation_id"]
    client.post("/api/alice/chat", json={"message": "list my tasks", "conversation_id": conversation},
                headers=auth("alice"))
    before = client.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    said = [m for m in before if m["role"] == "user"][1]

    regenerated = client.post("/api/alice/chat", json={"message": "", "conversation_id": conversation,
                                                       "again": said["id"]}, headers=auth("alice"))
    assert regenerated.status_code == 200, regenerated.text
    assert regenerated.json()["status"] == "completed" and "buy milk" in regenerated.json()["response"]
    after = client.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    assert [m["content"] for m in after if m["role"] == "user"] == ["add buy milk", "list my tasks"]
    assert len(after) == len(before)  # the old answer was replaced, not kept beside the new one

    edited = client.post("/api/alice/chat", json={"message": "add call mom", "conversation_id": conversation,
                                                  "again": said["id"]}, headers=auth("alice"))
    assert edited.status_code == 200, edited.text
    assert edited.json()["response"] == "Added “call mom” to your list (task #2)."
    after = client.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    assert [m["content"] for m in after if m["role"] == "user"] == ["add buy milk", "add call mom"]
    assert [t["title"] for t in client.get("/api/alice/tasks", headers=auth("alice")).json()] == ["buy milk", "call mom"]


def test_the_plain_chat_refuses_again_naming_a_message_that_is_not_the_users(client):
    first = client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice")).json()
    messages = client.get(f"/api/alice/conversations/{first['conversation_id']}", headers=auth("alice")).json()
    reply = [m for m in messages["messages"] if m["role"] == "assistant"][0]
    refused = client.post("/api/alice/chat", json={"message": "", "conversation_id": first["conversation_id"],
                                                   "again": reply["id"]}, headers=auth("alice"))
    assert refused.status_code == 400 and "Only a user message can be answered again." in refused.text
    assert client.get(f"/api/alice/conversations/{first['conversation_id']}",
                      headers=auth("alice")).json()["messages"] == messages["messages"]


def test_a_conversation_cannot_be_renamed_to_a_blank_title(client, settings):
    """Issue 33: ``PATCH`` with ``{"title": ""}`` emptied the title; it is a coded 400 that
    changes nothing (an id that names nothing gets the same 400: the title is checked first)."""
    reply = client.post("/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice")).json()
    url = f"/api/alice/conversations/{reply['conversation_id']}"
    for title in ("", "   ", "\t\n"):
        refused = client.patch(url, json={"title": title}, headers=auth("alice"))
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "invalid_input"
        assert refused.json()["extra"][0]["key"] == "title"
    assert client.patch("/api/alice/conversations/nope", json={"title": ""}, headers=auth("alice")).status_code == 400
    assert client.get(url, headers=auth("alice")).json()["title"] == "add buy milk"


def test_options_lists_every_method_of_the_path(client):
    """Issue 33: ``OPTIONS`` on a conversation or a task listed only the first method
    registered there (``DELETE, OPTIONS``)."""
    for path, methods in [("/api/alice/conversations/x", "DELETE, GET, OPTIONS, PATCH"),
                          ("/api/alice/tasks/1", "DELETE, GET, OPTIONS, PATCH"),
                          ("/api/alice/tasks", "GET, OPTIONS"), ("/api/alice/chat", "OPTIONS, POST")]:
        response = client.options(path)
        assert response.status_code == 204 and response.headers["allow"] == methods, path
