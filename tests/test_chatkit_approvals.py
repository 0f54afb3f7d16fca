"""Tool approvals in ChatKit: the call waits as a card with Approve / Reject buttons, a click
comes back as ``threads.custom_action``, the card shows the decision and the reply goes on.

Every event and JSON answer passes the ``openai-chatkit`` types in strict mode (the referee of
tests/test_chatkit.py), and the card must be ChatKit's own ``Card`` widget, not the catch-all
dynamic one that accepts anything.
"""

from __future__ import annotations

import json
import time
import warnings

import httpx
import msgspec
import pytest
from litestar.testing import TestClient
from pydantic import TypeAdapter

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from chatkit.types import ThreadItem, WidgetItem
    from chatkit.widgets import Button, Card, Row, Text

from app.main import create_app
from domain.approvals import describe
from tests.conftest import auth, count_rows, fetch_rows, start_live_server
from tests.fake_openai import FakeOpenAI, TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN
from tests.test_chatkit import (
    ITEM_PAGE,
    add,
    chatkit,
    check_sequence,
    create,
    get_thread,
    items_of,
    parse_stream,
    reply_text,
    request,
    stream_events,
    strictly_valid,
)

ITEM = TypeAdapter(ThreadItem)


def titles(client, user: str = "alice") -> list[str]:
    return [task["title"] for task in client.get(f"/api/{user}/tasks", headers=auth(user)).json()]


def card_of(item: dict) -> Card:
    """The item as ChatKit's own Card widget, or the test fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # chatkit's note on its named widget classes
        model = ITEM.validate_json(json.dumps(item), strict=True)
    assert isinstance(model, WidgetItem) and isinstance(model.widget, Card), item
    return model.widget


def texts(item: dict) -> list[str]:
    return [child.value for child in card_of(item).children if isinstance(child, Text)]


def buttons(item: dict) -> dict[str, dict]:
    """The card's buttons by label, each with the action a click sends back."""
    rows = [child for child in card_of(item).children if isinstance(child, Row)]
    found = [b for row in rows for b in row.children or [] if isinstance(b, Button)]
    return {b.label: {"type": b.onClickAction.type, "payload": b.onClickAction.payload} for b in found}


def click(client, thread_id: str, card: dict, label: str, user: str = "alice"):
    action = buttons(card)[label]
    return chatkit(client, request("threads.custom_action", thread_id=thread_id, item_id=card["id"], action=action),
                   user)


def ask_to_delete(client) -> tuple[str, dict, list[dict]]:
    """Alice has "buy milk" and asks to delete it: the reply stops at a card asking her."""
    first = stream_events(chatkit(client, create("add buy milk")))
    thread_id = first[0]["thread"]["id"]
    events = stream_events(chatkit(client, add(thread_id, "delete buy milk")))
    check_sequence(events, created=False, seen_ids={i["id"] for i in items_of(first)})
    [card] = [i for i in items_of(events) if i["type"] == "widget"]
    return thread_id, card, events


def test_the_call_waits_as_a_card_and_its_workflow_stays_open(client):
    thread_id, card, events = ask_to_delete(client)
    assert texts(card) == ["Delete the task “buy milk”?"]
    assert set(buttons(card)) == {"Approve", "Reject"}
    assert buttons(card)["Approve"]["payload"]["approve"] is True
    assert card["id"] == f"approval_{buttons(card)['Approve']['payload']['call_id']}"
    assert card["thread_id"] == thread_id
    # The call is neither done nor failed: its workflow says it waits, and the stream ends cleanly.
    [workflow] = items_of(events, "thread.item.added")
    assert workflow["type"] == "workflow"
    assert workflow["id"] not in {i["id"] for i in items_of(events)}
    waiting = [e["update"]["task"] for e in events if e["type"] == "thread.item.updated"
               and e["item_id"] == workflow["id"]]
    assert [(t["status_indicator"], t["title"]) for t in waiting] == [("none", "delete_task waits for your approval")]
    assert "error" not in [e["type"] for e in events]
    assert titles(client) == ["buy milk"]


def test_approve_updates_the_card_deletes_the_task_and_streams_the_reply(client, settings):
    thread_id, card, asked = ask_to_delete(client)
    call_id = buttons(card)["Approve"]["payload"]["call_id"]
    events = stream_events(click(client, thread_id, card, "Approve"))
    check_sequence(events, created=False, echoed=False)
    assert [e["type"] for e in events[:2]] == ["stream_options", "thread.item.replaced"]
    decided = events[1]["item"]
    assert decided["id"] == card["id"] and texts(decided) == ["Delete the task “buy milk”", "Approved"]
    assert buttons(decided) == {}
    # The workflow the first stream left open is completed under the same id.
    workflow = next(i for i in items_of(events) if i["type"] == "workflow")
    assert workflow["id"] == f"wf_{call_id}"
    assert workflow["workflow"]["tasks"][0]["status_indicator"] == "complete"
    assert "deleted" in workflow["workflow"]["tasks"][0]["content"]
    assert reply_text(events) == "Deleted “buy milk”." and items_of(events)[-1]["type"] == "assistant_message"
    assert titles(client) == []
    assert count_rows(settings.database, "approval", "decision = 'approved'") == 1

    # A reload shows the card as decided, where it was asked, then the call and the reply.
    stored = get_thread(client, thread_id)["items"]["data"]
    assert [i["type"] for i in stored] == ["user_message", "workflow", "assistant_message",
                                           "user_message", "widget", "workflow", "assistant_message"]
    assert stored[4]["id"] == card["id"] and stored[4]["widget"] == decided["widget"]
    assert [i["id"] for i in stored[5:]] == [i["id"] for i in items_of(events)]
    assert asked[0]["item"]["id"] == stored[3]["id"]  # the user message echoed while asking


def test_reject_updates_the_card_and_leaves_the_task(client):
    thread_id, card, _ = ask_to_delete(client)
    events = stream_events(click(client, thread_id, card, "Reject"))
    check_sequence(events, created=False, echoed=False)
    decided = events[1]["item"]
    assert texts(decided) == ["Delete the task “buy milk”", "Declined"]
    workflow = next(i for i in items_of(events) if i["type"] == "workflow")
    assert "declined" in workflow["workflow"]["tasks"][0]["content"]
    assert reply_text(events) and titles(client) == ["buy milk"]
    assert get_thread(client, thread_id)["items"]["data"][4]["widget"] == decided["widget"]


def test_a_reload_shows_the_waiting_card_with_its_buttons_on_every_page(client):
    thread_id, card, _ = ask_to_delete(client)
    stored = get_thread(client, thread_id)["items"]["data"]
    assert [i["type"] for i in stored] == ["user_message", "workflow", "assistant_message", "user_message", "widget"]
    assert stored[-1]["id"] == card["id"] and stored[-1]["widget"] == card["widget"]
    assert buttons(stored[-1]) == buttons(card)

    def walk(order: str, limit: int) -> list[str]:
        seen, after = [], None
        while True:
            params = {"thread_id": thread_id, "limit": limit, "order": order, **({"after": after} if after else {})}
            page = strictly_valid(ITEM_PAGE, chatkit(client, request("items.list", **params)).content)
            seen += [i["id"] for i in page["data"]]
            if not page["has_more"]:
                return seen
            after = page["after"]

    everything = [i["id"] for i in stored]
    for limit in (1, 2, 3):
        assert walk("asc", limit) == everything
        assert walk("desc", limit) == everything[::-1]


def test_a_new_message_declines_the_card(client):
    thread_id, card, _ = ask_to_delete(client)
    events = stream_events(chatkit(client, add(thread_id, "list my tasks")))
    check_sequence(events, created=False)
    # The card loses its buttons at once, in the new message's stream, and on every read.
    [replaced] = [e["item"] for e in events if e["type"] == "thread.item.replaced"]
    assert replaced["id"] == card["id"]
    assert texts(replaced) == ["Delete the task “buy milk”", "Declined: you sent a new message instead"]
    assert "buy milk" in reply_text(events)
    stored = {i["id"]: i for i in get_thread(client, thread_id)["items"]["data"]}
    assert stored[card["id"]]["widget"] == replaced["widget"]
    # A later message has nothing more to decline.
    later = stream_events(chatkit(client, add(thread_id, "hello")))
    assert "thread.item.replaced" not in [e["type"] for e in later]
    events = stream_events(click(client, thread_id, card, "Approve"))
    assert events == [{"type": "error", "code": "custom", "allow_retry": False,
                       "message": "This call was already rejected."}]
    assert titles(client) == ["buy milk"]


def test_answering_the_asking_message_again_drops_its_card(client):
    """Retry drops what followed the message: the old card with it; the new reply asks anew."""
    thread_id, card, events = ask_to_delete(client)
    message_id = events[0]["item"]["id"]
    retried = stream_events(chatkit(client, request("threads.retry_after_item", thread_id=thread_id,
                                                    item_id=message_id)))
    [new_card] = [i for i in items_of(retried) if i["type"] == "widget"]
    assert new_card["id"] != card["id"] and texts(new_card) == texts(card)
    stored = get_thread(client, thread_id)["items"]["data"]
    assert [i["id"] for i in stored if i["type"] == "widget"] == [new_card["id"]]
    assert stream_events(click(client, thread_id, card, "Approve"))[0]["message"] == "No such approval in this thread."
    events = stream_events(click(client, thread_id, new_card, "Approve"))
    assert reply_text(events) == "Deleted “buy milk”." and titles(client) == []


def test_deciding_twice_is_an_error_event_and_changes_nothing(client, settings):
    thread_id, card, _ = ask_to_delete(client)
    stream_events(click(client, thread_id, card, "Reject"))
    runs, messages = count_rows(settings.database, "run"), count_rows(settings.database, "message")
    events = stream_events(click(client, thread_id, card, "Approve"))
    assert events == [{"type": "error", "code": "custom", "allow_retry": False,
                       "message": "This call was already rejected."}]
    assert count_rows(settings.database, "run") == runs and count_rows(settings.database, "message") == messages
    assert titles(client) == ["buy milk"]


def test_another_user_cannot_decide(client, settings):
    thread_id, card, _ = ask_to_delete(client)
    # Bob clicking on Alice's thread, and on his own thread with Alice's call.
    assert stream_events(click(client, thread_id, card, "Approve", user="bob"))[0]["message"] == "No such thread."
    bobs = stream_events(chatkit(client, create("hello"), user="bob"))[0]["thread"]["id"]
    foreign = request("threads.custom_action", thread_id=bobs, action=buttons(card)["Approve"])
    assert stream_events(chatkit(client, foreign, user="bob"))[0]["message"] == "No such approval in this thread."
    assert count_rows(settings.database, "approval", "decision IS NULL") == 1
    assert titles(client) == ["buy milk"]


@pytest.mark.parametrize(("action", "item_id", "message"), [
    ({"type": "x", "payload": {}}, None, "This server has no action 'x'."),
    ({"type": "approval"}, None, "The approval action is malformed: Expected `object`, got `null`."),
    ({"type": "approval", "payload": {"run_id": "r", "call_id": "c"}}, None,
     "The approval action is malformed: Object missing required field `approve`."),
    ({"type": "approval", "payload": {"run_id": "r", "call_id": "c", "approve": "yes"}}, None,
     "The approval action is malformed: Expected `bool`, got `str` - at `$.approve`."),
    ({"type": "approval", "payload": {"run_id": "r", "call_id": "c", "approve": True}}, None,
     "No such approval in this thread."),
    ("approve", "user message", "No such approval in this thread."),
])
def test_unknown_or_malformed_actions_are_error_events(client, settings, action, item_id, message):
    thread_id, card, events = ask_to_delete(client)
    if action == "approve":  # the right action sent for another item of the thread
        action = buttons(card)["Approve"]
        item_id = events[0]["item"]["id"]
    params = {"thread_id": thread_id, "action": action, **({"item_id": item_id} if item_id else {})}
    answered = stream_events(chatkit(client, request("threads.custom_action", **params)))
    assert answered == [{"type": "error", "code": "custom", "allow_retry": False, "message": message}]
    assert count_rows(settings.database, "approval", "decision IS NULL") == 1
    assert titles(client) == ["buy milk"]


def test_an_action_without_a_type_is_a_400(client):
    response = chatkit(client, request("threads.custom_action", thread_id="t", action={"payload": {}}))
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid ChatKit request: Object missing required field `type` (at params.action)."


def test_two_cards_in_one_reply_the_first_click_only_updates_its_card(settings):
    """A real model's parallel calls (a local fake provider): the reply goes on at the last click."""
    fake = FakeOpenAI().start()
    try:
        fake.script(*TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN)
        settings = msgspec.structs.replace(settings, openai_api_key="sk-test", openai_base_url=fake.base_url,
                                           chat_model="fake-model")
        with TestClient(create_app(settings), timeout=30) as client:
            thread_id = stream_events(chatkit(client, create("add buy milk")))[0]["thread"]["id"]
            stream_events(chatkit(client, add(thread_id, "add walk the dog")))
            asked = stream_events(chatkit(client, add(thread_id, "delete both")))
            first, second = [i for i in items_of(asked) if i["type"] == "widget"]
            assert texts(first) == ["Delete the task “buy milk”?"]
            assert texts(second) == ["Delete the task “walk the dog”?"]

            events = stream_events(click(client, thread_id, first, "Approve"))
            assert [e["type"] for e in events] == ["stream_options", "thread.item.replaced"]
            assert texts(events[1]["item"]) == ["Delete the task “buy milk”", "Approved"]
            assert titles(client) == ["buy milk", "walk the dog"]
            waiting = {i["id"]: i for i in get_thread(client, thread_id)["items"]["data"]}
            assert texts(waiting[first["id"]])[-1] == "Approved" and buttons(waiting[second["id"]])

            events = stream_events(click(client, thread_id, second, "Reject"))
            check_sequence(events, created=False, echoed=False)
            assert texts(events[1]["item"]) == ["Delete the task “walk the dog”", "Declined"]
            assert reply_text(events) == "Deleted what you allowed."
            assert titles(client) == ["walk the dog"]
    finally:
        fake.stop()


def test_closing_the_continuation_stream_is_stop(settings):
    """The reply a click streams is a reply like any other: leaving it stops it."""
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=50))
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            thread_id = parse_stream(http.post("/chatkit", json=create("add buy milk")).content)[0]["thread"]["id"]
            asked = parse_stream(http.post("/chatkit", json=add(thread_id, "delete buy milk")).content)
            [card] = [i for i in items_of(asked) if i["type"] == "widget"]
            action = request("threads.custom_action", thread_id=thread_id, item_id=card["id"],
                             action=buttons(card)["Approve"])
            received, buffer = [], b""
            with http.stream("POST", "/chatkit", json=action) as response:
                for chunk in response.iter_bytes():
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n\n")
                    received += parse_stream(b"".join(frame + b"\n\n" for frame in complete))
                    if reply_text(received):
                        break  # Stop: the client closes the connection mid-reply
            assert received[1]["type"] == "thread.item.replaced"
            for _ in range(200):
                statuses = [s for (s,) in fetch_rows(settings.database, "SELECT status FROM run ORDER BY created_at")]
                if statuses[-1] == "cancelled":
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"the continuation was not stopped by the disconnect: {statuses}")
            assert statuses == ["completed", "awaiting_approval", "cancelled"]
    finally:
        live.stop()


@pytest.mark.parametrize(("name", "arguments", "words"), [
    ("delete_task", {"title": "buy milk"}, "Delete the task “buy milk”"),
    ("delete_task", {"task_id": 2}, "Delete task 2"),
    ("delete_task", {"number": 1}, "Delete task number 1 of your list"),
    ("add_task", {"title": "call mom"}, "Add the task “call mom”"),
    ("complete_task", {"title": "call mom", "completed": False}, "Mark the task “call mom” as not done"),
    ("update_task", {"task_id": 3, "new_title": "call dad"}, "Rename task 3 to “call dad”"),
    ("list_tasks", {"status": "pending"}, "List your pending tasks"),
    ("unknown_tool", {"x": [1]}, "Run unknown_tool(x=[1])"),
])
def test_a_card_says_the_call_in_words(name, arguments, words):
    assert describe(name, arguments) == words
