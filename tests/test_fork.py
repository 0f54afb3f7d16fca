"""Forking a conversation: ``POST /api/{user_id}/conversations/{id}/fork``, on both engines, over
real HTTP against the real app."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer, auth, count_rows


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        yield client


def say(http: httpx.Client, message: str, conversation_id: str | None = None, user: str = "alice") -> str:
    response = http.post(f"/api/{user}/chat", json={"message": message, "conversation_id": conversation_id},
                         headers=auth(user))
    assert response.status_code == 200, response.text
    return response.json()["conversation_id"]


def messages(http: httpx.Client, conversation_id: str, user: str = "alice") -> list[dict]:
    response = http.get(f"/api/{user}/conversations/{conversation_id}", headers=auth(user))
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def said(messages: list[dict]) -> list[tuple]:
    """What a message is, apart from its id and run."""
    return [(m["role"], m["content"], m["status"], m["created_at"], m.get("tool")) for m in messages]


def test_a_fork_copies_exactly_the_messages_up_to_the_one_chosen(http, live_server):
    original = say(http, "add buy milk")
    say(http, "add walk the dog", original)
    say(http, "list my tasks", original)
    before = messages(http, original)
    reply = [m for m in before if m["role"] == "assistant"][1]  # the answer to "add walk the dog"
    cut = before.index(reply) + 1

    response = http.post(f"/api/alice/conversations/{original}/fork", json={"message_id": reply["id"]},
                         headers=auth("alice"))
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["title"] == "add buy milk (fork)" and fork["forked_from"] == original
    assert fork["forked_at"] == reply["id"] and fork["messages"] == cut
    copied = messages(http, fork["id"])
    assert said(copied) == said(before[:cut])  # the tool calls too, in order, with their times
    assert not {m["id"] for m in copied} & {m["id"] for m in before}  # new ids
    assert messages(http, original) == before  # the original is untouched

    listed = http.get("/api/alice/conversations", headers=auth("alice")).json()
    assert fork["id"] in [c["id"] for c in listed]

    # The fork goes on by itself from there; the model is given its history (the task list
    # is the user's, so "list" answers the same in both).
    say(http, "add feed the cat", fork["id"])
    assert said(messages(http, fork["id"]))[:cut] == said(before[:cut])
    assert len(messages(http, fork["id"])) == cut + 3
    assert messages(http, original) == before


def test_without_a_message_the_whole_conversation_is_copied(http):
    original = say(http, "add buy milk")
    say(http, "add walk the dog", original)
    for body in ({}, None):
        response = http.post(f"/api/alice/conversations/{original}/fork", headers=auth("alice"),
                             **({"json": body} if body is not None else {}))
        assert response.status_code == 201, response.text
        assert said(messages(http, response.json()["id"])) == said(messages(http, original))


def test_another_users_conversation_or_message_is_not_found(http, settings):
    alices = say(http, "add buy milk")
    bobs = say(http, "add walk the dog", user="bob")
    bobs_message = messages(http, bobs, user="bob")[0]["id"]
    conversations = count_rows(settings.database, "conversation")

    refused = [
        http.post(f"/api/bob/conversations/{alices}/fork", headers=auth("bob")),  # not his
        http.post(f"/api/alice/conversations/{alices}/fork", json={"message_id": bobs_message},
                  headers=auth("alice")),  # not of this conversation
        http.post(f"/api/alice/conversations/{alices}/fork", json={"message_id": "not-an-id"}, headers=auth("alice")),
        http.post("/api/alice/conversations/not-an-id/fork", headers=auth("alice")),
    ]
    for response in refused:
        assert response.status_code == 404, response.text
        assert response.json()["extra"] == {"code": "not_found"}
    assert http.post(f"/api/alice/conversations/{alices}/fork", headers=auth("bob")).status_code == 403
    bad = http.post(f"/api/alice/conversations/{alices}/fork", json={"message_id": 7, "x": 1}, headers=auth("alice"))
    assert bad.status_code == 400
    assert count_rows(settings.database, "conversation") == conversations  # nothing was made


def test_the_openapi_document_types_the_fork(http):
    schema = http.get("/schema/openapi.json").json()
    components = schema["components"]["schemas"]
    operation = schema["paths"]["/api/{user_id}/conversations/{conversation_id}/fork"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/ForkRequest"} in body["oneOf"]  # or no body at all
    assert set(components["ForkRequest"]["properties"]) == {"message_id"}
    answer = operation["responses"]["201"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ForkedConversation"}
    assert set(components["ForkedConversation"]["properties"]) == {
        "id", "title", "created_at", "updated_at", "forked_from", "forked_at", "messages"}
    assert "404" in operation["responses"]
