"""The Todo assistant on a real model server: OpenAI's wire APIs, spoken by a local fake.

Everything between the fake server and the user is real: the ``openai`` client, the agents
SDK, the tools writing to the database, the SSE and WebSocket output.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import httpx_sse
import msgspec
import pytest
from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel
from agents.tracing import TracingProcessor, set_trace_processors
from agents.tracing.processors import default_processor
from litestar.testing import TestClient

from app.main import create_app
from app.settings import Settings, load_settings
from domain.models import ModelConfig, build_model
from domain.offline_model import OfflineModel
from tests.conftest import auth, count_rows, fetch_rows, start_live_server, token_for
from tests.fake_openai import FakeOpenAI, Reply
from tests.sse import parse_frames, text_of

KEY = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
MODEL = "fake-model"
PATHS = {"chat_completions": "/v1/chat/completions", "responses": "/v1/responses"}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(params=["chat_completions", "responses"])
def api(request) -> str:
    return request.param


# Every test here runs on both provider paths: the fast one (aiohttp, compiled decoding) must
# give the user what the stock ``openai`` client gives, failures and their codes included.
@pytest.fixture(params=["fast", "stock"])
def provider_path(request) -> str:
    return request.param


@pytest.fixture
def model_settings(settings, fake, api, provider_path) -> Settings:
    """A compatible server at OPENAI_BASE_URL: Chat Completions unless OPENAI_API says otherwise."""
    return msgspec.structs.replace(
        settings, openai_api_key=KEY, openai_base_url=fake.base_url, chat_model=MODEL,
        openai_api="responses" if api == "responses" else None, provider_fast_path=provider_path == "fast",
    )


@contextmanager
def serve(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), timeout=30) as client:
        yield client


def chat(client: TestClient, message: str, conversation_id: str | None = None, user: str = "alice") -> list[dict]:
    body = {"message": message} | ({"conversation_id": conversation_id} if conversation_id else {})
    response = client.post(f"/api/{user}/chat/stream", json=body, headers=auth(user))
    assert response.status_code == 200, response.text
    assert KEY.encode() not in response.content and b"Traceback" not in response.content
    return parse_frames(response.content)


def types_of(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _text(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content)


def seen_by_model(request) -> list[tuple]:
    """What a request put before the model, the same way for both wire APIs:
    ("system" | "user" | "assistant", text), ("call", call_id, name, arguments), ("output", call_id, result)."""
    body, turns = request.body, []
    if "messages" in body:
        for message in body["messages"]:
            if message["role"] == "tool":
                turns.append(("output", message["tool_call_id"], json.loads(_text(message["content"]))))
                continue
            if _text(message.get("content")):
                turns.append((message["role"], _text(message["content"])))
            for call in message.get("tool_calls") or []:
                function = call["function"]
                turns.append(("call", call["id"], function["name"], json.loads(function["arguments"])))
        return turns
    if body.get("instructions"):
        turns.append(("system", body["instructions"]))
    for item in body["input"]:
        if item.get("type") == "function_call":
            turns.append(("call", item["call_id"], item["name"], json.loads(item["arguments"])))
        elif item.get("type") == "function_call_output":
            turns.append(("output", item["call_id"], json.loads(item["output"])))
        else:
            turns.append((item["role"], _text(item["content"])))
    return turns


def run_row(settings: Settings, run_id: str) -> tuple:
    [row] = fetch_rows(settings.database, "SELECT status, input_tokens, output_tokens, error_code FROM run "
                                          "WHERE id = $1", _run_key(settings, run_id))
    return row


def assistant_messages(settings: Settings, run_id: str) -> list[tuple]:
    return fetch_rows(settings.database, "SELECT content, status FROM message WHERE role = 'assistant' "
                                         "AND run_id = $1", run_id)


def _run_key(settings: Settings, run_id: str) -> str | uuid.UUID:
    return run_id if settings.database.startswith("sqlite") else uuid.UUID(run_id)


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


# -- a tool round trip ---------------------------------------------------------------------


def test_tool_round_trip_through_a_real_model_server(model_settings, fake, api):
    fake.script(
        Reply.call("add_task", {"title": "buy milk"}, usage=(12, 3)),
        Reply.say("Added ", "buy milk", " to your list.", usage=(30, 7)),
    )
    with serve(model_settings) as client:
        events = chat(client, "please add buy milk")
        tasks = client.get("/api/alice/tasks", headers=auth("alice")).json()

    assert types_of(events) == ["start", "tool_call", "tool_result", "text", "text", "text", "done"]
    call, result, done = events[1], events[2], events[-1]
    assert call["name"] == "add_task" and call["arguments"] == {"title": "buy milk"}
    assert result["call_id"] == call["call_id"] and result["result"]["added"]["title"] == "buy milk"
    assert text_of(events) == "Added buy milk to your list."
    assert done["status"] == "completed"
    assert done["usage"] == {"input_tokens": 42, "output_tokens": 10}
    assert [t["title"] for t in tasks] == ["buy milk"]
    assert count_rows(model_settings.database, "task", "user_id = $1 AND title = $2", "alice", "buy milk") == 1
    assert run_row(model_settings, events[0]["run_id"]) == ("completed", 42, 10, None)
    assert assistant_messages(model_settings, events[0]["run_id"]) == [("Added buy milk to your list.", "completed")]

    first, second = fake.requests
    assert {first.path, second.path} == {PATHS[api]}
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body["model"] == MODEL and first.body["stream"] is True
    assert {tool["name"] if "name" in tool else tool["function"]["name"] for tool in first.body["tools"]} >= {
        "add_task", "list_tasks", "complete_task", "update_task", "delete_task",
    }
    if api == "chat_completions":
        # Compatible servers only count tokens in a stream when asked to.
        assert first.body["stream_options"] == {"include_usage": True}
    # The model's second turn sees its own call and the tool's output.
    turns = seen_by_model(second)
    assert turns[-2] == ("call", call["call_id"], "add_task", {"title": "buy milk"})
    assert turns[-1][:2] == ("output", call["call_id"])
    assert turns[-1][2]["added"]["title"] == "buy milk"


def test_the_next_turn_sends_the_whole_conversation_to_the_model(model_settings, fake):
    fake.script(
        Reply.call("add_task", {"title": "buy milk"}),
        Reply.say("Added buy milk."),
        Reply.say("You have one task: ", "buy milk."),
    )
    with serve(model_settings) as client:
        first = chat(client, "add buy milk")
        conversation_id = first[0]["conversation_id"]
        second = chat(client, "what is on my list?", conversation_id)

    assert second[0]["conversation_id"] == conversation_id
    assert text_of(second) == "You have one task: buy milk."
    assert len(fake.requests) == 3
    turns = seen_by_model(fake.requests[2])
    system, *history = turns
    assert system[0] == "system" and "todo list" in system[1]
    call_id = first[1]["call_id"]
    assert history[:2] == [("user", "add buy milk"), ("call", call_id, "add_task", {"title": "buy milk"})]
    assert history[2][:2] == ("output", call_id) and history[2][2]["added"]["title"] == "buy milk"
    assert history[3:] == [("assistant", "Added buy milk."), ("user", "what is on my list?")]


# -- failures ------------------------------------------------------------------------------

FAILURES = {
    "unreachable": (None, "model_unavailable"),
    "unauthorized": (Reply(status=401), "model_auth"),
    "rate_limited": (Reply(status=429), "model_rate_limited"),
    "server_error": (Reply(status=500), "model_unavailable"),
    "overloaded": (Reply(status=503), "model_unavailable"),
    "no_answer": (Reply(stall_after=0), "model_timeout"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failing_model_ends_the_run_with_a_safe_error_and_the_server_keeps_serving(
    model_settings, fake, failure
):
    reply, code = FAILURES[failure]
    changes = {"model_timeout_s": 0.5}
    if reply is None:
        changes["openai_base_url"] = closed_port_url()
    else:
        fake.script(reply, Reply.say("Back ", "again."))
    with serve(msgspec.structs.replace(model_settings, **changes)) as client:
        started = time.monotonic()
        events = chat(client, "add buy milk")
        elapsed = time.monotonic() - started
        retry = chat(client, "add buy milk", events[0]["conversation_id"])
        health = client.get("/health")

    assert types_of(events) == ["start", "error", "done"]
    error, done = events[1], events[2]
    assert error["code"] == code
    assert error["message"] and KEY not in error["message"]
    assert done == {**done, "status": "failed"} and "usage" not in done
    # No retries behind the user's back: a failing provider answers at once.
    assert elapsed < 5
    assert run_row(model_settings, events[0]["run_id"]) == ("failed", 0, 0, code)
    assert assistant_messages(model_settings, events[0]["run_id"]) == []
    assert health.status_code == 200
    if reply is None:
        assert types_of(retry) == ["start", "error", "done"]
    else:
        assert text_of(retry) == "Back again." and retry[-1]["status"] == "completed"
        assert len(fake.requests) == 2


def test_a_stream_that_breaks_midway_keeps_the_partial_text_as_failed(model_settings, fake):
    fake.script(Reply.say("Adding ", "buy milk ", "to your list now.", break_after=2))
    with serve(model_settings) as client:
        events = chat(client, "add buy milk")
        detail = client.get(f"/api/alice/conversations/{events[0]['conversation_id']}", headers=auth("alice")).json()

    assert types_of(events) == ["start", "text", "text", "error", "done"]
    assert events[3]["code"] == "model_unavailable" and events[4]["status"] == "failed"
    status, _, _, error_code = run_row(model_settings, events[0]["run_id"])
    assert (status, error_code) == ("failed", "model_unavailable")
    assert assistant_messages(model_settings, events[0]["run_id"]) == [("Adding buy milk ", "failed")]
    assert [(m["role"], m["content"], m["status"]) for m in detail["messages"]] == [
        ("user", "add buy milk", "completed"), ("assistant", "Adding buy milk ", "failed"),
    ]


# A frame the provider should never send, mid-stream: not JSON, or JSON of the wrong shape
# (an array where a chunk belongs; a text delta that is a number).
MALFORMED = {
    "not_json": {
        "chat_completions": b'data: {"id": "chatcmpl-1", "choices": [{"delta": \n\n',
        "responses": b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": \n\n',
    },
    "wrong_shape": {
        "chat_completions": b"data: [1, 2, 3]\n\n",
        "responses": b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", '
                     b'"sequence_number": 9, "item_id": "msg_1", "output_index": 0, "content_index": 0, '
                     b'"delta": 5, "logprobs": []}\n\n',
    },
}


@pytest.mark.parametrize("malformed", MALFORMED)
def test_a_malformed_chunk_mid_stream_is_a_model_error_and_keeps_the_partial_text(model_settings, fake, api,
                                                                                   malformed):
    fake.script(Reply.say("Adding ", "buy milk ", "to your list now.", malformed=MALFORMED[malformed][api],
                          malformed_after=2), Reply.say("Back ", "again."))
    with serve(model_settings) as client:
        events = chat(client, "add buy milk")
        retry = chat(client, "add buy milk", events[0]["conversation_id"])

    assert types_of(events) == ["start", "text", "text", "error", "done"]
    assert events[3]["code"] == "model_error" and events[4]["status"] == "failed"
    assert run_row(model_settings, events[0]["run_id"])[3] == "model_error"
    assert assistant_messages(model_settings, events[0]["run_id"]) == [("Adding buy milk ", "failed")]
    assert text_of(retry) == "Back again." and retry[-1]["status"] == "completed"


def test_a_stalled_stream_times_out_and_hangs_up_on_the_model(model_settings, fake):
    fake.script(Reply.say("Let me ", "think", stall_after=1))
    with serve(msgspec.structs.replace(model_settings, model_timeout_s=0.5)) as client:
        events = chat(client, "add buy milk")

    assert types_of(events) == ["start", "text", "error", "done"]
    assert events[2]["code"] == "model_timeout" and events[3]["status"] == "failed"
    assert assistant_messages(model_settings, events[0]["run_id"]) == [("Let me ", "failed")]
    assert fake.requests[0].disconnected.wait(5)


def test_a_model_that_keeps_calling_tools_is_stopped_at_max_turns(model_settings, fake):
    fake.repeat(Reply.call("list_tasks", {"status": "all"}, usage=(10, 5)))
    with serve(msgspec.structs.replace(model_settings, max_turns=3)) as client:
        events = chat(client, "list my tasks")
        fake.script(Reply.say("Done."))
        after = chat(client, "thanks")

    assert types_of(events) == ["start"] + ["tool_call", "tool_result"] * 3 + ["error", "done"]
    assert events[-2]["code"] == "max_turns"
    assert events[-1]["status"] == "failed"
    # The turns the model did take are still counted.
    assert events[-1]["usage"] == {"input_tokens": 30, "output_tokens": 15}
    assert run_row(model_settings, events[0]["run_id"]) == ("failed", 30, 15, "max_turns")
    assert len(fake.requests) == 4
    assert text_of(after) == "Done." and after[-1]["status"] == "completed"


# -- stop while the model is mid-stream -------------------------------------------------------


@contextmanager
def live(settings: Settings) -> Iterator[httpx.Client]:
    server = start_live_server(settings)
    try:
        with httpx.Client(base_url=server.url, headers=auth("alice"), timeout=30) as http:
            yield http
    finally:
        server.stop()


def test_cancel_while_the_model_streams_closes_the_upstream_request(model_settings, fake):
    fake.script(Reply.say("Let me ", "think ", "about it", stall_after=2), Reply.say("OK, stopped."))
    with live(model_settings) as http:
        events = []
        with httpx_sse.connect_sse(http, "POST", "/api/alice/chat/stream", json={"message": "plan my week"}) as source:
            for sse in source.iter_sse():
                events.append(sse.json())
                if events[-1]["type"] == "text" and types_of(events).count("text") == 2:
                    cancelled = http.post(f"/api/alice/runs/{events[0]['run_id']}/cancel")
                    assert cancelled.status_code == 202
        assert fake.requests[0].disconnected.wait(5), "the model's HTTP stream was left open"
        after = parse_frames(http.post("/api/alice/chat/stream", json={
            "message": "never mind", "conversation_id": events[0]["conversation_id"],
        }).content)

    assert types_of(events) == ["start", "text", "text", "done"]
    assert events[-1]["status"] == "cancelled"
    assert not fake.requests[0].completed
    assert assistant_messages(model_settings, events[0]["run_id"]) == [("Let me think ", "cancelled")]
    # The model learns what it had said and that the user stopped it.
    turns = seen_by_model(fake.requests[1])
    assert ("assistant", "Let me think ") in turns
    assert any(role == "system" and "Stop" in text for role, text, *_ in turns[1:])
    assert text_of(after) == "OK, stopped."


def test_closing_the_stream_stops_the_model_and_closes_the_upstream_request(model_settings, fake):
    fake.script(Reply.say("Let me ", "think ", "about it", stall_after=2))
    with live(model_settings) as http:
        with http.stream("POST", "/api/alice/chat/stream", json={"message": "plan my week"}) as response:
            lines = response.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
            assert next(line for line in lines if line.startswith("data: ")).startswith('data: {"type":"text"')
        assert fake.requests[0].disconnected.wait(5), "the model's HTTP stream was left open"
        assert wait_for(lambda: run_row(model_settings, first["run_id"])[0] == "cancelled")


# -- the WebSocket sees the same run -----------------------------------------------------------


def test_websocket_chat_with_a_real_model_server(model_settings, fake):
    fake.script(
        Reply.call("add_task", {"title": "walk the dog"}),
        Reply.say("Added ", "walk the dog."),
        Reply(status=429),
    )
    with serve(model_settings) as client:
        with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
            ws.send_json({"type": "chat", "message": "add walk the dog"})
            first = _read_run(ws)
            ws.send_json({"type": "chat", "message": "and again", "conversation_id": first[0]["conversation_id"]})
            second = _read_run(ws)

    assert types_of(first) == ["start", "tool_call", "tool_result", "text", "text", "done"]
    assert text_of(first) == "Added walk the dog." and first[-1]["usage"] == {"input_tokens": 20, "output_tokens": 10}
    assert count_rows(model_settings.database, "task", "title = $1", "walk the dog") == 1
    assert types_of(second) == ["start", "error", "done"]
    assert second[1]["code"] == "model_rate_limited" and second[2]["status"] == "failed"
    assert KEY not in json.dumps(second)


def _read_run(ws) -> list[dict]:
    events = []
    while not events or events[-1]["type"] != "done":
        events.append(ws.receive_json())
    return events


# -- configuration -----------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def logged(name: str) -> Iterator[list[str]]:
    """Messages of one logger (Litestar's logging config replaces the root handlers caplog uses)."""
    handler, logger = _Records(), logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_health_shows_the_provider_and_model_but_no_secret(model_settings, fake, api):
    with_credentials = fake.base_url.replace("http://", "http://proxy-user:proxy-pass@")
    with logged("chat_server") as messages:
        with serve(msgspec.structs.replace(model_settings, openai_base_url=with_credentials)) as client:
            response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {
        **response.json(), "status": "ok", "database": "ok", "model_provider": "openai-compatible",
        "model": MODEL, "api": api, "model_base_url": fake.base_url,
    }
    startup = "\n".join(messages)
    assert f"openai-compatible ({MODEL}, {api} api at {fake.base_url})" in startup
    for secret in (KEY, "proxy-pass"):
        assert secret not in response.text and secret not in startup


def test_provider_selection_from_the_environment():
    def chosen(**env: str):
        settings = load_settings(env, env_file=None)
        model, model_settings, provider = build_model(ModelConfig(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url, model=settings.chat_model,
            api=settings.openai_api, timeout_s=settings.model_timeout_s,
        ))
        return type(model), model_settings.include_usage, provider

    offline, _, provider = chosen()
    assert offline is OfflineModel and provider.name == "offline"

    kind, _, provider = chosen(OPENAI_API_KEY=KEY)
    assert kind is OpenAIResponsesModel
    assert (provider.name, provider.api, provider.base_url) == ("openai", "responses", None)

    kind, include_usage, provider = chosen(OPENAI_BASE_URL="http://127.0.0.1:9/v1", CHAT_MODEL="llama3")
    assert kind is OpenAIChatCompletionsModel and include_usage is True
    assert (provider.name, provider.api, provider.model_name) == ("openai-compatible", "chat_completions", "llama3")

    kind, _, provider = chosen(OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API="responses")
    assert kind is OpenAIResponsesModel and provider.api == "responses"

    kind, _, provider = chosen(OPENAI_API_KEY=KEY, OPENAI_API="chat_completions", MODEL_TIMEOUT_S="2.5")
    assert kind is OpenAIChatCompletionsModel and provider.name == "openai"
    assert KEY not in msgspec.json.encode(provider).decode()


class _TraceRecorder(TracingProcessor):
    def __init__(self) -> None:
        self.traces: list[str] = []
        self.lock = threading.Lock()

    def on_trace_start(self, trace) -> None:
        with self.lock:
            self.traces.append(trace.name)

    def on_trace_end(self, trace) -> None: ...
    def on_span_start(self, span) -> None: ...
    def on_span_end(self, span) -> None: ...
    def shutdown(self) -> None: ...
    def force_flush(self) -> None: ...


@pytest.fixture
def traces() -> Iterator[_TraceRecorder]:
    """Record traces instead of uploading them: a test must never reach OpenAI's trace API."""
    recorder = _TraceRecorder()
    set_trace_processors([recorder])
    yield recorder
    set_trace_processors([default_processor()])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("api", ["chat_completions"], indirect=True)
@pytest.mark.parametrize("tracing", [False, True])
def test_tracing_is_off_unless_asked_for(model_settings, fake, traces, tracing):
    fake.script(Reply.say("Hello."))
    with serve(msgspec.structs.replace(model_settings, openai_agents_tracing=tracing)) as client:
        assert text_of(chat(client, "hi")) == "Hello."
    assert bool(traces.traces) is tracing
    assert all("trace" not in r.path for r in fake.requests)
    assert load_settings({"OPENAI_AGENTS_TRACING": "1"}, env_file=None).openai_agents_tracing is True
    assert load_settings({}, env_file=None).openai_agents_tracing is False
