"""One run executing here: the agents SDK's stream as chat events, and what a run leaves behind.

``unfinished_tool_result`` is the one rule for a tool call a Stop, a failure or a crash cut
short; every place that shows or stores such a call (the run's outcome, crash recovery,
each protocol's translator) asks it. ``cut_short_message`` is, likewise, the one wording of a
reply that failed or was cut short by a restart, for every protocol that says it in words.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import msgspec
import openai
from agents import Agent, RunConfig, Runner, RunState
from agents.exceptions import ModelBehaviorError
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from domain import conversations, events, log_context, text
from domain.approvals import PendingCall, declined, describe
from domain.conversations import ToolRecord
from domain.events import DoneStatus, Usage
from domain.limits import Limits
from domain.runs.failures import classify
from domain.runs.log import RunLog
from domain.runs.observer import NO_OBSERVER, RunObserver, Transport
from domain.runs.store import Continuation, FinishedRun, NewRun, RunRecord, now
from domain.runs.tracing import NO_TRACER, RunStarted, RunTracer
from domain.tools import TodoContext

logger = logging.getLogger(__name__)


def unfinished_tool_result(status: DoneStatus) -> dict[str, str]:
    """The result recorded for a tool call that never returned."""
    return {"error": f"stopped before it finished ({status})"}


CUT_SHORT = {
    "failed": "The reply failed.",
    "interrupted": "The server restarted; the reply was cut short.",
}


def cut_short_message(status: DoneStatus) -> str | None:
    """What a client is told of a reply that ended ``status`` without its answer, where its
    protocol says it in words (a failure without an ``error`` event before, or a restart);
    None for an ending that needs no words (completed, Stop, waiting for approval)."""
    return CUT_SHORT.get(status)


class ToolCallView(msgspec.Struct, frozen=True):
    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None


class RunReply(msgspec.Struct, frozen=True):
    """A finished run, for clients that do not stream."""

    conversation_id: str
    run_id: str
    status: DoneStatus
    response: str
    tool_calls: list[ToolCallView]
    error: events.Error | None = None

    @classmethod
    def of(cls, stored: Iterable[events.Event]) -> RunReply:
        """The reply a finished run's events tell (a run that ran elsewhere, or before)."""
        stored = list(stored)
        start = next(event for event in stored if isinstance(event, events.Start))
        error = next((event for event in stored if isinstance(event, events.Error)), None)
        done = next((event for event in reversed(stored) if isinstance(event, events.Done)), None)
        transcript = Transcript.of(stored)
        return cls(conversation_id=start.conversation_id, run_id=start.run_id,
                   status=done.status if done else "failed", response="".join(transcript.text),
                   tool_calls=transcript.views(), error=error)


class Transcript:
    """What a run has said so far: its text and tool calls, kept as events are emitted, so a
    run cut short still saves what its clients saw."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tools: dict[str, tuple[datetime, ToolRecord]] = {}

    def called(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self.tools[call_id] = (now(), ToolRecord(call_id, name, arguments))

    def returned(self, call_id: str, result: Any) -> ToolRecord:
        at, call = self.tools.get(call_id, (now(), ToolRecord(call_id, "", {})))
        self.tools[call_id] = (at, msgspec.structs.replace(call, result=result))
        return call

    def views(self) -> list[ToolCallView]:
        return [ToolCallView(t.call_id, t.name, t.arguments, t.result) for _, t in self.tools.values()]

    def finished_tools(self, status: DoneStatus) -> list[tuple[datetime, ToolRecord]]:
        if status == "awaiting_approval":  # the calls waiting are stored by the continuation
            return [(at, tool) for at, tool in self.tools.values() if tool.result is not None]
        return [
            (at, tool if tool.result is not None else msgspec.structs.replace(tool, result=unfinished_tool_result(status)))
            for at, tool in self.tools.values()
        ]

    @classmethod
    def of(cls, stored: Iterable[events.Event]) -> Transcript:
        """A transcript rebuilt from a run's stored events (crash recovery)."""
        transcript = cls()
        for event in stored:
            if isinstance(event, events.Text):
                transcript.text.append(event.content)
            elif isinstance(event, events.ToolCall):
                transcript.called(event.call_id, event.name, event.arguments)
            elif isinstance(event, events.ToolResult) and event.call_id in transcript.tools:
                transcript.returned(event.call_id, event.result)
        return transcript

    def outcome(self, new: NewRun | RunRecord, run_id: str, user_id: str, status: DoneStatus, usage: Usage = Usage(),
                error_code: str | None = None, pending: list[PendingCall] | None = None,
                state: str | None = None) -> FinishedRun:
        return FinishedRun(
            run_id=run_id, user_id=user_id, conversation_id=new.conversation_id, message_id=new.message_id, status=status,
            text="".join(self.text), tools=self.finished_tools(status),
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, error_code=error_code,
            pending=pending or [], state=state,
        )


class ActiveRun:
    """One run executing in this process: its log, what it said, and how it is stopped.

    Only the run changes its own state: ``stop`` asks, ``execute`` ends it with exactly one
    ``done``, ``finished`` is set once that ``done`` is in the log.

    Durable before visible: an event the run emits waits in ``_unsaved`` (``on_event`` tells
    the group commit) and reaches the log, so any reader, only once the store has it. Its
    ``start`` was stored with the run."""

    def __init__(self, new: NewRun, user_id: str, on_event: Callable[[ActiveRun], None], observer: RunObserver = NO_OBSERVER,
                 transport: Transport = "other", asked_at: float | None = None, tracer: RunTracer = NO_TRACER):
        self.id = new.run_id
        self.user_id = user_id
        self.conversation_id = new.conversation_id
        self.message_id = new.message_id
        self.new = new
        self.log = RunLog()
        self.log.append(new.start)
        self.transcript = Transcript()
        self._unsaved: list[bytes] = []
        self._seq = 1  # of the last event emitted
        self._taken = 1  # events handed to the store (start came with the run)
        self._on_event = on_event
        self.status: DoneStatus | None = None
        self.error: events.Error | None = None
        self.usage = Usage()
        self.finished = asyncio.Event()  # done is in the log
        self._stop_reason: DoneStatus | None = None
        self._task: asyncio.Task[None] | None = None
        self._began = False
        self.pending: list[PendingCall] = []  # calls waiting for approval, once it ends so
        self._state: str | None = None  # the agent's state they resume from
        # Monitoring: waits are measured from when the start was asked for (time.perf_counter).
        self.observer = observer
        self.tracer = tracer
        self.transport = transport
        self._asked_at = time.perf_counter() if asked_at is None else asked_at
        self._said_anything = False
        self._stop_asked_at: float | None = None

    # -- control ----------------------------------------------------------------------------

    def launch(self, execution: Any, name: str) -> None:
        self._task = asyncio.create_task(execution, name=name)
        self.observer.run_started(self.transport)

    @property
    def task(self) -> asyncio.Task[None]:
        """Ends once the run's outcome is stored."""
        assert self._task is not None, "launched first"
        return self._task

    def stop(self, reason: DoneStatus) -> None:
        """Stop the model and any running tool now; the run still ends with ``done``."""
        if self._stop_reason is None and not self.finished.is_set() and self._task is not None:
            self._stop_reason = reason
            self._stop_asked_at = time.perf_counter()
            # A task cancelled before its first step never runs its body (no done, no save):
            # one that has not begun sees the reason when it does.
            if self._began:
                self._task.cancel()

    # -- events -----------------------------------------------------------------------------

    def _emit(self, kind: type[events.Event], **fields: Any) -> events.Event:
        if not self._said_anything:
            self._first_said(text=False)
        self._seq += 1
        event = kind(run_id=self.id, seq=self._seq, **fields)
        self._unsaved.append(events.encode(event))
        self._on_event(self)
        return event

    def take_unsaved(self) -> tuple[int, list[bytes]]:
        """The events not yet handed to the store, and the seq of the first."""
        unsaved, self._unsaved = self._unsaved, []
        first, self._taken = self._taken + 1, self._taken + len(unsaved)
        return first, unsaved

    def on_sdk_event(self, sdk_event: StreamEvent) -> None:
        """Translate one agents SDK event to chat events."""
        if isinstance(sdk_event, RawResponsesStreamEvent):
            if isinstance(sdk_event.data, ResponseTextDeltaEvent) and (delta := sdk_event.data.delta):
                if delta.__class__ is not str:  # the stock client builds events without checking them
                    raise ModelBehaviorError("The model provider sent a text delta that is not text.")
                if "\x00" in delta:
                    delta = text.clean(delta)  # what PostgreSQL could not store
                # Most events are these: spelled out, without _emit's keyword dicts (1.07 -> 0.5 µs).
                self._seq += 1
                try:
                    payload = events.encode(events.Text(run_id=self.id, seq=self._seq, content=delta))
                except UnicodeEncodeError:  # a lone surrogate from the provider
                    delta = text.clean(delta)
                    payload = events.encode(events.Text(run_id=self.id, seq=self._seq, content=delta))
                if not self.transcript.text:
                    self._first_said(text=True)
                self.transcript.text.append(delta)
                self._unsaved.append(payload)
                self._on_event(self)
        elif isinstance(sdk_event, RunItemStreamEvent):
            if sdk_event.name == "tool_called":
                raw = sdk_event.item.raw_item
                call_id, name = text.clean(getattr(raw, "call_id", "")), text.clean(getattr(raw, "name", ""))
                arguments = text.clean_value(_json_object(getattr(raw, "arguments", "") or "{}"))
                self.transcript.called(call_id, name, arguments)
                self._emit(events.ToolCall, call_id=call_id, name=name, arguments=arguments)
            elif sdk_event.name == "tool_output":
                raw = sdk_event.item.raw_item
                call_id = raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", "")
                result = text.clean_value(_json_value(sdk_event.item.output))
                call = self.transcript.returned(call_id, result)
                refused = isinstance(result, dict) and "error" in result  # how the tools say no
                self.observer.tool_returned(call.name, "error" if refused else "ok")
                self._emit(events.ToolResult, call_id=call_id, name=call.name, result=result)

    def _first_said(self, text: bool) -> None:
        """The run's first event, or its first text: how long its user waited for it."""
        waited = time.perf_counter() - self._asked_at
        if not self._said_anything:
            self._said_anything = True
            self.observer.first_event(self.transport, waited)
        if text:
            self.observer.first_text(self.transport, waited)

    # -- the run ----------------------------------------------------------------------------

    async def execute(self, agent: Agent[TodoContext], context: TodoContext, limits: Limits, tracing: bool,
                      history: list[dict[str, Any]] | None, resume: Continuation | None = None) -> bytes:
        """Run the agent to its end, a Stop or a failure; the ``done`` event to close the log with."""
        self._began = True
        log_context.enter_run(self.id, self.user_id)  # this task's log lines name the run and its user
        trace = self.tracer.start(RunStarted(run_id=self.id, conversation_id=self.conversation_id, agent=agent.name,
                                             transport=self.transport, continuation=resume is not None))
        result = None
        deadline = asyncio.timeout(limits.max_run_duration_s)
        try:
            async with deadline:
                if self._stop_reason is not None:
                    raise asyncio.CancelledError  # stopped before it began
                # A copy per run: the SDK checks every run of one Agent object against all its
                # other live runs at each turn, a cost that grows with concurrency (500 paced
                # replies: 50 -> 43 us of CPU per event for the SDK alone). A shallow copy, as
                # agent.clone() makes, without re-running the Agent's checks (71 -> 2 us per run).
                agent = copy.copy(agent)
                given: list[dict[str, Any]] | RunState[Any, Any]
                if resume is not None:
                    given = await self._decided_state(agent, context, resume)
                elif history is None:
                    given = conversations.history_items(
                        await conversations.list_messages(self.conversation_id, include_hidden=True)
                    )
                else:
                    given = history
                result = Runner.run_streamed(
                    agent, given, context=context, max_turns=limits.max_turns, hooks=trace.hooks,
                    # Traces (when switched on) leave the machine: keep users' words out of them.
                    run_config=RunConfig(tracing_disabled=not tracing, trace_include_sensitive_data=False),
                )
                async for sdk_event in result.stream_events():
                    self.on_sdk_event(sdk_event)
            self.status = "awaiting_approval" if self._await_approval(result) else "completed"
        except asyncio.CancelledError:
            # Stop, not crash: the run still ends with its done event and its text saved.
            self.status = self._stop_reason or "cancelled"
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error event
            if deadline.expired():
                code, message = "limit_exceeded", (
                    f"The reply took longer than {limits.max_run_duration_s:g} s and was stopped."
                )
            else:
                code, message = classify(exc)
            # A provider's error body can echo the API key: log its type, not its text.
            provider_error = isinstance(exc, openai.APIError)
            logger.warning("run %s failed: %s (%s)", self.id, code, type(exc).__name__,
                        exc_info=None if provider_error else exc)
            self.status = "failed"
            self.error = self._emit(events.Error, code=code, message=message)  # type: ignore[assignment]
        finally:
            # Leaving the stream does not stop the SDK: without this it goes on calling tools.
            if result is not None:
                result.cancel()
                u = result.context_wrapper.usage
                self.usage = Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens)
        logger.info("run %s %s", self.id, self.status)
        trace.end(self.status, self.error.code if self.error else None, self.usage.input_tokens,
                  self.usage.output_tokens)
        for _, tool in self.transcript.tools.values():
            if tool.result is None:
                self.observer.tool_returned(tool.name, "unfinished")
        reported = self.usage if self.usage.input_tokens or self.usage.output_tokens else None
        self._seq += 1
        return events.encode(events.Done(run_id=self.id, seq=self._seq, status=self.status, usage=reported))

    async def _decided_state(self, agent: Agent[TodoContext], context: TodoContext,
                             resume: Continuation) -> RunState[Any, Any]:
        """The interrupted run's state with the user's decisions applied; the calls it resumes
        are known to the transcript, so their results are stored with them."""
        state = await RunState.from_string(agent, resume.state, context_override=context)
        decisions = {decision.call_id: decision for decision in resume.decisions}
        for call in resume.pending:
            self.transcript.called(call.call_id, call.name, call.arguments)
        for item in state.get_interruptions():
            decision = decisions.get(item.call_id or "")
            if decision is not None and decision.approve:
                state.approve(item)
            else:
                state.reject(item, rejection_message=declined(decision and decision.reason))
        return state

    def _await_approval(self, result: Any) -> bool:
        """A run that stopped at tools needing approval: ask, and keep the state to resume."""
        if not result.interruptions:
            return False
        for item in result.interruptions:
            raw = item.raw_item
            call = PendingCall(
                call_id=text.clean(getattr(raw, "call_id", "") or ""), name=text.clean(item.tool_name or ""),
                arguments=text.clean_value(_json_object(getattr(raw, "arguments", "") or "{}")),
            )
            self.pending.append(call)
            self._emit(events.ApprovalRequest, call_id=call.call_id, name=call.name, arguments=call.arguments,
                       description=describe(call.name, call.arguments))
        # The context holds the database engine: it is the server's, given back on resume.
        self._state = result.to_state().to_string(context_serializer=lambda _: {})
        return True

    def close(self, stored: list[bytes]) -> None:
        """The last events, ``done`` among them, are stored: show them, and end the run."""
        self.log.extend(stored, last=True)
        self.finished.set()
        status = self.status or "failed"
        self.observer.run_finished(self.transport, status, self.error.code if self.error else None,
                                   self.usage.input_tokens, self.usage.output_tokens)
        if status == "cancelled" and self._stop_asked_at is not None:
            self.observer.cancelled(time.perf_counter() - self._stop_asked_at)

    def outcome(self) -> FinishedRun:
        status = self.status or "failed"
        return self.transcript.outcome(self.new, self.id, self.user_id, status, self.usage,
                                       self.error.code if self.error else None, self.pending, self._state)

    def reply(self) -> RunReply:
        return RunReply(
            conversation_id=self.conversation_id, run_id=self.id, status=self.status or "failed",
            response="".join(self.transcript.text), tool_calls=self.transcript.views(),
            error=self.error,
        )


def _json_value(output: Any) -> Any:
    if isinstance(output, str):
        try:
            return json.loads(output)
        except ValueError:
            return output
    return msgspec.to_builtins(output, str_keys=True, enc_hook=str)


def _json_object(text: str) -> dict[str, Any]:
    value = _json_value(text)
    return value if isinstance(value, dict) else {"value": value}
