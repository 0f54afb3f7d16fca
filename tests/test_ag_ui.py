"""AG-UI's own client (``@ag-ui/client`` on npm, pinned in tests/node) as the referee: its
``HttpAgent.runAgent`` validates every event against the protocol's schema and checks their
order (``verifyEvents``) before the application sees one; a violation fails the run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from app.main import create_app
from domain import events as chat
from tests.conftest import auth, count_rows, serving, start_live_server, stored_events, token_for, wait_until_no_run_runs
from tests.fake_openai import FakeOpenAI, Reply, TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN
from tests.test_ai_sdk import require_node_clients
from tests.test_bad_input import assert_nothing_written
from transports.ag_ui import EventTranslator
from transports.sse_framing import data_frames

NODE_DIR = Path(__file__).parent / "node"


def http_agent(server, user: str, mode: str, thread_id: str, text: str, run_id: str = "", *answer: str) -> dict:
    require_node_clients()
    done = subprocess.run(
        ["node", str(NODE_DIR / "ag_ui_client.mjs"), server.url, token_for(user), mode, thread_id, text, run_id,
         *answer],
        capture_output=True, text=True, timeout=60, cwd=NODE_DIR, check=False,
    )
    assert done.returncode == 0, done.stderr
    # The client warns on stderr about any material it had to strip: there must be none.
    assert "[ag-ui]" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def of_type(result: dict, kind: str) -> list[dict]:
    return [event for event in result["events"] if event["type"] == kind]


@pytest.fixture
def server(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5))
    yield live
    live.stop()


def test_http_agent_runs_a_reply_with_a_tool_call_and_text_and_the_thread_continues(server, settings):
    result = http_agent(server, "alice", "send", "thread-milk", "add buy milk", "run-1")
    assert result["errors"] == [] and result["outcome"] == "success"
    kinds = [event["type"] for event in result["events"]]
    assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED"
    assert kinds.index("TOOL_CALL_START") < kinds.index("TOOL_CALL_RESULT") < kinds.index("TEXT_MESSAGE_CONTENT")
    # The events echo the client's ids.
    for event in (result["events"][0], result["events"][-1]):
        assert (event["threadId"], event["runId"]) == ("thread-milk", "run-1")
    assert result["events"][-1]["usage"][0]["outputTokens"] > 0
    [start] = of_type(result, "TOOL_CALL_START")
    assert start["toolCallName"] == "add_task"
    assert json.loads("".join(e["delta"] for e in of_type(result, "TOOL_CALL_ARGS"))) == {"title": "buy milk"}
    [answer] = of_type(result, "TOOL_CALL_RESULT")
    assert answer["toolCallId"] == start["toolCallId"] and json.loads(answer["content"])["added"]["title"] == "buy milk"
    assert "buy milk" in result["reply"]
    # The client's history holds the call on an assistant message and its result as a tool message.
    roles = [message["role"] for message in result["messages"]]
    assert roles[0] == "user" and "tool" in roles
    # The same threadId continues the same conversation.
    again = http_agent(server, "alice", "send", "thread-milk", "list my tasks")
    assert again["errors"] == [] and "buy milk" in again["reply"]
    assert count_rows(settings.database, "conversation") == 1
    assert count_rows(settings.database, "run", "status = 'completed'") == 2


def test_thread_ids_are_per_user(server, settings):
    http_agent(server, "alice", "send", "abc", "add alice's secret")
    bob = http_agent(server, "bob", "send", "abc", "list my tasks")
    assert bob["errors"] == [] and "secret" not in json.dumps(bob["events"])
    assert count_rows(settings.database, "conversation") == 2


def test_a_repeated_run_id_follows_the_run_it_started(server, settings):
    first = http_agent(server, "alice", "send", "thread-retry", "add pay the rent", "run-7")
    again = http_agent(server, "alice", "send", "thread-retry", "add pay the rent", "run-7")
    assert again["errors"] == [] and again["events"] == first["events"]
    assert count_rows(settings.database, "run") == 1
    assert count_rows(settings.database, "task") == 1
    # The same runId in another thread is another send.
    other = http_agent(server, "alice", "send", "thread-other", "hello", "run-7")
    assert other["errors"] == [] and count_rows(settings.database, "run") == 2


def test_aborting_the_request_is_stop(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=40))
    try:
        result = http_agent(live, "alice", "abort", "thread-stop", "add " + " ".join(f"w{n}" for n in range(30)))
        wait_until_no_run_runs(settings.database)
    finally:
        live.stop()
    # The client ends its own run on the abort; the server sends nothing after it left.
    assert [e["type"] for e in result["events"]][-1] == "RUN_ERROR" and result["events"][-1]["code"] == "abort"
    run_id = result["events"][0]["metadata"]["serverRunId"]
    assert count_rows(settings.database, "run", "status = 'cancelled'") == 1
    assert stored_events(settings.database, run_id)[-1]["status"] == "cancelled"


def test_a_stop_from_elsewhere_finishes_the_run_cancelled(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=40))
    try:
        result = http_agent(live, "alice", "cancel", "thread-cancel", "add " + " ".join(f"w{n}" for n in range(30)))
    finally:
        live.stop()
    assert result["errors"] == [] and result["outcome"] == "cancelled"
    assert [e["type"] for e in result["events"]][-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert result["events"][-1]["outcome"] == {"type": "cancelled"}
    assert count_rows(settings.database, "run", "status = 'cancelled'") == 1


def test_a_failing_model_ends_the_run_with_run_error(settings):
    fake = FakeOpenAI().start().repeat(Reply.say("Adding ", "buy milk ", "now.", break_after=2))
    live = start_live_server(msgspec.structs.replace(
        settings, openai_api_key="sk-test-0000", openai_base_url=fake.base_url, chat_model="fake-model",
    ))
    try:
        result = http_agent(live, "alice", "send", "thread-fail", "add buy milk")
    finally:
        live.stop()
        fake.stop()
    assert result["errors"] == [] and result["outcome"] is None
    kinds = [event["type"] for event in result["events"]]
    assert kinds[-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]
    assert result["events"][-1]["code"] == "model_unavailable" and result["reply"] == "Adding buy milk "
    assert count_rows(settings.database, "run", "status = 'failed'") == 1


USER = {"id": "u1", "role": "user", "content": "hi"}
VALID = {"threadId": "t", "runId": "r", "messages": [USER]}


@pytest.mark.parametrize("body, key", [
    (b'{"threadId": ', None),
    (b"[]", None),
    (b'{"runId": "r", "messages": []}', "data"),  # no threadId
    (b'{"threadId": "t", "messages": []}', "data"),  # no runId
    (json.dumps({**VALID, "messages": "hi"}).encode(), "messages"),
    (json.dumps({**VALID, "threadId": 7}).encode(), "threadId"),
    (json.dumps({**VALID, "threadId": ""}).encode(), "threadId"),
    (json.dumps({**VALID, "threadId": "t" * 65}).encode(), "threadId"),
    (json.dumps({**VALID, "threadId": "a\u0000b"}).encode(), "threadId"),
    (json.dumps({**VALID, "runId": ""}).encode(), "runId"),
    (json.dumps({**VALID, "surprise": 1}).encode(), "data"),  # the protocol's objects are closed
    (json.dumps({**VALID, "messages": [{**USER, "surprise": 1}]}).encode(), "messages[0]"),
    (json.dumps({**VALID, "messages": [{**USER, "role": "boss"}]}).encode(), "messages[0].role"),
    (json.dumps({**VALID, "messages": [{**USER, "content": [{"type": "gif", "text": "hi"}]}]}).encode(),
     "messages[0].content[0].type"),
    # A file is refused, not answered as if it were not there (README: files come later).
    (json.dumps({**VALID, "messages": [{**USER, "content": [{"type": "text", "text": "read this"}, {
        "type": "binary", "mimeType": "application/pdf", "data": "JVBERi0="}]}]}).encode(),
     "messages[0].content[1].type"),
    (json.dumps({**VALID, "tools": [{"name": "x"}]}).encode(), "tools[0]"),
    (json.dumps({**VALID, "messages": [{"id": "a1", "role": "assistant", "content": "hi"}]}).encode(),
     "messages"),  # no user message
    (json.dumps({**VALID, "messages": [{**USER, "content": "  "}]}).encode(), "message"),
    (json.dumps({**VALID, "messages": [{**USER, "content": [
        {"type": "image", "source": {"type": "url", "value": "https://example.com/a.png"}}]}]}).encode(), "message"),
])
def test_bad_inputs_are_400_and_write_nothing(client, settings, body, key):
    response = client.post("/api/alice/ag-ui", content=body,
                           headers={**auth("alice"), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["status_code"] == 400 and error["detail"]
    if key:
        assert key in {item["key"] for item in error["extra"]}, error
    assert_nothing_written(settings)


def test_another_users_path_is_403_and_writes_nothing(client, settings):
    response = client.post("/api/alice/ag-ui", json=VALID, headers=auth("bob"))
    assert response.status_code == 403
    assert_nothing_written(settings)


def test_text_parts_of_a_multimodal_message_are_what_the_user_said(client, settings):
    content = [{"type": "text", "text": "add "}, {"type": "image", "source": {"type": "data", "value": "AA==",
               "mimeType": "image/png"}}, {"type": "text", "text": "call mom"}]
    response = client.post("/api/alice/ag-ui", json={**VALID, "messages": [{**USER, "content": content}]},
                           headers=auth("alice"))
    assert response.status_code == 200 and b'"RUN_FINISHED"' in response.content
    assert count_rows(settings.database, "task", "title = $1", "call mom") == 1


class CannedStream:
    """A bare server answering every request with the same SSE body: what the client makes of it."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __call__(self, scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": self.body})


def served(body: bytes) -> dict:
    with serving(CannedStream(body)) as port:
        return http_agent(type("Server", (), {"url": f"http://127.0.0.1:{port}"}), "alice", "send", "t", "hi", "r")


def translated(*stream: chat.Event) -> bytes:
    translator = EventTranslator("t", "r")
    return data_frames(msgspec.json.encode(e) for event in stream for e in translator.translate(event))


def test_the_referee_rejects_events_out_of_order():
    out_of_order = [{"type": "RUN_STARTED", "threadId": "t", "runId": "r"},
                    {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "hi"},
                    {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"}]
    result = served(data_frames(map(msgspec.json.encode, out_of_order)))
    assert "No active text message found with ID 'm'" in result["errors"][0]


START = chat.Start(run_id="x", seq=1, conversation_id="c", message_id="m", agent="Todo")
CALL = chat.ToolCall(run_id="x", seq=3, call_id="call-1", name="add_task", arguments={"title": "tea"})


@pytest.mark.parametrize("status, last", [
    ("cancelled", {"type": "RUN_FINISHED", "threadId": "t", "runId": "r", "outcome": {"type": "cancelled"}}),
    ("interrupted", {"type": "RUN_ERROR", "code": "interrupted",
                     "message": "The server restarted; the reply was cut short."}),
])
def test_a_reply_cut_short_mid_tool_call_answers_the_call_and_says_how_it_ended(status, last):
    """Runs a test cannot time (a Stop inside a tool, a restart): the client accepts what they
    send, and no call is left for the application to answer."""
    result = served(translated(START, chat.Text(run_id="x", seq=2, content="On it."), CALL,
                               chat.Done(run_id="x", seq=4, status=status)))
    assert result["errors"] == [], result["errors"]
    [answer] = [e for e in result["events"] if e["type"] == "TOOL_CALL_RESULT"]
    assert json.loads(answer["content"]) == {"error": f"stopped before it finished ({status})"}
    assert result["events"][-1] == last
    assistant = next(m for m in result["messages"] if m["role"] == "assistant")
    assert assistant["content"] == "On it." and assistant["toolCalls"][0]["id"] == "call-1"


def test_run_started_echoes_the_parent_run(client):
    response = client.post("/api/alice/ag-ui", json={**VALID, "parentRunId": "run-0"}, headers=auth("alice"))
    first = json.loads(response.content.split(b"\n\n")[0].removeprefix(b"data: "))
    assert first["type"] == "RUN_STARTED" and first["parentRunId"] == "run-0" and first["protocolVersion"] == "1.0"


# -- tool approvals: the interrupt outcome, answered through RunAgentInput.resume -------------

@pytest.fixture
def approving_server(settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5, tool_approval="delete_task"))
    yield live
    live.stop()


def interrupted_then_resumed(server, thread_id: str, *answer: str) -> tuple[dict, dict]:
    """"add buy milk", then "delete buy milk": that run ends interrupted and the HttpAgent
    answers it with a second run whose ``resume`` carries the decision."""
    assert http_agent(server, "alice", "send", thread_id, "add buy milk")["errors"] == []
    result = http_agent(server, "alice", "resume", thread_id, "delete buy milk", "", *answer)
    assert result["errors"] == [] and result["outcome"] == "interrupt"
    [interrupt] = result["interrupts"]
    [call] = of_type(result, "TOOL_CALL_START")
    server_run = result["events"][0]["metadata"]["serverRunId"]
    assert interrupt == {
        "id": f"{server_run}:{call['toolCallId']}", "reason": "tool_approval", "toolCallId": call["toolCallId"],
        "message": "Allow delete_task?", "responseSchema": interrupt["responseSchema"],
        "metadata": {"toolName": "delete_task", "arguments": {"title": "buy milk"}},
    }
    assert result["events"][-1]["outcome"]["type"] == "interrupt"
    assert not of_type(result, "TOOL_CALL_RESULT")  # the call waits: it is not answered as cut short
    return result, result["resumed"]


def test_approving_an_interrupt_deletes_the_task_and_the_run_goes_on(approving_server, settings):
    asked, resumed = interrupted_then_resumed(approving_server, "thread-approve", "approve")
    assert resumed["errors"] == [] and resumed["outcome"] == "success" and resumed["pendingInterrupts"] == []
    [call] = of_type(asked, "TOOL_CALL_START")
    [result] = of_type(resumed, "TOOL_CALL_RESULT")
    assert result["toolCallId"] == call["toolCallId"] and "deleted" in json.loads(result["content"])
    assert "Deleted" in resumed["reply"]
    # The result joined the call in the client's history.
    tool = next(m for m in resumed["messages"] if m["role"] == "tool" and m["toolCallId"] == call["toolCallId"])
    assert "deleted" in tool["content"]
    assert count_rows(settings.database, "task") == 0


@pytest.mark.parametrize("answer, told", [(("reject", "wrong task"), "wrong task"), (("cancel",), "declined")])
def test_rejecting_or_cancelling_an_interrupt_keeps_the_task_and_the_model_is_told(
        approving_server, settings, answer, told):
    _, resumed = interrupted_then_resumed(approving_server, f"thread-{answer[0]}", *answer)
    assert resumed["errors"] == [] and resumed["outcome"] == "success"
    [result] = of_type(resumed, "TOOL_CALL_RESULT")
    assert "declined" in result["content"] and told in result["content"]
    assert told in resumed["reply"]
    assert count_rows(settings.database, "task") == 1


def ask_to_delete(client, thread: str) -> tuple[str, str]:
    """Over plain HTTP: the thread's "delete buy milk" run ends interrupted; its interrupt id."""
    for n, text in enumerate(["add buy milk", "delete buy milk"]):
        body = {"threadId": thread, "runId": f"r{n}", "messages": [{**USER, "id": f"u{n}", "content": text}]}
        response = client.post("/api/alice/ag-ui", json=body, headers=auth("alice"))
        assert response.status_code == 200, response.text
    [interrupt] = sse_events(response.content)[-1]["outcome"]["interrupts"]
    return interrupt["id"], interrupt["toolCallId"]


@pytest.fixture
def approving_client(settings):
    with TestClient(create_app(msgspec.structs.replace(settings, tool_approval="delete_task")), timeout=30) as client:
        yield client


@pytest.mark.parametrize("user, entry, status, key", [
    ("alice", {"interruptId": "nope:{call}", "status": "resolved", "payload": {"approve": True}}, 404, None),
    ("alice", {"interruptId": "no-colon", "status": "resolved", "payload": {"approve": True}}, 404, None),
    ("bob", {"interruptId": "{id}", "status": "resolved", "payload": {"approve": True}}, 404, None),
    ("alice", {"interruptId": "{id}", "status": "resolved"}, 400, "resume[0].payload"),
    ("alice", {"interruptId": "{id}", "status": "resolved", "payload": {"approve": "yes"}}, 400, "resume[0].payload"),
    ("alice", {"interruptId": "{id}", "status": "resolved", "payload": {"approve": True, "x": 1}}, 400,
     "resume[0].payload"),
    ("alice", {"interruptId": "{id}", "status": "maybe"}, 400, "resume[0].status"),
])
def test_a_bad_resume_is_4xx_and_changes_nothing(approving_client, settings, user, entry, status, key):
    interrupt, call = ask_to_delete(approving_client, f"thread-bad-{user}")
    runs = count_rows(settings.database, "run")
    entry = {**entry, "interruptId": entry["interruptId"].format(id=interrupt, call=call)}
    body = {"threadId": f"thread-bad-{user}", "runId": "r2", "messages": [USER], "resume": [entry]}
    response = approving_client.post(f"/api/{user}/ag-ui", json=body, headers=auth(user))
    assert response.status_code == status, response.text
    if key:
        assert key in {item["key"] for item in response.json()["extra"]}, response.json()
    assert count_rows(settings.database, "approval", "decision IS NULL") == 1
    assert count_rows(settings.database, "run") == runs and count_rows(settings.database, "task") == 1


def test_a_resume_sent_again_after_the_continuation_is_409_already_decided(approving_client, settings):
    interrupt, _ = ask_to_delete(approving_client, "thread-twice")
    body = {"threadId": "thread-twice", "runId": "r2", "messages": [USER],
            "resume": [{"interruptId": interrupt, "status": "resolved", "payload": {"approve": True}}]}
    first = approving_client.post("/api/alice/ag-ui", json=body, headers=auth("alice"))
    assert first.status_code == 200 and b'"outcome":{"type":"success"}' in first.content
    runs = count_rows(settings.database, "run")
    again = approving_client.post("/api/alice/ag-ui", json=body, headers=auth("alice"))
    assert again.status_code == 409 and again.json()["extra"]["code"] == "already_decided"
    assert count_rows(settings.database, "run") == runs and count_rows(settings.database, "task") == 0


def sse_events(body: bytes) -> list[dict]:
    return [json.loads(frame.removeprefix(b"data: ")) for frame in body.strip().split(b"\n\n")]


def test_two_interrupts_answered_one_at_a_time(settings):
    """A real model's parallel calls (a local fake provider): a resume answering one of them
    is a run that ends interrupted by the other (which the HttpAgent accepts); answering that
    one streams the continuation, which ran only the approved call."""
    fake = FakeOpenAI().start()
    try:
        fake.script(*TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN)
        approving = msgspec.structs.replace(settings, tool_approval="delete_task", openai_api_key="sk-test",
                                            openai_base_url=fake.base_url, chat_model="fake-model")
        with TestClient(create_app(approving), timeout=30) as client:
            def run(run_id: str, **fields) -> bytes:
                body = {"threadId": "thread-two", "runId": run_id, "messages": [USER], **fields}
                response = client.post("/api/alice/ag-ui", json=body, headers=auth("alice"))
                assert response.status_code == 200, response.text
                return response.content

            def last(body: bytes) -> dict:
                return sse_events(body)[-1]

            for n, text in enumerate(["add buy milk", "add walk the dog", "delete both"]):
                asked = run(f"r{n}", messages=[{**USER, "id": f"u{n}", "content": text}])
            first, second = last(asked)["outcome"]["interrupts"]
            waiting = run("r3", resume=[{"interruptId": first["id"], "status": "resolved", "payload": {"approve": True}}])
            assert last(waiting)["outcome"] == {"type": "interrupt", "interrupts": [
                {"id": second["id"], "reason": "tool_approval", "toolCallId": second["toolCallId"],
                 "responseSchema": second["responseSchema"]}]}
            assert count_rows(settings.database, "task") == 2
            went_on = run("r4", resume=[{"interruptId": second["id"], "status": "cancelled"}])
    finally:
        fake.stop()
    referee = served(waiting)
    assert referee["errors"] == [] and referee["outcome"] == "interrupt"
    results = {e["toolCallId"]: e["content"] for e in sse_events(went_on) if e["type"] == "TOOL_CALL_RESULT"}
    assert "deleted" in results[first["toolCallId"]] and "declined" in results[second["toolCallId"]]
    assert last(went_on)["outcome"] == {"type": "success"}
    assert count_rows(settings.database, "task", "title = $1", "walk the dog") == 1
    assert count_rows(settings.database, "task") == 1
