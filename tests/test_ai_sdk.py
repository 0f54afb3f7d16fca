"""The Vercel AI SDK's own client (``ai`` on npm, pinned in tests/node) as the referee: its
``DefaultChatTransport`` validates every chunk against the SDK's schema."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from app.main import create_app
from tests.conftest import auth, count_rows, start_live_server, token_for, wait_until_no_run_runs
from tests.fake_openai import FakeOpenAI, TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN

NODE_DIR = Path(__file__).parent / "node"


def require_node_clients() -> None:
    """The SDK's own client runs under Node: `make test` installs it where npm exists; CI
    (which sets REQUIRE_BROWSER) fails instead of skipping."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "ai").is_dir():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("the Node clients are not installed: npm ci --prefix tests/node")
        pytest.skip("needs Node.js and the pinned AI SDK client (`npm ci --prefix tests/node`), "
                    "which `make test` installs when npm is on the machine")


def node_client(server, user: str, mode: str, chat_id: str, text: str = "") -> dict:
    require_node_clients()
    done = subprocess.run(
        ["node", str(NODE_DIR / "ai_sdk_sse.mjs"), server.url, token_for(user), mode, chat_id, text],
        capture_output=True, text=True, timeout=60, cwd=NODE_DIR,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def server(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5))
    yield live
    live.stop()


def test_use_chat_sends_and_reads_a_reply_with_a_tool_call(server, settings):
    result = node_client(server, "alice", "send", "chat-a1b2c3d4e5f6", "add buy milk")
    assert result["errors"] == []
    message = result["message"]
    assert message["role"] == "assistant"
    kinds = [part["type"] for part in message["parts"]]
    assert "tool-add_task" in kinds and "text" in kinds
    tool = next(p for p in message["parts"] if p["type"] == "tool-add_task")
    assert tool["state"] == "output-available" and tool["input"] == {"title": "buy milk"}
    text = "".join(p["text"] for p in message["parts"] if p["type"] == "text")
    assert "buy milk" in text
    assert message["metadata"]["usage"]["outputTokens"] > 0
    # The chat id is the client's: the same id continues the same conversation.
    again = node_client(server, "alice", "send", "chat-a1b2c3d4e5f6", "list my tasks")
    assert "buy milk" in "".join(p["text"] for p in again["message"]["parts"] if p["type"] == "text")
    assert count_rows(settings.database, "conversation") == 1


def test_chat_ids_are_per_user(server, settings):
    node_client(server, "alice", "send", "same-id", "add alice's secret")
    bob = node_client(server, "bob", "send", "same-id", "list my tasks")
    assert "secret" not in json.dumps(bob["message"])
    assert count_rows(settings.database, "conversation") == 2


def test_regenerate_answers_the_last_message_again(server, settings):
    node_client(server, "alice", "send", "chat-regen", "hello")
    again = node_client(server, "alice", "regenerate", "chat-regen")
    assert again["errors"] == [] and again["message"]["role"] == "assistant"
    assert count_rows(settings.database, "message", "role = 'user'") == 1
    assert count_rows(settings.database, "message", "role = 'assistant'") == 1


def test_resume_with_nothing_running_is_204_to_the_sdk(server):
    node_client(server, "alice", "send", "chat-idle", "hello")
    assert node_client(server, "alice", "resume", "chat-idle") == {"none": True}
    assert node_client(server, "alice", "resume", "never-seen") == {"none": True}


def test_stop_aborts_the_fetch_and_cancels_the_run(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=40))
    try:
        result = node_client(live, "alice", "abort", "chat-stop", "add " + " ".join(f"w{n}" for n in range(30)))
        wait_until_no_run_runs(settings.database)
    finally:
        live.stop()
    assert result["chunks"][0]["type"] == "start" and result["chunks"][-1] == {"aborted": "AbortError"}
    assert count_rows(settings.database, "run", "status = 'cancelled'") == 1


def test_a_resume_replays_the_running_reply_then_follows_it(settings):
    # Long enough (seconds) that the reply still runs once Node has started on a busy machine.
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=60))
    try:
        body = {"id": "chat-resume", "messages": [{"id": "u1", "role": "user", "parts": [
            {"type": "text", "text": "add " + " ".join(f"w{n}" for n in range(60))}]}], "onDisconnect": "continue"}
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/ai-sdk/chat", json=body) as response:
                assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
                for line in response.iter_lines():
                    if '"text-delta"' in line:
                        break  # the page reloads mid-reply
        resumed = node_client(live, "alice", "resume", "chat-resume")
    finally:
        live.stop()
    assert resumed["errors"] == []
    text = "".join(p["text"] for p in resumed["message"]["parts"] if p["type"] == "text")
    assert "w59" in text


@pytest.mark.parametrize("body, status", [
    (b'{"id": "c", "messages": "no"}', 400),
    (b'{"id": "", "messages": []}', 400),
    (b'{"id": "c", "messages": []}', 400),  # no user message
    (b'{"id": "c", "messages": [], "trigger": "regenerate-message"}', 404),  # nothing to regenerate
])
def test_bad_requests_answer_4xx_and_write_nothing(client, settings, body, status):
    response = client.post("/api/alice/ai-sdk/chat", content=body,
                           headers={**auth("alice"), "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert count_rows(settings.database, "run") == 0


def test_the_same_message_id_in_two_chats_is_two_sends(client, settings):
    """useChat's message ids are unique within a chat: a retry is the same id in the same chat."""
    def send(chat: str) -> str:
        body = {"id": chat, "messages": [{"id": "msg-1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
        return client.post("/api/alice/ai-sdk/chat", json=body, headers=auth("alice")).text

    first, other, again = send("chat-one"), send("chat-two"), send("chat-one")
    assert count_rows(settings.database, "run") == 2
    assert again == first and other != first


# -- tool approvals, answered the SDK's way ----------------------------------------------------

def approval_client(server, kind: str, chat_id: str, decision: str, reason: str = "") -> dict:
    """The SDK's own Chat: "add buy milk", "delete buy milk" (which waits for approval), then
    addToolApprovalResponse and the request sendAutomaticallyWhen makes of it."""
    require_node_clients()
    args = [server.url, token_for("alice"), kind, chat_id, decision, *([reason] if reason else [])]
    done = subprocess.run(["node", str(NODE_DIR / "ai_sdk_approval.mjs"), *args],
                          capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def approving_server(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5, tool_approval="delete_task"))
    yield live
    live.stop()


def assert_asked_for_approval(result: dict) -> dict:
    asked = result["asked"]
    [part] = [p for p in asked["parts"] if p["type"] == "tool-delete_task"]
    assert part["state"] == "approval-requested" and part["input"] == {"title": "buy milk"}
    run_id = asked["metadata"]["runId"]
    assert part["approval"]["id"] == f"{run_id}:{part['toolCallId']}"
    return part


def the_reply(result: dict) -> dict:
    """The assistant message that asked: the continuation went on in it, no second one."""
    assistants = [m for m in result["messages"] if m["role"] == "assistant"]
    assert len(assistants) == 2 and assistants[-1]["id"] == result["asked"]["id"]
    return assistants[-1]


@pytest.mark.parametrize("kind", ["sse", "ws"])
def test_approving_in_the_sdk_deletes_the_task_and_the_reply_goes_on_in_the_same_message(
        approving_server, settings, kind):
    result = approval_client(approving_server, kind, f"chat-approve-{kind}", "approve")
    assert result["errors"] == [] and result["status"] == "ready"
    asked = assert_asked_for_approval(result)
    reply = the_reply(result)
    [part] = [p for p in reply["parts"] if p["type"] == "tool-delete_task"]
    assert part["state"] == "output-available" and part["toolCallId"] == asked["toolCallId"]
    assert part["approval"]["approved"] is True
    assert "Deleted" in "".join(p["text"] for p in reply["parts"] if p["type"] == "text")
    assert count_rows(settings.database, "task") == 0


@pytest.mark.parametrize("kind", ["sse", "ws"])
def test_rejecting_in_the_sdk_keeps_the_task_and_the_model_is_told_why(approving_server, settings, kind):
    result = approval_client(approving_server, kind, f"chat-reject-{kind}", "reject", "wrong task")
    assert result["errors"] == [] and result["status"] == "ready"
    assert_asked_for_approval(result)
    reply = the_reply(result)
    [part] = [p for p in reply["parts"] if p["type"] == "tool-delete_task"]
    assert part["state"] == "output-denied" and part["approval"] == {**part["approval"], "approved": False,
                                                                      "reason": "wrong task"}
    assert "wrong task" in "".join(p["text"] for p in reply["parts"] if p["type"] == "text")
    assert count_rows(settings.database, "task") == 1


def ui_chunks(body: str) -> list[dict]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


def answer(asked: dict, approved: bool, reason: str | None = None, **changes) -> dict:
    """The assistant message as addToolApprovalResponse leaves it: its tool part answered."""
    approval = {"id": asked["approvalId"], "approved": approved, **({"reason": reason} if reason else {})}
    part = {"type": "tool-delete_task", "toolCallId": asked["toolCallId"], "state": "approval-responded",
            "input": {"title": "buy milk"}, "approval": approval, **changes}
    return {"id": asked["messageId"], "role": "assistant", "parts": [{"type": "step-start"}, part]}


def ask_to_delete_over_http(client, chat_id: str) -> tuple[dict, list[dict]]:
    """"add buy milk", then "delete buy milk": the reply asks for approval. Returns what it
    asked (message id, approval id, call id) and the chat's messages so far."""
    said = [{"id": f"u{n}", "role": "user", "parts": [{"type": "text", "text": text}]}
            for n, text in enumerate(["add buy milk", "delete buy milk"])]
    for n in (1, 2):
        response = client.post("/api/alice/ai-sdk/chat", json={"id": chat_id, "messages": said[:n]},
                               headers=auth("alice"))
        assert response.status_code == 200, response.text
    chunks = ui_chunks(response.text)
    [request] = [c for c in chunks if c["type"] == "tool-approval-request"]
    assert chunks[-1] == {"type": "finish", "finishReason": "tool-calls", "messageMetadata": chunks[-1]["messageMetadata"]}
    assert not any(c["type"] == "tool-output-error" for c in chunks)
    return {**request, "messageId": chunks[0]["messageId"]}, said


@pytest.fixture
def approving_client(settings):
    with TestClient(create_app(msgspec.structs.replace(settings, tool_approval="delete_task")), timeout=30) as client:
        yield client


@pytest.mark.parametrize("user, change, status", [
    ("alice", {"approval": {"id": "nope:{call}", "approved": True}}, 404),  # unknown approval id
    ("alice", {"approval": {"id": "{run}:call_other", "approved": True}, "toolCallId": "call_other"}, 404),
    ("alice", {"approval": {"id": "no-colon", "approved": True}}, 404),
    ("bob", {}, 404),  # another user's
    ("alice", {"approval": {"id": "x:y"}}, 400),  # answered without an answer
    ("alice", {"toolCallId": "call_other"}, 400),  # the id names another call than its part
    ("alice", {"approval": {"id": 7, "approved": True}}, 400),
])
def test_a_bad_approval_answer_is_4xx_and_changes_nothing(approving_client, settings, user, change, status):
    asked, said = ask_to_delete_over_http(approving_client, f"chat-bad-{user}")
    runs = count_rows(settings.database, "run")
    if isinstance(approval_id := change.get("approval", {}).get("id"), str):
        run_id, call_id = asked["approvalId"].split(":")
        change = {**change, "approval": {**change["approval"], "id": approval_id.format(run=run_id, call=call_id)}}
    body = {"id": f"chat-bad-{user}", "messages": [*said, answer(asked, True, **change)], "messageId": asked["messageId"]}
    response = approving_client.post(f"/api/{user}/ai-sdk/chat", json=body, headers=auth(user))
    assert response.status_code == status, response.text
    assert count_rows(settings.database, "approval", "decision IS NULL") == 1
    assert count_rows(settings.database, "run") == runs and count_rows(settings.database, "task") == 1


def test_an_answer_sent_again_after_the_continuation_is_409_already_decided(approving_server, settings):
    result = approval_client(approving_server, "sse", "chat-twice", "approve")
    sent = result["bodies"][-1]  # the SDK's own request carrying the answer
    assert sent["messageId"] == result["asked"]["id"] and sent["messages"][-1]["parts"][1]["state"] == "approval-responded"
    runs = count_rows(settings.database, "run")
    again = httpx.post(f"{approving_server.url}/api/alice/ai-sdk/chat", json=sent, headers=auth("alice"), timeout=30)
    assert again.status_code == 409 and again.json()["extra"]["code"] == "already_decided"
    assert count_rows(settings.database, "run") == runs


def test_an_answer_sent_again_while_the_continuation_runs_follows_it(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=100, tool_approval="delete_task"))
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            asked, said = ask_to_delete_over_http(http, "chat-retry")
            body = {"id": "chat-retry", "messages": [*said, answer(asked, True)], "messageId": asked["messageId"],
                    "onDisconnect": "continue"}
            with http.stream("POST", "/api/alice/ai-sdk/chat", json=body) as first:
                for line in first.iter_lines():
                    if '"text-delta"' in line:
                        break  # the connection drops mid-reply; the client sends the request again
            again = http.post("/api/alice/ai-sdk/chat", json=body)
    finally:
        live.stop()
    assert again.status_code == 200, again.text
    chunks = ui_chunks(again.text)
    assert chunks[0]["type"] == "start" and chunks[0]["messageId"] == asked["messageId"]
    assert chunks[-1]["type"] == "finish" and chunks[-1]["finishReason"] == "stop"
    assert count_rows(settings.database, "task") == 0
    # add, delete (awaiting approval), its one continuation: the retry started nothing.
    assert count_rows(settings.database, "run") == 3
    assert count_rows(settings.database, "run", "status = 'completed'") == 2


def test_two_calls_answered_one_request_at_a_time_then_together(settings):
    """A real model's parallel calls (a local fake provider). The first answer alone records it
    and says the reply still waits; the SDK then sends both answers (the first is still
    answered in its message): the second decides, and the continuation runs only the approved."""
    fake = FakeOpenAI().start()
    try:
        fake.script(*TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN)
        approving = msgspec.structs.replace(settings, tool_approval="delete_task", openai_api_key="sk-test",
                                            openai_base_url=fake.base_url, chat_model="fake-model")
        with TestClient(create_app(approving), timeout=30) as client:
            said = [{"id": f"u{n}", "role": "user", "parts": [{"type": "text", "text": text}]}
                    for n, text in enumerate(["add buy milk", "add walk the dog", "delete both"])]
            for n in (1, 2, 3):
                response = client.post("/api/alice/ai-sdk/chat", json={"id": "chat-two", "messages": said[:n]},
                                       headers=auth("alice"))
            chunks = ui_chunks(response.text)
            asked = [c for c in chunks if c["type"] == "tool-approval-request"]
            assert len(asked) == 2 and chunks[-1]["finishReason"] == "tool-calls"
            message_id = chunks[0]["messageId"]

            def part(request: dict, approved: bool | None, reason: str | None = None) -> dict:
                approval = {"id": request["approvalId"]}
                if approved is not None:
                    approval |= {"approved": approved, **({"reason": reason} if reason else {})}
                return {"type": "tool-delete_task", "toolCallId": request["toolCallId"], "approval": approval,
                        "state": "approval-requested" if approved is None else "approval-responded"}

            def send(*parts: dict) -> list[dict]:
                message = {"id": message_id, "role": "assistant", "parts": [{"type": "step-start"}, *parts]}
                response = client.post("/api/alice/ai-sdk/chat", headers=auth("alice"), json={
                    "id": "chat-two", "messages": [*said, message], "messageId": message_id})
                assert response.status_code == 200, response.text
                return ui_chunks(response.text)

            waiting = send(part(asked[0], True), part(asked[1], None))
            assert [c["type"] for c in waiting] == ["start", "finish"] and waiting[-1]["finishReason"] == "tool-calls"
            assert waiting[0]["messageId"] == message_id
            assert count_rows(settings.database, "task") == 2
            went_on = send(part(asked[0], True), part(asked[1], False, "keep the dog"))
    finally:
        fake.stop()
    assert went_on[0]["messageId"] == message_id
    ends = {c["toolCallId"]: c["type"] for c in went_on if c["type"].startswith("tool-output")}
    assert ends == {asked[0]["toolCallId"]: "tool-output-available", asked[1]["toolCallId"]: "tool-output-denied"}
    assert went_on[-1]["finishReason"] == "stop"
    assert count_rows(settings.database, "task", "title = $1", "walk the dog") == 1
    assert count_rows(settings.database, "task") == 1
    assert "keep the dog" in str(fake.requests[-1].body)
