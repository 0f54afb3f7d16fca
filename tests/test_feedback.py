"""Feedback on replies: ``PUT /api/{user_id}/messages/{id}/feedback``, the export ``GET /feedback``,
ChatKit's ``items.feedback`` (checked with ChatKit's own types), and the metric, on both engines,
over real HTTP against the real app."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import httpx
import pytest
from pydantic import TypeAdapter

from domain.feedback import MAX_COMMENT_CHARS
from tests.conftest import (
    LiveServer,
    auth,
    count_rows,
    start_live_server,
    write_before_migration,
)
from tests.test_chatkit import ITEM_PAGE, create, parse_stream, request, strictly_valid

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # chatkit's widget module warns on import
    from chatkit.types import ChatKitReq

CHATKIT_REQUEST = TypeAdapter(ChatKitReq)


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
    return http.get(f"/api/{user}/conversations/{conversation_id}", headers=auth(user)).json()["messages"]


def replies(http: httpx.Client, conversation_id: str, user: str = "alice") -> list[dict]:
    return [m for m in messages(http, conversation_id, user) if m["role"] == "assistant"]


def rate(http: httpx.Client, message_id: str, body: dict, user: str = "alice") -> httpx.Response:
    return http.put(f"/api/{user}/messages/{message_id}/feedback", json=body, headers=auth(user))


def export(http: httpx.Client, user: str = "alice", **params: object) -> dict:
    response = http.get(f"/api/{user}/feedback", params=params, headers=auth(user))
    assert response.status_code == 200, response.text
    return response.json()


def counted(http: httpx.Client) -> dict[str, float]:
    """chat_feedback_total by rating, as Prometheus scrapes it."""
    text = http.get("/metrics").text
    return {rating: float(value) for rating, value in re.findall(r'^chat_feedback_total\{rating="(\w+)"\} (\S+)$',
                                                                 text, re.M)}


def test_a_reply_is_rated_rated_again_listed_and_counted(http):
    conversation = say(http, "add buy milk")
    reply = replies(http, conversation)[0]

    first = rate(http, reply["id"], {"rating": "up"})
    assert first.status_code == 200, first.text
    assert first.json() | {"created_at": "", "updated_at": ""} == {
        "message_id": reply["id"], "conversation_id": conversation, "rating": "up", "comment": None,
        "content": reply["content"], "created_at": "", "updated_at": "",
    }
    assert replies(http, conversation)[0]["feedback"] == "up"  # shown with the message

    second = rate(http, reply["id"], {"rating": "down", "comment": "It should have asked which milk."}).json()
    assert second["rating"] == "down" and second["comment"] == "It should have asked which milk."
    assert second["created_at"] == first.json()["created_at"] and second["updated_at"] > second["created_at"]
    assert replies(http, conversation)[0]["feedback"] == "down"
    assert export(http) == {"feedback": [second], "has_more": False, "next_cursor": export(http)["next_cursor"]}
    assert counted(http) == {"up": 1.0, "down": 1.0}  # every rating given, a change of mind too

    # Sent without a comment, the comment goes (a PUT says it all).
    assert rate(http, reply["id"], {"rating": "down"}).json()["comment"] is None


def test_bad_ratings_other_messages_and_other_users_are_refused_and_change_nothing(http, settings):
    conversation = say(http, "add buy milk")
    users_message, reply = messages(http, conversation)[0], replies(http, conversation)[0]
    assert rate(http, reply["id"], {"rating": "up", "comment": "x" * MAX_COMMENT_CHARS}).status_code == 200
    before = export(http)

    for message_id, body, user, status, code in [
        (users_message["id"], {"rating": "up"}, "alice", 409, "not_a_reply"),
        (reply["id"], {"rating": "up"}, "bob", 404, "not_found"),  # bob rating alice's reply as himself
        ("3f1c1a52-0000-4000-8000-000000000000", {"rating": "up"}, "alice", 404, "not_found"),
        ("not-an-id", {"rating": "up"}, "alice", 404, "not_found"),
        (reply["id"], {"rating": "meh"}, "alice", 400, "invalid_rating"),
        (reply["id"], {"rating": "UP"}, "alice", 400, "invalid_rating"),
        (reply["id"], {"rating": "down", "comment": "x" * (MAX_COMMENT_CHARS + 1)}, "alice", 400, "comment_too_long"),
        (reply["id"], {"rating": "down", "comment": "nul \x00 here"}, "alice", 400, None),
    ]:
        response = rate(http, message_id, body, user)
        assert response.status_code == status, (body, response.text)
        if code:
            assert response.json()["extra"] == {"code": code}
    for body in ({}, {"rating": 1}, {"rating": "up", "stars": 5}, [], "up"):
        response = http.put(f"/api/alice/messages/{reply['id']}/feedback", json=body, headers=auth("alice"))
        assert response.status_code == 400, (body, response.text)
    assert http.put(f"/api/alice/messages/{reply['id']}/feedback", json={"rating": "up"},
                    headers=auth("bob")).status_code == 403
    assert export(http) == before
    assert count_rows(settings.database, "feedback") == 1
    assert export(http, user="bob")["feedback"] == []


def test_the_export_reads_on_from_its_cursor(http):
    conversation = say(http, "add one")
    for task in ("add two", "add three"):
        say(http, task, conversation)
    first, second, third = (reply["id"] for reply in replies(http, conversation))
    for message_id in (first, second, third):
        assert rate(http, message_id, {"rating": "up"}).status_code == 200

    page = export(http, limit=2)
    assert [f["message_id"] for f in page["feedback"]] == [first, second] and page["has_more"]
    rest = export(http, limit=2, cursor=page["next_cursor"])
    assert [f["message_id"] for f in rest["feedback"]] == [third] and not rest["has_more"]
    kept = rest["next_cursor"]
    assert export(http, cursor=kept) == {"feedback": [], "has_more": False, "next_cursor": kept}

    # Later: a change of mind comes again, after what was read.
    rate(http, first, {"rating": "down", "comment": "on second thought"})
    later = export(http, cursor=kept)
    assert [(f["message_id"], f["rating"]) for f in later["feedback"]] == [(first, "down")]

    for cursor in ("abc", "1.2.3", "-1.5", "1." + "9" * 12, "9" * 30 + ".1", "١.١"):
        response = http.get("/api/alice/feedback", params={"cursor": cursor}, headers=auth("alice"))
        assert response.status_code == 400, (cursor, response.text)
        assert response.json()["extra"] == {"code": "invalid_cursor"}


def test_chatkit_feedback_is_the_same_feedback(http):
    def chatkit(body: dict, user: str = "alice") -> httpx.Response:
        CHATKIT_REQUEST.validate_python(body, strict=True)  # what the ChatKit client sends
        return http.post("/chatkit", json=body, headers=auth(user))

    events = parse_stream(chatkit(create("add buy milk")).content)
    thread = events[0]["thread"]["id"]
    items = strictly_valid(ITEM_PAGE, chatkit(request("items.list", thread_id=thread)).content)["data"]
    reply = next(item for item in items if item["type"] == "assistant_message")
    users_item = next(item for item in items if item["type"] == "user_message")

    answer = chatkit(request("items.feedback", thread_id=thread, item_ids=[reply["id"], users_item["id"], "wf_x"],
                             kind="positive"))
    assert answer.status_code == 200 and answer.json() == {}
    assert [(f["message_id"], f["rating"], f["comment"]) for f in export(http)["feedback"]] == [
        (reply["id"], "up", None)
    ]  # only the reply: ChatKit offers thumbs on replies, the rest is ignored as before

    # A comment given here is kept when ChatKit changes the rating (it has no comment to give).
    rate(http, reply["id"], {"rating": "up", "comment": "Exactly right"})
    chatkit(request("items.feedback", thread_id=thread, item_ids=[reply["id"]], kind="negative"))
    assert [(f["rating"], f["comment"]) for f in export(http)["feedback"]] == [("down", "Exactly right")]
    assert replies(http, thread)[0]["feedback"] == "down"
    assert counted(http) == {"up": 2.0, "down": 1.0}

    refused = chatkit(request("items.feedback", thread_id=thread, item_ids=[reply["id"]], kind="positive"), "bob")
    assert refused.status_code == 404
    assert export(http)["feedback"][0]["rating"] == "down"


def test_deleting_the_conversation_deletes_its_feedback(http, settings):
    conversation = say(http, "add buy milk")
    rate(http, replies(http, conversation)[0]["id"], {"rating": "up", "comment": "fine"})
    assert http.delete(f"/api/alice/conversations/{conversation}", headers=auth("alice")).status_code == 204
    assert export(http)["feedback"] == [] and count_rows(settings.database, "feedback") == 0


def test_ratings_chatkit_stored_before_are_moved_into_the_feedback(settings):
    before_feedback = "2026-12-10T00:33:00:000000"
    conversation = "6c0c5d48-1111-4a4a-9a9a-000000000002"
    rows = [
        "INSERT INTO conversation (id, user_id, title, created_at, updated_at) VALUES "
        f"('{conversation}', 'alice', 'Old', '2020-01-01 00:00:00+00:00', '2020-01-01 00:00:00+00:00')",
        *(
            "INSERT INTO message (id, conversation, run_id, role, content, tool, status, feedback, created_at) VALUES "
            f"('6c0c5d48-2222-4a4a-9a9a-00000000001{n}', '{conversation}', NULL, '{role}', '{text}', NULL, "
            f"'completed', '{kind}', '2020-01-01 00:00:0{n}+00:00')"
            for n, (role, text, kind) in enumerate([
                ("user", "hello", "positive"), ("assistant", "Hi there.", "negative"),
            ])
        ),
    ]

    write_before_migration(settings.database, before_feedback, rows)
    live = start_live_server(settings)
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            assert [(f["message_id"], f["rating"], f["content"]) for f in export(http)["feedback"]] == [
                ("6c0c5d48-2222-4a4a-9a9a-000000000011", "down", "Hi there.")
            ]
            assert [m["feedback"] if "feedback" in m else None for m in messages(http, conversation)] == [None, "down"]
    finally:
        live.stop()


def test_the_openapi_document_types_feedback(http):
    schema = http.get("/schema/openapi.json").json()
    components = schema["components"]["schemas"]
    put = schema["paths"]["/api/{user_id}/messages/{message_id}/feedback"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/FeedbackBody"}
    assert set(components["FeedbackBody"]["properties"]) == {"rating", "comment"}
    assert put["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeedbackView"}
    listing = schema["paths"]["/api/{user_id}/feedback"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeedbackPage"}
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "cursor"}
