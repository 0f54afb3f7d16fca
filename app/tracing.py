"""OpenTelemetry traces, sent over OTLP/HTTP: imported only when an endpoint is configured.

HTTP requests and WebSocket connections get a span each (Litestar's OpenTelemetry plugin, with
no span per ASGI send or receive: a stream sends an event at a time). Each run gets a span,
child of the request that started it, with one child per model call and per tool call, named
and attributed as the GenAI semantic conventions say. A user's words (messages, tool
arguments and results, model output) are never put in a span unless ``OTEL_CAPTURE_CONTENT=1``;
a ``?token=`` in a URL is redacted as in the logs.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import msgspec
from agents import Agent, ModelResponse, RunContextWrapper, RunHooks, Tool
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from app.log_redaction import redact
from app.settings import Settings
from domain.models import ModelProvider
from domain.runs.tracing import RunStarted, RunTrace, RunTracer

MAX_CONTENT_CHARS = 16 * 1024  # one captured attribute; a long history is cut, not the trace


class Tracing:
    """The app's tracer provider and what uses it: the HTTP plugin and the runs' tracer."""

    def __init__(self, settings: Settings, endpoint: str):
        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.capture_content = settings.otel_capture_content
        self.plugin = OpenTelemetryPlugin(OpenTelemetryConfig(
            tracer_provider=self.provider, exclude_spans=["receive", "send"],
            server_request_hook_handler=_redact_url,
        ))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Names the request's span after its route (``POST /api/{user_id}/chat/stream``) once
        routing has found it: the instrumentation, outside the router, only knows the path,
        which holds a user id."""

        async def named(scope: Scope, receive: Receive, send: Send) -> None:
            template = scope.get("path_template")
            span = trace.get_current_span()
            if template and span.is_recording():
                span.update_name(f"{scope['method']} {template}" if scope["type"] == "http" else template)
                span.set_attribute("http.route", template)
            await app(scope, receive, send)

        return named

    def run_tracer(self, provider: ModelProvider) -> RunTracer:
        return OTelRunTracer(self.provider.get_tracer("chat_server.runs"), provider, self.capture_content)

    def shutting_down(self, stack: AsyncExitStack) -> None:
        """Spans still batched are sent when the app stops (off the event loop: it waits for
        the collector)."""
        stack.push_async_callback(asyncio.to_thread, self.provider.shutdown)


def _redact_url(span: Span, scope: dict[str, Any]) -> None:
    """The instrumentation records the query string; a WebSocket may carry ``?token=`` there."""
    query = scope.get("query_string") or b""
    if span.is_recording() and query:
        redacted = redact(query.decode("latin-1"))
        target = f"{scope.get('path', '')}?{redacted}"
        span.set_attribute("http.target", target)
        span.set_attribute("url.query", redacted)  # the newer conventions' name (OTEL_SEMCONV_STABILITY_OPT_IN)
        server = scope.get("server") or ("", None)
        scheme = scope.get("scheme", "http")
        span.set_attribute("http.url", f"{scheme}://{server[0]}{f':{server[1]}' if server[1] else ''}{target}")


def _content(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value, enc_hook=_plain).decode()
    return text[:MAX_CONTENT_CHARS]


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(exclude_none=True) if dump else str(value)


class OTelRunTracer(RunTracer):
    def __init__(self, tracer: trace.Tracer, provider: ModelProvider, capture_content: bool):
        self.tracer = tracer
        self.provider = provider
        self.capture_content = capture_content

    def start(self, run: RunStarted) -> RunTrace:
        span = self.tracer.start_span(f"invoke_agent {run.agent}", kind=SpanKind.INTERNAL, attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": run.agent,
            "gen_ai.provider.name": self.provider.name,
            "gen_ai.request.model": self.provider.model_name,
            "gen_ai.conversation.id": run.conversation_id,
            "chat.run.id": run.run_id,
            "chat.transport": run.transport,
            "chat.run.continuation": run.continuation,
        })
        return OTelRunTrace(self, span, run.run_id)


class OTelRunTrace(RunTrace):
    """A run's span and its open children: one model call at a time, tool calls by call id."""

    def __init__(self, tracer: OTelRunTracer, span: Span, run_id: str):
        self.tracer = tracer
        self.span = span
        self.run_id = run_id
        self.parent: Context = trace.set_span_in_context(span)
        self.model_call: Span | None = None
        self.tool_calls: dict[str, Span] = {}
        self.hooks = _Hooks(self)

    def child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        return self.tracer.tracer.start_span(name, context=self.parent, kind=kind, attributes=attributes)

    def end(self, status: str, error_code: str | None, input_tokens: int, output_tokens: int) -> None:
        for open_span in [self.model_call, *self.tool_calls.values()]:
            if open_span is not None:  # cut short by a Stop, a failure or the time limit
                open_span.set_status(Status(StatusCode.ERROR, status))
                open_span.end()
        self.span.set_attributes({
            "chat.run.status": status, "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
        })
        if error_code is not None:
            self.span.set_attribute("error.type", error_code)
            self.span.set_status(Status(StatusCode.ERROR, error_code))
        self.span.end()


class _Hooks(RunHooks[Any]):
    """The agents SDK's run hooks: called once per model call and per tool call."""

    def __init__(self, run: OTelRunTrace):
        self.run = run
        self.capture = run.tracer.capture_content

    async def on_llm_start(self, context: RunContextWrapper[Any], agent: Agent[Any], system_prompt: str | None,
                           input_items: list[Any]) -> None:
        provider = self.run.tracer.provider
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider.name,
            "gen_ai.request.model": provider.model_name, "chat.run.id": self.run.run_id,
        }
        if self.capture:
            attributes["gen_ai.input.messages"] = _content(input_items)
            if system_prompt:
                attributes["gen_ai.system_instructions"] = _content(system_prompt)
        self.run.model_call = self.run.child(f"chat {provider.model_name}", SpanKind.CLIENT, attributes)

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        span, self.run.model_call = self.run.model_call, None
        if span is None:
            return
        span.set_attributes({
            "gen_ai.usage.input_tokens": response.usage.input_tokens,
            "gen_ai.usage.output_tokens": response.usage.output_tokens,
        })
        if response.response_id:
            span.set_attribute("gen_ai.response.id", response.response_id)
        if self.capture:
            span.set_attribute("gen_ai.output.messages", _content(response.output))
        span.end()

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool) -> None:
        call_id = getattr(context, "tool_call_id", "") or ""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool.name, "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": call_id, "chat.run.id": self.run.run_id,
        }
        if self.capture and (arguments := getattr(context, "tool_arguments", None)):
            attributes["gen_ai.tool.call.arguments"] = _content(arguments)
        self.run.tool_calls[call_id] = self.run.child(f"execute_tool {tool.name}", SpanKind.INTERNAL, attributes)

    async def on_tool_end(self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: Any) -> None:
        span = self.run.tool_calls.pop(getattr(context, "tool_call_id", "") or "", None)
        if span is None:
            return
        if self.capture:
            span.set_attribute("gen_ai.tool.call.result", _content(result))
        span.end()
