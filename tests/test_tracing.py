"""OpenTelemetry traces reach a local OTLP/HTTP receiver: the request's span, the run's span
under it, a span per model call and per tool call under that; a user's words only when asked."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest
from litestar.testing import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from app.main import create_app
from tests.conftest import auth, token_for
from tests.sse import parse_frames


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: traces do not depend on the engine."""
    return f"sqlite:///{tmp_path / 'chat.sqlite3'}"


class Span(msgspec.Struct):
    name: str
    kind: int
    span_id: bytes
    parent_span_id: bytes
    trace_id: bytes
    attributes: dict[str, object]
    service: str


class Receiver:
    """An OTLP/HTTP collector on 127.0.0.1: keeps every span posted to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.received(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, path: str, body: bytes) -> None:
        self.paths.append(path)
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append(Span(span.name, span.kind, span.span_id, span.parent_span_id, span.trace_id,
                                           attributes, resource.get("service.name", "")))

    def children(self, parent: Span) -> list[Span]:
        return [span for span in self.spans if span.parent_span_id == parent.span_id]

    def named(self, prefix: str) -> list[Span]:
        return [span for span in self.spans if span.name.startswith(prefix)]


def _value(value) -> object:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    yield receiving
    receiving.server.shutdown()


SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP's SpanKind numbers


def traced(settings, receiver: Receiver, **more):
    return msgspec.structs.replace(settings, otel_exporter_otlp_endpoint=receiver.url,
                                   otel_service_name="chat-test", **more)


def test_one_chat_sends_the_request_the_run_its_model_calls_and_its_tool_call(settings, receiver):
    with TestClient(create_app(traced(settings, receiver)), timeout=30) as client:
        events = parse_frames(client.post("/api/alice/chat/stream", json={"message": "add buy milk"},
                                          headers=auth("alice")).content)
    # The app's shutdown sends what is still batched.
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    start, done = events[0], events[-1]
    call = next(e for e in events if e["type"] == "tool_call")

    [request] = [s for s in receiver.spans if s.kind == SERVER and s.name == "POST /api/{user_id}/chat/stream"]
    [run] = receiver.children(request)
    assert run.name == f"invoke_agent {start['agent']}" and run.kind == INTERNAL and run.service == "chat-test"
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["chat.run.id"] == start["run_id"]
    assert run.attributes["gen_ai.conversation.id"] == start["conversation_id"]
    assert run.attributes["gen_ai.request.model"] == "offline-todo"
    assert run.attributes["chat.run.status"] == "completed"
    assert run.attributes["gen_ai.usage.input_tokens"] == done["usage"]["input_tokens"]
    assert run.attributes["gen_ai.usage.output_tokens"] == done["usage"]["output_tokens"]

    children = receiver.children(run)
    model_calls = [s for s in children if s.attributes["gen_ai.operation.name"] == "chat"]
    [tool] = [s for s in children if s.attributes["gen_ai.operation.name"] == "execute_tool"]
    assert len(model_calls) == 2 and len(children) == 3  # the call that asks for the tool, the one after it
    for model_call in model_calls:
        assert model_call.name == "chat offline-todo" and model_call.kind == CLIENT
        assert model_call.attributes["gen_ai.request.model"] == "offline-todo"
        assert model_call.attributes["gen_ai.provider.name"] == "offline"
        assert model_call.attributes["gen_ai.usage.input_tokens"] > 0
        assert model_call.attributes["chat.run.id"] == start["run_id"]
    assert sum(m.attributes["gen_ai.usage.output_tokens"] for m in model_calls) == done["usage"]["output_tokens"]
    assert tool.name == "execute_tool add_task"
    assert tool.attributes["gen_ai.tool.name"] == "add_task"
    assert tool.attributes["gen_ai.tool.call.id"] == call["call_id"]
    assert {run.trace_id, tool.trace_id, *(m.trace_id for m in model_calls)} == {request.trace_id}

    # The user's words stay out of every span unless asked for.
    assert not any("milk" in str(value) for span in receiver.spans for value in span.attributes.values())


def test_with_capture_content_the_words_are_in_the_model_and_tool_spans(settings, receiver):
    with TestClient(create_app(traced(settings, receiver, otel_capture_content=True)), timeout=30) as client:
        client.post("/api/alice/chat/stream", json={"message": "add buy milk"}, headers=auth("alice"))
    [tool] = receiver.named("execute_tool")
    assert "buy milk" in tool.attributes["gen_ai.tool.call.arguments"]
    assert "buy milk" in tool.attributes["gen_ai.tool.call.result"]
    first = next(s for s in receiver.named("chat ") if "gen_ai.output.messages" in s.attributes)
    assert "add buy milk" in first.attributes["gen_ai.input.messages"]


def test_a_websocket_is_a_span_its_runs_are_children_and_its_token_is_redacted(settings, receiver):
    token = token_for("alice")
    with TestClient(create_app(traced(settings, receiver)), timeout=30) as client, \
            client.websocket_connect(f"/api/alice/ws?token={token}") as ws:
        ws.send_json({"type": "chat", "message": "hello"})
        while ws.receive_json()["type"] != "done":
            pass
    [socket] = [s for s in receiver.spans if s.kind == SERVER and s.name.endswith("/api/{user_id}/ws")]
    [run] = receiver.children(socket)
    assert run.attributes["chat.transport"] == "websocket" and run.attributes["chat.run.status"] == "completed"
    assert not any(token in str(value) for span in receiver.spans for value in span.attributes.values())
    assert "[redacted]" in socket.attributes["http.url"]


def test_without_an_endpoint_nothing_of_the_sdk_is_loaded(settings):
    code = (
        "import sys; from app.main import create_app; from app.settings import Settings; "
        f"create_app(Settings(data_dir={settings.data_dir!r}, jwt_secret='x' * 40)); "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
