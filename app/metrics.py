"""Prometheus metrics at ``GET /metrics``: HTTP requests from Litestar's Prometheus plugin, and
the chat's own from ``ChatMetrics``, the domain's ``RunObserver`` counted with prometheus_client.

Chat metrics live in a registry of the app's own (several apps can share a test process).
Under ``serve --workers N`` every worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (the CLI provides one) and a scrape of any worker sums them all:
prometheus_client's multi-process mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator

from litestar import Response, get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import Guard
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from domain import conversations
from domain.runs.observer import RunObserver, Transport

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_EVERY_S = 1.0

HTTP = PrometheusConfig(
    app_name="chat-server", prefix="chat_http",
    # Paths as routed (/api/{user_id:str}/chat), not as sent: one series per route, not per user.
    group_path=True,
)
"""Litestar's plugin: requests, their duration, errors and those in progress, per route."""

WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
QUICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ChatMetrics(RunObserver):
    def __init__(self, model: str):
        self.model = model
        self.registry = registry = CollectorRegistry()
        self.runs_started = Counter("chat_runs_started", "Runs started, by the transport that started them",
                                    ["transport"], registry=registry)
        self.runs_finished = Counter("chat_runs_finished", "Runs whose done was stored, by status and transport",
                                     ["transport", "status"], registry=registry)
        # livesum: the workers' values added up, a dead worker's left out.
        self.runs_active = Gauge("chat_runs_active", "Runs executing now", ["transport"], registry=registry,
                                 multiprocess_mode="livesum")
        self.time_to_first_event = Histogram(
            "chat_time_to_first_event_seconds", "From a start request to the run's first event after start",
            ["transport"], buckets=WAIT_BUCKETS, registry=registry)
        self.time_to_first_text = Histogram(
            "chat_time_to_first_text_seconds", "From a start request to the run's first text",
            ["transport"], buckets=WAIT_BUCKETS, registry=registry)
        self.events_streamed = Counter("chat_events_streamed", "Chat events sent to clients, by transport",
                                       ["transport"], registry=registry)
        self.cancel_latency = Histogram(
            "chat_cancel_latency_seconds", "From Stop reaching the server to the cancelled run's done stored",
            buckets=QUICK_BUCKETS, registry=registry)
        self.tool_calls = Counter("chat_tool_calls", "Tool calls, by tool and outcome (ok, error, unfinished)",
                                  ["tool", "outcome"], registry=registry)
        self.model_errors = Counter("chat_model_errors", "Runs that failed, by error code", ["code"],
                                    registry=registry)
        self.tokens = Counter("chat_tokens", "Tokens the model read (input) and wrote (output)", ["model", "type"],
                              registry=registry)
        self.store_commit = Histogram("chat_store_commit_seconds", "One write of run events to the database",
                                      buckets=QUICK_BUCKETS, registry=registry)
        # Counted in the database at each scrape (decisions come from any instance, after any
        # restart); under several workers the scraped one's count is the one shown.
        self.approvals_pending = Gauge("chat_approvals_pending", "Tool calls waiting for the user's decision",
                                       registry=registry, multiprocess_mode="mostrecent")
        # The broker between instances (app/broker.py). livemin: 0 when any live worker is deaf.
        self.broker_listening_gauge = Gauge(
            "chat_broker_listening", "1 while messages from other instances reach this one through the broker",
            registry=registry, multiprocess_mode="livemin")
        self.broker_reconnects = Counter("chat_broker_reconnects", "Times the broker was lost and subscribed to again",
                                         registry=registry)
        self.broker_publish_failures = Counter(
            "chat_broker_publish_failures", "Cancels and notices the broker could not take (away or too slow)",
            registry=registry)
        self.feedback = Counter("chat_feedback", "Replies rated by their users, by rating (up, down)", ["rating"],
                                registry=registry)
        # Counted in plain ints per batch and added to the counter at most once a second (and at
        # each scrape): a prometheus_client increment takes a lock, 1-3 µs.
        self._unflushed: dict[str, int] = {}

    # -- RunObserver ------------------------------------------------------------------------

    def run_started(self, transport: Transport) -> None:
        self.runs_started.labels(transport).inc()
        self.runs_active.labels(transport).inc()

    def first_event(self, transport: Transport, seconds: float) -> None:
        self.time_to_first_event.labels(transport).observe(seconds)

    def first_text(self, transport: Transport, seconds: float) -> None:
        self.time_to_first_text.labels(transport).observe(seconds)

    def tool_returned(self, name: str, outcome: str) -> None:
        self.tool_calls.labels(name, outcome).inc()

    def run_finished(self, transport: Transport, status: str, error_code: str | None,
                     input_tokens: int, output_tokens: int) -> None:
        self.runs_active.labels(transport).dec()
        self.runs_finished.labels(transport, status).inc()
        if error_code is not None:
            self.model_errors.labels(error_code).inc()
        if input_tokens:
            self.tokens.labels(self.model, "input").inc(input_tokens)
        if output_tokens:
            self.tokens.labels(self.model, "output").inc(output_tokens)

    def cancelled(self, seconds: float) -> None:
        self.cancel_latency.observe(seconds)

    def committed(self, seconds: float) -> None:
        self.store_commit.observe(seconds)

    def streamed(self, transport: Transport, events: int) -> None:
        self._unflushed[transport] = self._unflushed.get(transport, 0) + events

    def feedback_given(self, rating: str) -> None:
        self.feedback.labels(rating).inc()

    # -- app.broker.BrokerObserver -----------------------------------------------------------

    def broker_listening(self, listening: bool) -> None:
        self.broker_listening_gauge.set(1 if listening else 0)

    def broker_reconnected(self) -> None:
        self.broker_reconnects.inc()

    def broker_publish_failed(self) -> None:
        self.broker_publish_failures.inc()

    # -- exposition -------------------------------------------------------------------------

    def flush(self) -> None:
        unflushed, self._unflushed = self._unflushed, {}
        for transport, events in unflushed.items():
            self.events_streamed.labels(transport).inc(events)

    @contextlib.asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """While the app serves: what other workers' scrapes read is at most a second old."""

        async def flush_forever() -> None:
            while True:
                await asyncio.sleep(FLUSH_EVERY_S)
                self.flush()

        task = asyncio.create_task(flush_forever(), name="metrics-flush")
        try:
            yield
        finally:
            task.cancel()
            self.flush()
            if os.environ.get(MULTIPROCESS_DIR):
                multiprocess.mark_process_dead(os.getpid())  # its gauges no longer count

    async def exposition(self) -> bytes:
        self.flush()
        self.approvals_pending.set(await conversations.pending_approvals())
        if os.environ.get(MULTIPROCESS_DIR):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(REGISTRY) + generate_latest(self.registry)


def metrics_guard(token: str | None) -> list[Guard]:
    """``METRICS_TOKEN`` set: a scrape must send it as a bearer token."""
    if not token:
        return []
    expected = f"Bearer {token}".encode()

    def require_token(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        given = connection.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            raise NotAuthorizedException("This endpoint needs the metrics token.",
                                         headers={"WWW-Authenticate": "Bearer"})

    return [require_token]


def metrics_route(token: str | None) -> HTTPRouteHandler:
    @get("/metrics", include_in_schema=False, guards=metrics_guard(token))
    async def metrics(state: State) -> Response[bytes]:
        """Prometheus text format."""
        # The classic text format (0.0.4) every Prometheus reads; Litestar adds the charset.
        return Response(await state.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return metrics
