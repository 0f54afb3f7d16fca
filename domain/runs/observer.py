"""What runs report for monitoring: a seam the app fills in (``app/metrics.py``, Prometheus).

The default reports nothing. Every method is called on the event loop and must be cheap and
never raise: none is called per event (``streamed`` comes once per batch a transport sends;
the rest once per run, tool call or group commit).
"""

from __future__ import annotations

Transport = str
"""Which wire protocol started or streams a run: ``sse``, ``ai_sdk``, ``ai_sdk_ws``, ``chatkit``, ``websocket``,
``rest``; ``other`` when a caller did not say."""


class RunObserver:
    def run_started(self, transport: Transport) -> None:
        """A run began (its row is stored)."""

    def first_event(self, transport: Transport, seconds: float) -> None:
        """The run's first event after ``start`` (text, tool call or error), ``seconds`` after
        the start was asked for."""

    def first_text(self, transport: Transport, seconds: float) -> None:
        """The run's first text, ``seconds`` after the start was asked for."""

    def tool_returned(self, name: str, outcome: str) -> None:
        """A tool call ended: ``ok``, ``error`` (the tool said so) or ``unfinished`` (the run
        stopped first)."""

    def run_finished(self, transport: Transport, status: str, error_code: str | None,
                     input_tokens: int, output_tokens: int) -> None:
        """The run's ``done`` is stored and shown."""

    def cancelled(self, seconds: float) -> None:
        """A cancelled run's ``done`` is stored and shown, ``seconds`` after Stop reached this
        process."""

    def committed(self, seconds: float) -> None:
        """One write of run events to the store took ``seconds``."""

    def streamed(self, transport: Transport, events: int) -> None:
        """A transport sent ``events`` chat events to a client."""

    def feedback_given(self, rating: str) -> None:
        """A user rated a reply ``up`` or ``down`` (rating it again counts again)."""


NO_OBSERVER = RunObserver()
