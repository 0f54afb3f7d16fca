"""A stock ChatKit client talks to ``POST /chatkit``.

The ``openai-chatkit`` package is the referee: every event and every JSON answer must pass
its pydantic types in strict mode and lose no key in a round trip, and every stream must
follow the sequence rules of the protocol notes (section 7).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import warnings
from datetime import datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from pydantic import TypeAdapter

with warnings.catch_warnings():
    # chatkit's widget module warns about its own classes on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from chatkit.types import Page, Thread, ThreadItem, ThreadStreamEvent

from domain.offline_intents import HELP
from domain.offline_model import OfflineModel
from tests.conftest import auth, count_rows, fetch_rows, start_live_server

EVENT = TypeAdapter(ThreadStreamEvent)
THREAD = TypeAdapter(Thread)
THREAD_PAGE = TypeAdapter(Page[Thread])
ITEM_PAGE = TypeAdapter(Page[ThreadItem])
HIDDEN_TYPES = {"hidden_context_item", "sdk_hidden_context"}
_FRAME = re.compile(rb"data: (\{.*?\})\n\n", re.S)


# -- the referee ------------------------------------------------------------------------

def _lost_keys(raw: Any, dumped: Any, path: str = "$") -> list[str]:
    """Keys of the raw JSON the typed model dropped: fields the client would never see."""
    if isinstance(raw, dict):
        lost = [f"{path}.{k}" for k in raw if not isinstance(dumped, dict) or k not in dumped]
        return lost + [
            key for k, v in raw.items() if isinstance(dumped, dict) and k in dumped
            for key in _lost_keys(v, dumped[k], f"{path}.{k}")
        ]
    if isinstance(raw, list) and isinstance(dumped, list):
        return [key for n, (r, d) in enumerate(zip(raw, dumped)) for key in _lost_keys(r, d, f"{path}[{n}]")]
    return []


def _no_nulls_and_utc_times(raw: Any, path: str = "$") -> None:
    if isinstance(raw, dict):
        for key, value in raw.items():
            assert value is not None, f"null field {path}.{key} must be omitted"
            if key == "created_at":
                at = datetime.fromisoformat(value)
                assert at.utcoffset() == timedelta(0), f"{path}.created_at has no UTC offset: {value}"
            _no_nulls_and_utc_times(value, f"{path}.{key}")
    elif isinstance(raw, list):
        for n, value in enumerate(raw):
            _no_nulls_and_utc_times(value, f"{path}[{n}]")


def strictly_valid(adapter: TypeAdapter, text: bytes | str) -> dict:
    model = adapter.validate_json(text, strict=True)
    raw = json.loads(text)
    assert not _lost_keys(raw, adapter.dump_python(model, mode="json", by_alias=True)), raw
    _no_nulls_and_utc_times(raw)
    return raw


def stream_events(response: httpx.Response) -> list[dict]:
    """The body must be nothing but ``data: <json>\\n\\n`` frames, each a valid event."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    return parse_stream(response.content)


def parse_stream(body: bytes) -> list[dict]:
    events, position = [], 0
    for match in _FRAME.finditer(body):
        assert match.start() == position, f"unexpected bytes at {position}: {body[position:match.start()]!r}"
        position = match.end()
        events.append(strictly_valid(EVENT, match.group(1)))
    assert position == len(body), f"trailing bytes: {body[position:]!r}"
    return events


_ASSISTANT_UPDATES = {
    "assistant_message.content_part.added", "assistant_message.content_part.text_delta",
    "assistant_message.content_part.done", "assistant_message.content_part.annotation_added",
}
_WORKFLOW_UPDATES = {"workflow.task.added", "workflow.task.updated"}


def check_sequence(events: list[dict], *, created: bool, echoed: bool = True, seen_ids: set[str] = frozenset()) -> None:
    """Section 7's rules the types cannot express."""
    types = [e["type"] for e in events]
    if "error" in types:
        assert types.index("error") == len(types) - 1, "the stream must end after an error"
    if created:
        assert types[:2] == ["thread.created", "thread.item.done"]
        assert events[1]["item"]["type"] == "user_message"
    elif echoed:
        assert types[0] == "thread.item.done" and events[0]["item"]["type"] == "user_message"
    assert types.count("stream_options") == 1
    options = types.index("stream_options")
    assert events[options]["stream_options"] == {"allow_cancel": True}
    assistant_output = [n for n, e in enumerate(events) if e["type"].startswith("thread.item.")
                        and e.get("item", {}).get("type") != "user_message"]
    assert all(n > options for n in assistant_output), "assistant output before stream_options"

    items: dict[str, dict] = {}  # added, not done yet
    done: set[str] = set(seen_ids)
    parts: dict[str, list[str]] = {}
    for event in events:
        kind = event["type"]
        item = event.get("item", {})
        assert item.get("type") not in HIDDEN_TYPES, "a hidden item was sent"
        if kind == "thread.item.added":
            assert item["id"] not in items and item["id"] not in done, f"id {item['id']} reused"
            items[item["id"]] = item
            parts[item["id"]] = []
            if item["type"] == "workflow":
                items[item["id"]] = {**item, "tasks": len(item["workflow"]["tasks"])}
        elif kind == "thread.item.updated":
            item_id, update = event["item_id"], event["update"]
            assert item_id in items, f"update of {item_id}, which was never added or is done"
            if update["type"] in _ASSISTANT_UPDATES:
                assert items[item_id]["type"] == "assistant_message"
                if update["type"] == "assistant_message.content_part.added":
                    assert update["content_index"] == len(parts[item_id]), "content_index not contiguous"
                    parts[item_id].append(update["content"]["text"])
                elif update["type"] == "assistant_message.content_part.text_delta":
                    assert update["content_index"] == len(parts[item_id]) - 1
                    parts[item_id][update["content_index"]] += update["delta"]
                elif update["type"] == "assistant_message.content_part.done":
                    assert update["content"]["text"] == parts[item_id][update["content_index"]]
            else:
                assert update["type"] in _WORKFLOW_UPDATES and items[item_id]["type"] == "workflow"
                assert update["task_index"] <= items[item_id]["tasks"]
        elif kind == "thread.item.done":
            assert item["id"] not in done, f"id {item['id']} done twice"
            done.add(item["id"])
            added = items.pop(item["id"], None)
            if added is not None:
                assert added["type"] == item["type"]
                assert added["created_at"] == item["created_at"]
            if item["type"] == "assistant_message" and added is not None:
                assert [c["text"] for c in item["content"]] == parts[item["id"]], "done text != the deltas"


def _input(text: str, **extra: Any) -> dict:
    return {"content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}, **extra}


def create(text: str) -> dict:
    return {"type": "threads.create", "params": {"input": _input(text)}}


def add(thread_id: str, text: str) -> dict:
    return {"type": "threads.add_user_message", "params": {"thread_id": thread_id, "input": _input(text)}}


def request(kind: str, /, **params: Any) -> dict:
    return {"type": kind, "params": params}


def chatkit(client, body: dict, user: str = "alice") -> httpx.Response:
    return client.post("/chatkit", json=body, headers=auth(user))


def items_of(events: list[dict], kind: str = "thread.item.done") -> list[dict]:
    return [e["item"] for e in events if e["type"] == kind]


def reply_text(events: list[dict]) -> str:
    return "".join(e["update"]["delta"] for e in events if e["type"] == "thread.item.updated"
                   and e["update"]["type"] == "assistant_message.content_part.text_delta")


def get_thread(client, thread_id: str, user: str = "alice") -> dict:
    response = chatkit(client, request("threads.get_by_id", thread_id=thread_id), user)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return strictly_valid(THREAD, response.content)


def rows(settings, sql: str, *args) -> list[tuple]:
    return fetch_rows(settings.database, sql, *args)


def messages_of(settings, thread_id: str) -> list[tuple]:
    return rows(settings, "SELECT CAST(id AS TEXT), role, status, content, feedback FROM message "
                          "WHERE CAST(conversation AS TEXT) = $1 ORDER BY created_at", thread_id)


# -- streaming --------------------------------------------------------------------------

def test_create_streams_the_thread_the_message_a_workflow_and_the_reply(client, settings):
    events = stream_events(chatkit(client, create("add buy milk")))
    check_sequence(events, created=True)

    types = [e["type"] for e in events]
    thread = events[0]["thread"]
    assert thread["items"] == {"data": [], "has_more": False} and thread["metadata"] == {}
    assert types[2:4] == ["stream_options", "thread.updated"]
    assert events[3]["thread"]["title"] == "add buy milk"
    user_message = events[1]["item"]
    assert user_message["content"] == [{"type": "input_text", "text": "add buy milk"}]

    workflow_added = items_of(events, "thread.item.added")[0]
    assert workflow_added["type"] == "workflow"
    loading = workflow_added["workflow"]["tasks"]
    assert [(t["type"], t["status_indicator"], t["title"]) for t in loading] == [("custom", "loading", "Calling add_task")]
    assert json.loads(loading[0]["content"]) == {"title": "buy milk"}
    workflow_done = next(i for i in items_of(events) if i["type"] == "workflow")
    [task] = workflow_done["workflow"]["tasks"]
    assert task["status_indicator"] == "complete"
    assert json.loads(task["content"])["added"]["title"] == "buy milk"

    assistant = items_of(events)[-1]
    assert assistant["type"] == "assistant_message"
    assert "buy milk" in assistant["content"][0]["text"] == reply_text(events)
    assert types[-1] == "thread.item.done"

    # The same conversation, read over the plain API: same ids, same text, the task exists.
    detail = client.get(f"/api/alice/conversations/{thread['id']}", headers=auth("alice")).json()
    assert detail["title"] == "add buy milk"
    assert [(m["role"], m["id"]) for m in detail["messages"] if m["role"] != "tool"] == [
        ("user", user_message["id"]), ("assistant", assistant["id"])
    ]
    assert [t["title"] for t in client.get("/api/alice/tasks", headers=auth("alice")).json()] == ["buy milk"]

    stored = get_thread(client, thread["id"])
    assert stored["title"] == "add buy milk"
    assert [(i["type"], i["id"]) for i in stored["items"]["data"]] == [
        ("user_message", user_message["id"]), ("workflow", workflow_done["id"]), ("assistant_message", assistant["id"])
    ]
    assert stored["items"]["data"][1]["workflow"] == workflow_done["workflow"]
    assert stored["items"]["data"][2]["content"] == assistant["content"]


def test_add_user_message_continues_the_thread_with_its_history(client):
    first = stream_events(chatkit(client, create("add walk the dog")))
    thread_id = first[0]["thread"]["id"]
    seen = {i["id"] for i in items_of(first)}

    second = stream_events(chatkit(client, add(thread_id, "list my tasks")))
    check_sequence(second, created=False, seen_ids=seen)
    assert "thread.created" not in [e["type"] for e in second]
    assert "thread.updated" not in [e["type"] for e in second]
    assert "walk the dog" in reply_text(second)
    assert all(i["thread_id"] == thread_id for i in items_of(second))

    stored = get_thread(client, thread_id)
    assert [i["type"] for i in stored["items"]["data"]] == ["user_message", "workflow", "assistant_message"] * 2
    assert [i["id"] for i in stored["items"]["data"]] == [i["id"] for i in items_of(first) + items_of(second)]


def test_a_conversation_from_the_plain_api_is_a_thread(client):
    body = client.post("/api/alice/chat/stream", json={"message": "add water plants"}, headers=auth("alice")).content
    conversation_id = json.loads(body.split(b"\n\n")[0].removeprefix(b"data: "))["conversation_id"]

    stored = get_thread(client, conversation_id)
    assert [i["type"] for i in stored["items"]["data"]] == ["user_message", "workflow", "assistant_message"]
    listed = strictly_valid(THREAD_PAGE, chatkit(client, request("threads.list")).content)
    assert [t["id"] for t in listed["data"]] == [conversation_id]

    events = stream_events(chatkit(client, add(conversation_id, "list my tasks")))
    check_sequence(events, created=False)
    assert "water plants" in reply_text(events)


def test_retry_after_item_answers_the_message_again_and_drops_what_followed(client, settings):
    first = stream_events(chatkit(client, create("add buy milk")))
    thread_id = first[0]["thread"]["id"]
    second = stream_events(chatkit(client, add(thread_id, "list my tasks")))
    user_message, old_reply = items_of(second)[0], items_of(second)[-1]

    retried = stream_events(chatkit(client, request("threads.retry_after_item", thread_id=thread_id,
                                                    item_id=user_message["id"])))
    check_sequence(retried, created=False, echoed=False, seen_ids={i["id"] for i in items_of(first)})
    assert retried[0]["type"] == "stream_options"
    assert "buy milk" in reply_text(retried)
    new_reply = items_of(retried)[-1]
    assert new_reply["type"] == "assistant_message" and new_reply["id"] != old_reply["id"]

    stored = [(i["type"], i["id"]) for i in get_thread(client, thread_id)["items"]["data"]]
    assert stored[:4] == [(i["type"], i["id"]) for i in items_of(first) + [user_message]]
    assert stored[4:] == [(i["type"], i["id"]) for i in items_of(retried)]
    assert old_reply["id"] not in {m[0] for m in messages_of(settings, thread_id)}
    assert [m[1] for m in messages_of(settings, thread_id)].count("user") == 2

    # The message kept its id, so it can be retried again; an assistant item cannot.
    again = stream_events(chatkit(client, request("threads.retry_after_item", thread_id=thread_id,
                                                  item_id=user_message["id"])))
    check_sequence(again, created=False, echoed=False)
    refused = stream_events(chatkit(client, request("threads.retry_after_item", thread_id=thread_id,
                                                    item_id=items_of(again)[-1]["id"])))
    assert [e["type"] for e in refused] == ["error"]
    assert refused[0]["message"] == "Only a user message can be answered again."


def test_a_failure_mid_stream_is_an_error_event_that_ends_the_stream(client, monkeypatch, settings):
    original = OfflineModel.stream_response

    async def breaks_after_three_deltas(self, *args, **kwargs):
        deltas = 0
        async for event in original(self, *args, **kwargs):
            yield event
            if event.type == "response.output_text.delta":
                deltas += 1
                if deltas == 3:
                    await asyncio.sleep(0.1)  # the SDK drops events still queued when a model raises
                    raise RuntimeError("the model fell over")

    monkeypatch.setattr(OfflineModel, "stream_response", breaks_after_three_deltas)
    events = stream_events(chatkit(client, create("hello")))
    check_sequence(events, created=True)
    assert events[-1] == {"type": "error", "code": "custom", "allow_retry": True,
                          "message": "Something went wrong while writing the reply."}
    assert len(reply_text(events).split()) == 3
    assert "the model fell over" not in json.dumps(events)


def test_an_unexpected_server_failure_is_an_error_event_not_a_broken_stream(client, monkeypatch, settings):
    from transports import chatkit as chatkit_transport

    def broken(*args):
        raise RuntimeError("a bug in the translation")

    monkeypatch.setattr(chatkit_transport, "user_item", broken)
    events = stream_events(chatkit(client, create("add buy milk")))
    assert events == [{"type": "error", "code": "custom", "allow_retry": True,
                       "message": "Something went wrong on the server. Please try again."}]
    for _ in range(100):  # the run it had started is stopped, not left running
        if rows(settings, "SELECT status FROM run") == [("cancelled",)]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"run not cancelled: {rows(settings, 'SELECT status FROM run')}")


def test_stop_by_disconnect_cancels_the_run_and_keeps_the_partial_reply(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=50))
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            received, buffer = [], b""
            with http.stream("POST", "/chatkit", json=create("hi")) as response:
                for chunk in response.iter_bytes():
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n\n")
                    received += parse_stream(b"".join(frame + b"\n\n" for frame in complete))
                    if len(reply_text(received)) > 20:
                        break  # Stop: the client closes the connection mid-reply
            thread_id = received[0]["thread"]["id"]
            check_sequence(received, created=True)
            assistant_id = items_of(received, "thread.item.added")[0]["id"]

            for _ in range(200):
                if rows(settings, "SELECT status FROM run WHERE CAST(conversation AS TEXT) = $1",
                        thread_id) == [("cancelled",)]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the run was not cancelled by the disconnect")
            messages = messages_of(settings, thread_id)
            assert [(m[1], m[2]) for m in messages] == [
                ("user", "completed"), ("assistant", "cancelled"), ("hidden", "completed")
            ]
            partial = messages[1][3]
            assert messages[1][0] == assistant_id
            assert partial.startswith(reply_text(received)) and len(partial) < len("Hello! " + HELP)

            thread = strictly_valid(THREAD, http.post("/chatkit", json=request("threads.get_by_id",
                                                                                thread_id=thread_id)).content)
            assert [(i["type"], i["id"]) for i in thread["items"]["data"]] == [
                ("user_message", received[1]["item"]["id"]), ("assistant_message", assistant_id)
            ]
            assert thread["items"]["data"][1]["content"][0]["text"] == partial
            listed = strictly_valid(ITEM_PAGE, http.post("/chatkit", json=request(
                "items.list", thread_id=thread_id, order="asc")).content)
            assert len(listed["data"]) == 2

            # The model is told about the Stop on the next turn; the client never sees the note.
            after = parse_stream(http.post("/chatkit", json=add(thread_id, "add buy eggs")).content)
            check_sequence(after, created=False)
            assert "buy eggs" in reply_text(after)
    finally:
        live.stop()


def test_unknown_or_foreign_threads_and_bad_messages_are_error_events(client, settings):
    thread_id = stream_events(chatkit(client, create("add buy milk")))[0]["thread"]["id"]
    before = count_rows(settings.database, "message")
    cases = [
        (add("4b0fd5f4-94cf-4e42-93f4-6a2c4a2b6a39", "hello"), "No such conversation."),
        (add("not-an-id", "hello"), "No such conversation."),
        (add(thread_id, "   "), "The message is empty."),
        ({"type": "threads.create", "params": {"input": _input("hi", attachments=["atc_1"])}},
         "Attachments are not supported by this server."),
        (request("threads.retry_after_item", thread_id="nope", item_id="nope"), "No such conversation."),
    ]
    for body, message in cases:
        events = stream_events(chatkit(client, body))
        assert events == [{"type": "error", "code": "custom", "allow_retry": False, "message": message}], body
    events = stream_events(chatkit(client, add(thread_id, "list my tasks"), user="bob"))
    assert [e["type"] for e in events] == ["error"]
    assert count_rows(settings.database, "message") == before


def test_client_tools_answer_a_not_supported_error_event(client):
    body = request("threads.add_client_tool_output", thread_id="t", result={"ok": True})
    events = stream_events(chatkit(client, body))
    assert events == [{"type": "error", "code": "custom", "allow_retry": False,
                       "message": "threads.add_client_tool_output is not supported by this server."}]


# -- JSON requests ----------------------------------------------------------------------

def test_items_list_pages_with_cursors_in_both_orders(client):
    thread_id = stream_events(chatkit(client, create("add buy milk")))[0]["thread"]["id"]
    for text in ("add walk the dog", "list my tasks"):
        stream_events(chatkit(client, add(thread_id, text)))
    everything = [i["id"] for i in get_thread(client, thread_id)["items"]["data"]]
    assert len(everything) == 9

    def walk(order: str, limit: int) -> list[str]:
        seen, after = [], None
        while True:
            params = {"thread_id": thread_id, "limit": limit, "order": order, **({"after": after} if after else {})}
            page = strictly_valid(ITEM_PAGE, chatkit(client, request("items.list", **params)).content)
            seen += [i["id"] for i in page["data"]]
            assert len(page["data"]) <= limit
            if not page["has_more"]:
                assert "after" not in page
                return seen
            after = page["after"]

    assert walk("asc", 4) == everything
    assert walk("desc", 2) == everything[::-1]
    default = strictly_valid(ITEM_PAGE, chatkit(client, request("items.list", thread_id=thread_id)).content)
    assert [i["id"] for i in default["data"]] == everything[::-1] and default["has_more"] is False

    # A cursor that names nothing is 404, as every id that names nothing (the document allows any string).
    bad = chatkit(client, request("items.list", thread_id=thread_id, after="nonsense"))
    assert bad.status_code == 404 and "cursor" in bad.json()["detail"] and bad.json()["code"] == "not_found"
    assert chatkit(client, request("items.list", thread_id=thread_id), user="bob").status_code == 404


def test_get_by_id_gives_the_first_twenty_items_ascending(client):
    thread_id = stream_events(chatkit(client, create("hello")))[0]["thread"]["id"]
    for n in range(10):
        stream_events(chatkit(client, add(thread_id, f"hello {n}")))
    thread = get_thread(client, thread_id)
    items = thread["items"]
    assert len(items["data"]) == 20 and items["has_more"] is True
    times = [i["created_at"] for i in items["data"]]
    assert times == sorted(times)
    assert items["data"][0]["content"][0]["text"] == "hello"
    rest = strictly_valid(ITEM_PAGE, chatkit(client, request("items.list", thread_id=thread_id, order="asc",
                                                             after=items["after"])).content)
    assert len(rest["data"]) == 2 and rest["has_more"] is False


def test_threads_list_pages_the_users_threads(client):
    ids = [stream_events(chatkit(client, create(f"add task {n}")))[0]["thread"]["id"] for n in range(3)]
    stream_events(chatkit(client, create("add bob's task"), user="bob"))

    first = strictly_valid(THREAD_PAGE, chatkit(client, request("threads.list", limit=2)).content)
    assert [t["id"] for t in first["data"]] == ids[:0:-1] and first["has_more"] is True
    assert all(t["items"] == {"data": [], "has_more": False} for t in first["data"])
    assert first["data"][0]["title"] == "add task 2"
    second = strictly_valid(THREAD_PAGE, chatkit(client, request("threads.list", limit=2, after=first["after"])).content)
    assert [t["id"] for t in second["data"]] == ids[:1] and second["has_more"] is False
    ascending = strictly_valid(THREAD_PAGE, chatkit(client, request("threads.list", order="asc")).content)
    assert [t["id"] for t in ascending["data"]] == ids


def test_update_renames_the_thread_everywhere(client):
    thread_id = stream_events(chatkit(client, create("add buy milk")))[0]["thread"]["id"]
    response = chatkit(client, request("threads.update", thread_id=thread_id, title="Groceries"))
    assert response.status_code == 200
    thread = strictly_valid(THREAD, response.content)
    assert thread["title"] == "Groceries" and thread["items"] == {"data": [], "has_more": False}
    assert get_thread(client, thread_id)["title"] == "Groceries"
    assert client.get(f"/api/alice/conversations/{thread_id}", headers=auth("alice")).json()["title"] == "Groceries"

    assert chatkit(client, request("threads.update", thread_id=thread_id, title="x" * 201)).status_code == 400
    assert chatkit(client, request("threads.update", thread_id=thread_id, title="Mine"), user="bob").status_code == 404
    assert get_thread(client, thread_id)["title"] == "Groceries"


def test_a_thread_cannot_be_renamed_to_a_blank_title(client):
    """Issue 33: ``threads.update`` with an empty (or blank) title emptied the thread's title."""
    thread_id = stream_events(chatkit(client, create("add buy milk")))[0]["thread"]["id"]
    for title in ("", "   "):
        refused = chatkit(client, request("threads.update", thread_id=thread_id, title=title))
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "invalid_input" and refused.json()["extra"][0]["key"] == "title"
    assert get_thread(client, thread_id)["title"] == "add buy milk"


def test_delete_removes_the_thread_and_its_messages(client, settings):
    thread_id = stream_events(chatkit(client, create("add buy milk")))[0]["thread"]["id"]
    assert chatkit(client, request("threads.delete", thread_id=thread_id), user="bob").status_code == 404
    response = chatkit(client, request("threads.delete", thread_id=thread_id))
    assert response.status_code == 200 and response.json() == {}
    assert chatkit(client, request("threads.get_by_id", thread_id=thread_id)).status_code == 404
    assert count_rows(settings.database, "conversation") == 0
    assert count_rows(settings.database, "message") == 0
    assert chatkit(client, request("threads.delete", thread_id=thread_id)).status_code == 404


def test_feedback_is_stored_on_the_rated_items(client, settings):
    events = stream_events(chatkit(client, create("add buy milk")))
    thread_id, reply = events[0]["thread"]["id"], items_of(events)[-1]
    response = chatkit(client, request("items.feedback", thread_id=thread_id, item_ids=[reply["id"]], kind="positive"))
    assert response.status_code == 200 and response.json() == {}
    # Stored as the plain API's rating (tests/test_feedback.py has the rest).
    assert [(m[1], m[4]) for m in messages_of(settings, thread_id)] == [
        ("user", None), ("tool", None), ("assistant", "up")
    ]
    chatkit(client, request("items.feedback", thread_id=thread_id, item_ids=[reply["id"], "wf_x"], kind="negative"))
    assert messages_of(settings, thread_id)[-1][4] == "down"
    assert chatkit(client, request("items.feedback", thread_id=thread_id, item_ids=[reply["id"]],
                                   kind="positive"), user="bob").status_code == 404
    assert chatkit(client, request("items.feedback", thread_id=thread_id, item_ids=[], kind="meh")).status_code == 400


# -- bad requests -----------------------------------------------------------------------

@pytest.mark.parametrize(("body", "detail"), [
    (b"not json", "The body is not JSON"),
    (b"[]", "Invalid ChatKit request: Expected `object`, got `array`."),
    (b"{}", "Invalid ChatKit request: Object missing required field `type`."),
    (b'{"type": "threads.explode", "params": {}}', "Unknown ChatKit request type 'threads.explode'."),
    (b'{"type": "threads.get_by_id"}', "Invalid ChatKit request: Object missing required field `params`."),
    (b'{"type": "threads.get_by_id", "params": {"thread_id": 7}}',
     "Invalid ChatKit request: Expected `str`, got `int` (at params.thread_id)."),
    (b'{"type": "threads.create", "params": {"input": {"content": "hi"}}}',
     "Invalid ChatKit request: Expected `array`, got `str` (at params.input.content)."),
    (b'{"type": "items.list", "params": {"thread_id": "t", "order": "sideways"}}',
     "Invalid ChatKit request: Invalid enum value 'sideways' (at params.order)."),
    (b'{"type": "attachments.create", "params": {"name": "a.png", "size": 1, "mime_type": "image/png"}}',
     "attachments.create is not supported: this server does not accept attachments."),
    (b'{"type": "attachments.delete", "params": {"attachment_id": "atc_1"}}',
     "attachments.delete is not supported: this server does not accept attachments."),
    (b'{"type": "input.transcribe", "params": {"audio_base64": "", "mime_type": "audio/webm"}}',
     "input.transcribe is not supported: this server has no speech-to-text."),
])
def test_bad_envelopes_answer_400_with_a_clear_message(client, settings, body, detail):
    response = client.post("/chatkit", content=body, headers={**auth("alice"), "Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()
    assert error["status_code"] == 400 and error["detail"].startswith(detail)
    assert error["extra"][0]["message"] == error["detail"]
    assert count_rows(settings.database, "conversation") == 0


def test_chatkit_needs_a_bearer_token(client):
    assert client.post("/chatkit", json=create("hi")).status_code == 401
    bad = client.post("/chatkit", json=create("hi"), headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
