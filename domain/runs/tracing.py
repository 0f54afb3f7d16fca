"""Traces of runs: a seam the app fills in (``app/tracing.py``, OpenTelemetry) when asked to.

The default traces nothing and costs nothing. A run asks its tracer for a ``RunTrace`` when it
begins; the trace may give the agents SDK ``hooks`` (called per model call and per tool call,
never per streamed event) and is ended once with the run's outcome.
"""

from __future__ import annotations

from typing import Any

import msgspec

from domain.runs.observer import Transport


class RunStarted(msgspec.Struct, frozen=True):
    run_id: str
    conversation_id: str
    agent: str
    transport: Transport
    continuation: bool  # it goes on from an approval


class RunTrace:
    hooks: Any = None  # an ``agents.RunHooks`` given to the SDK's run, or None

    def end(self, status: str, error_code: str | None, input_tokens: int, output_tokens: int) -> None:
        """The run's outcome, once, after its last model or tool call."""


class RunTracer:
    def start(self, run: RunStarted) -> RunTrace:
        """Called in the run's own task, so a trace can take the caller's context (the request
        that started it) as its parent."""
        return NO_TRACE


NO_TRACE = RunTrace()
NO_TRACER = RunTracer()
