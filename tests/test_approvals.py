"""Tool approvals: a tool that needs the user's yes ends the run ``awaiting_approval``; the
decision (SSE route or WebSocket frame) starts the continuation from the stored agent state."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import ServerProcess, auth, count_rows, token_for
from tests.fake_openai import FakeOpenAI, TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN
from tests.sse import parse_frames, text_of


def chat(client, message: str, conversation_id: str | None = None, user: str = "alice") -> list[dict]:
    response = client.post(f"/api/{user}/chat/stream", json={"message": message, "conversation_id": conversation_id},
                           headers=auth(user))
    assert response.status_code == 200, response.text
    return parse_frames(response.content)


def decide(client, run_id: str, call_id: str, approve: bool, reason: str | None = None, user: str = "alice"):
    return client.post(f"/api/{user}/runs/{run_id}/approvals", headers=auth(user),
                       json={"call_id": call_id, "approve": approve, "reason": reason})


def titles(client, user: str = "alice") -> list[str]:
    return [task["title"] for task in client.get(f"/api/{user}/tasks", headers=auth(user)).json()]


def ask_to_delete(client) -> tuple[str, str, dict]:
    """Alice has "buy milk" and asks to delete it: the run waits for her decision."""
    first = chat(client, "add buy milk")
    conversation = first[0]["conversation_id"]
    events = chat(client, "delete buy milk", conversation)
    request = next(e for e in events if e["type"] == "approval_request")
    assert request["name"] == "delete_task" and request["arguments"]["title"] == "buy milk"
    assert events[-1]["type"] == "done" and events[-1]["status"] == "awaiting_approval"
    assert not any(e["type"] == "tool_result" for e in events)
    return conversation, events[0]["run_id"], request


def test_approve_runs_the_tool_and_the_model_goes_on(client):
    conversation, run_id, request = ask_to_delete(client)
    assert titles(client) == ["buy milk"]  # nothing deleted yet
    response = decide(client, run_id, request["call_id"], True)
    assert response.status_code == 200, response.text
    events = parse_frames(response.content)
    assert events[0]["type"] == "start" and events[0]["run_id"] != run_id
    assert events[0]["conversation_id"] == conversation
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["call_id"] == request["call_id"] and result["name"] == "delete_task"
    assert events[-1]["status"] == "completed" and "Deleted" in text_of(events)
    assert titles(client) == []


def test_reject_does_not_run_the_tool_and_the_model_is_told_why(client):
    _, run_id, request = ask_to_delete(client)
    events = parse_frames(decide(client, run_id, request["call_id"], False, "wrong task").content)
    result = next(e for e in events if e["type"] == "tool_result")
    assert "declined" in str(result["result"]) and "wrong task" in str(result["result"])
    assert "wrong task" in text_of(events)  # the offline model says what the tool told it
    assert events[-1]["status"] == "completed"
    assert titles(client) == ["buy milk"]


def test_deciding_twice_is_409_and_changes_nothing(client, settings):
    _, run_id, request = ask_to_delete(client)
    decide(client, run_id, request["call_id"], False)
    runs = count_rows(settings.database, "run")
    again = decide(client, run_id, request["call_id"], True)
    assert again.status_code == 409 and again.json()["extra"]["code"] == "already_decided"
    assert count_rows(settings.database, "run") == runs and titles(client) == ["buy milk"]


@pytest.mark.parametrize("body, status", [
    ({"call_id": "nope", "approve": True}, 404),
    ({"call_id": 7, "approve": True}, 400),
    ({"approve": True}, 400),
    ({"call_id": "x", "approve": "yes"}, 400),
    ({"call_id": "a\u0000b", "approve": True}, 400),
])
def test_a_malformed_or_unknown_decision_is_refused(client, settings, body, status):
    _, run_id, _ = ask_to_delete(client)
    response = client.post(f"/api/alice/runs/{run_id}/approvals", headers=auth("alice"), json=body)
    assert response.status_code == status, response.text
    assert count_rows(settings.database, "approval", "decision IS NULL") == 1


def test_another_user_cannot_decide(client, settings):
    _, run_id, request = ask_to_delete(client)
    assert decide(client, run_id, request["call_id"], True, user="bob").status_code == 404
    assert count_rows(settings.database, "approval", "decision IS NULL") == 1
    assert decide(client, "not-a-run", request["call_id"], True).status_code == 404


def test_a_new_message_rejects_the_pending_call_and_starts_normally(client):
    conversation, run_id, request = ask_to_delete(client)
    events = chat(client, "list my tasks", conversation)
    assert events[-1]["status"] == "completed" and "buy milk" in text_of(events)
    refused = decide(client, run_id, request["call_id"], True)
    assert refused.status_code == 409
    assert titles(client) == ["buy milk"]
    # The model was told: the declined call is in the conversation's history.
    messages = client.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"]
    declined = [m for m in messages if m["role"] == "tool" and m["tool"]["name"] == "delete_task"]
    assert len(declined) == 1 and "declined" in str(declined[0]["tool"]["result"])


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_two_pending_calls_in_one_turn_are_each_decided_then_it_goes_on(settings, api):
    """A real model's parallel calls (a local fake provider): the continuation starts once both
    calls are decided, and runs only the approved one."""
    fake = FakeOpenAI().start()
    try:
        fake.script(*TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN)
        settings = msgspec.structs.replace(settings, openai_api_key="sk-test", openai_base_url=fake.base_url,
                                           chat_model="fake-model", openai_api="responses" if api == "responses" else None)
        with TestClient(create_app(settings), timeout=30) as client:
            conversation = chat(client, "add buy milk")[0]["conversation_id"]
            chat(client, "add walk the dog", conversation)
            events = chat(client, "delete both", conversation)
            requests = [e for e in events if e["type"] == "approval_request"]
            assert len(requests) == 2 and events[-1]["status"] == "awaiting_approval"
            run_id = events[0]["run_id"]
            first = decide(client, run_id, requests[0]["call_id"], True)
            assert first.status_code == 202 and first.json() == {"waiting_for": [requests[1]["call_id"]]}
            assert titles(client) == ["buy milk", "walk the dog"]
            events = parse_frames(decide(client, run_id, requests[1]["call_id"], False, "keep the dog").content)
            results = {e["call_id"]: e["result"] for e in events if e["type"] == "tool_result"}
            assert "deleted" in results[requests[0]["call_id"]]
            assert "keep the dog" in str(results[requests[1]["call_id"]])
            assert events[-1]["status"] == "completed" and text_of(events) == "Deleted what you allowed."
            assert titles(client) == ["walk the dog"]
            # The model saw both outcomes in the continuation's request.
            assert "keep the dog" in str(fake.requests[-1].body)
    finally:
        fake.stop()


@pytest.mark.parametrize("approve", [True, False])
def test_approval_over_the_websocket(client, approve):
    with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        ws.send_json({"type": "chat", "message": "add buy milk"})
        conversation = ws.receive_json()["conversation_id"]  # the start event
        while ws.receive_json()["type"] != "done":
            pass
        ws.send_json({"type": "chat", "message": "delete buy milk", "conversation_id": conversation})
        events = []
        while (event := ws.receive_json())["type"] != "done":
            events.append(event)
        assert event["status"] == "awaiting_approval"
        request = next(e for e in events if e["type"] == "approval_request")
        ws.send_json({"type": "approval", "run_id": request["run_id"], "call_id": request["call_id"],
                      "approve": approve, "reason": "keep it"})
        continuation = []
        while (event := ws.receive_json())["type"] != "done":
            continuation.append(event)
        result = next(e for e in continuation if e["type"] == "tool_result")
        assert event["status"] == "completed" and ("deleted" in result["result"]) is approve
        ws.send_json({"type": "approval", "run_id": request["run_id"], "call_id": request["call_id"], "approve": True})
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "already_decided"
    assert titles(client) == ([] if approve else ["buy milk"])


def test_a_restart_between_the_request_and_the_decision_resumes_the_stored_state(settings):
    """kill -9 after the run asked; another process answers the decision from the database."""
    first = ServerProcess(settings, TOOL_APPROVAL="delete_task")
    try:
        with httpx.Client(base_url=first.url, headers=auth("alice"), timeout=30) as http:
            added = parse_frames(http.post("/api/alice/chat/stream", json={"message": "add buy milk"}).content)
            conversation = added[0]["conversation_id"]
            events = parse_frames(http.post("/api/alice/chat/stream", json={
                "message": "delete buy milk", "conversation_id": conversation}).content)
    finally:
        first.stop()
    request = next(e for e in events if e["type"] == "approval_request")
    restarted = ServerProcess(settings, TOOL_APPROVAL="delete_task")
    try:
        with httpx.Client(base_url=restarted.url, headers=auth("alice"), timeout=30) as http:
            response = http.post(f"/api/alice/runs/{events[0]['run_id']}/approvals",
                                 json={"call_id": request["call_id"], "approve": True})
            continuation = parse_frames(response.content)
            tasks = http.get("/api/alice/tasks").json()
    finally:
        restarted.stop()
    assert continuation[-1]["status"] == "completed" and "Deleted" in text_of(continuation)
    assert tasks == []
