"""The run manager: start a run, follow its events, cancel it, finish and persist it.

A run lives apart from the connection that started it. Its events go to an in-memory log
while it runs and to the ``run_event`` table in batches, so readers can follow it live,
and resume it after a reconnect or a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

import msgspec
import openai
from agents import Agent, RunConfig, Runner
from agents.stream_events import RawResponsesStreamEvent, RunItemStreamEvent, StreamEvent
from openai.types.responses import ResponseTextDeltaEvent
from piccolo.engine.base import Engine

from domain import conversations, events, run_records
from domain.conversations import ToolRecord
from domain.errors import NotFound, RunActive, RunFinished, ShuttingDown
from domain.events import DoneStatus, Usage
from domain.failures import classify
from domain.run_log import RunLog
from domain.run_records import FinishedRun, NewRun, RunLimits
from domain.tools import TodoContext

log = logging.getLogger(__name__)


class RunSettings(msgspec.Struct, frozen=True):
    max_turns: int = 10
    lease_s: float = 15.0
    remote_poll_s: float = 0.1
    max_run_duration_s: float = 300.0
    limits: RunLimits = RunLimits()
    flush_interval_s: float = 0.25
    shutdown_grace_s: float = 5.0
    tracing: bool = False


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


class ActiveRun:
    """One run executing in this process."""

    def __init__(self, new: NewRun, user_id: str, agent_name: str):
        self.id = new.run_id
        self.user_id = user_id
        self.conversation_id = new.conversation_id
        self.message_id = new.message_id
        self.new = new
        self.log = RunLog()
        self.saved = 0  # events already in run_event
        self.stop_reason: DoneStatus | None = None
        self.task: asyncio.Task[None] | None = None
        self.began = False
        self.finished = asyncio.Event()  # done emitted
        self.persisted = asyncio.Event()  # outcome in the database
        self.text: list[str] = []
        self.tools: dict[str, tuple[datetime, ToolRecord]] = {}
        self.status: DoneStatus | None = None
        self.error: events.Error | None = None
        self.emit(events.Start, conversation_id=self.conversation_id, message_id=self.message_id, agent=agent_name)

    def next_event(self, kind: type[events.Event], **fields: Any) -> events.Event:
        return kind(run_id=self.id, seq=len(self.log) + 1, **fields)

    def emit(self, kind: type[events.Event], **fields: Any) -> events.Event:
        event = self.next_event(kind, **fields)
        self.log.append(events.encode(event))
        return event

    def on_sdk_event(self, sdk_event: StreamEvent) -> None:
        """Translate one agents SDK event to chat events."""
        if isinstance(sdk_event, RawResponsesStreamEvent):
            if isinstance(sdk_event.data, ResponseTextDeltaEvent) and (delta := sdk_event.data.delta):
                # Most events are these: spelled out, without emit's keyword dicts (1.07 -> 0.5 µs).
                self.text.append(delta)
                self.log.append(events.encode(events.Text(run_id=self.id, seq=len(self.log) + 1, content=delta)))
        elif isinstance(sdk_event, RunItemStreamEvent):
            if sdk_event.name == "tool_called":
                raw = sdk_event.item.raw_item
                call_id, name = getattr(raw, "call_id", ""), getattr(raw, "name", "")
                arguments = _json_object(getattr(raw, "arguments", "") or "{}")
                self.tools[call_id] = (run_records.now(), ToolRecord(call_id, name, arguments))
                self.emit(events.ToolCall, call_id=call_id, name=name, arguments=arguments)
            elif sdk_event.name == "tool_output":
                raw = sdk_event.item.raw_item
                call_id = raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", "")
                at, call = self.tools.get(call_id, (run_records.now(), ToolRecord(call_id, "", {})))
                result = _json_value(sdk_event.item.output)
                self.tools[call_id] = (at, msgspec.structs.replace(call, result=result))
                self.emit(events.ToolResult, call_id=call_id, name=call.name, result=result)

    def outcome(self, usage: Usage) -> FinishedRun:
        tools = [
            (at, tool if tool.result is not None else msgspec.structs.replace(
                tool, result={"error": f"stopped before it finished ({self.status})"}))
            for at, tool in self.tools.values()
        ]
        return FinishedRun(
            run_id=self.id, conversation_id=self.conversation_id, message_id=self.message_id,
            status=self.status or "failed", text="".join(self.text), tools=tools,
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            error_code=self.error.code if self.error else None,
        )

    def reply(self) -> RunReply:
        return RunReply(
            conversation_id=self.conversation_id, run_id=self.id, status=self.status or "failed",
            response="".join(self.text),
            tool_calls=[ToolCallView(t.call_id, t.name, t.arguments, t.result) for _, t in self.tools.values()],
            error=self.error,
        )


class CancelBroker(Protocol):
    """Carries cancel requests between server instances (a run executes on exactly one)."""

    async def request_cancel(self, run_id: str) -> None: ...

    def cancel_requests(self) -> AsyncIterator[str]: ...


class RunManager:
    def __init__(
        self,
        db: Engine,
        agent: Agent[TodoContext],
        settings: RunSettings = RunSettings(),
        broker: CancelBroker | None = None,
    ):
        self.db = db
        self.agent = agent
        self.settings = settings
        self.broker = broker
        self.instance = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._active: dict[str, ActiveRun] = {}
        self._background: list[asyncio.Task[None]] = []
        self._save_lock = asyncio.Lock()
        self._closed: asyncio.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        await self._sweep()
        self._background = [
            asyncio.create_task(self._flush_forever(), name="run-event-flusher"),
            asyncio.create_task(self._keep_leases_forever(), name="run-leases"),
        ]
        if self.broker is not None:
            self._background.append(asyncio.create_task(self._obey_cancels_forever(), name="run-cancels"))

    async def close(self) -> None:
        """End every active run as ``interrupted`` (text saved), then stop. Idempotent: the
        shutdown signal and the lifespan both call it."""
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closed)

    async def _close(self) -> None:
        runs = list(self._active.values())
        for run in runs:
            self.stop(run, "interrupted")
        if runs:
            waits = [asyncio.ensure_future(r.persisted.wait()) for r in runs]
            await asyncio.wait(waits, timeout=self.settings.shutdown_grace_s)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- commands --------------------------------------------------------------------

    async def start(
        self, user_id: str, message: str, conversation_id: str | None = None, *, again: str | None = None
    ) -> ActiveRun:
        """Start a reply to ``message``, or with ``again`` (a user message id) answer that
        earlier message anew, dropping what followed it."""
        if self._closed is not None:
            raise ShuttingDown("The server is shutting down; try again in a moment.")
        if conversation_id is not None:
            busy = next((r for r in self._active.values() if r.conversation_id == conversation_id), None)
            if busy is not None and busy.user_id == user_id:
                raise RunActive("A reply is still being written in this conversation; wait for it or cancel it.")
        begin = asyncio.ensure_future(run_records.begin_run(
            self.db, user_id, message, conversation_id, self.settings.limits, self.instance, again=again
        ))
        try:
            new = await asyncio.shield(begin)
        except asyncio.CancelledError:
            # The caller left mid-request (a client hung up): that is Stop. Once the run is
            # written, launch it stopped, so it still ends with done and leaves no "running" row.
            def launch_stopped(done: asyncio.Future[NewRun]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self.stop(self._launch(done.result(), user_id), "cancelled")

            begin.add_done_callback(launch_stopped)
            raise
        return self._launch(new, user_id, message if new.created_conversation else None)

    def _launch(self, new: NewRun, user_id: str, first_message: str | None = None) -> ActiveRun:
        run = ActiveRun(new, user_id, self.agent.name)
        self._active[run.id] = run
        # A conversation created by this start holds just that message: no need to read it back.
        history = None if first_message is None else [{"role": "user", "content": first_message}]
        run.task = asyncio.create_task(self._execute(run, history), name=f"run-{run.id}")
        return run

    async def cancel(self, user_id: str, run_id: str) -> None:
        run = self._active.get(run_id)
        if run is not None and run.user_id == user_id:
            if run.finished.is_set():
                raise RunFinished("This run has already finished.")
            self.stop(run, "cancelled")
            return
        record = await run_records.get_run(user_id, run_id)
        if record is None:
            raise NotFound("No such run.")
        if record.status != "running" or self.broker is None:
            raise RunFinished("This run has already finished.")
        # It runs on another instance: that one stops it when the broker tells it.
        await self.broker.request_cancel(run_id)

    async def follow(self, user_id: str, run_id: str) -> RunFollower:
        """A reader of a run's events, live or finished; ``NotFound`` for another user's run."""
        run = self._active.get(run_id)
        if run is not None and run.user_id == user_id:
            return RunFollower(run.log, run_id)
        record = await run_records.get_run(user_id, run_id)
        if record is None:
            raise NotFound("No such run.")
        # Running elsewhere: follow it through the run_event table until its done arrives.
        live = record.status == "running"
        return RunFollower(None, run_id, poll_s=self.settings.remote_poll_s if live else None)

    # -- execution -------------------------------------------------------------------

    def stop(self, run: ActiveRun, reason: DoneStatus) -> None:
        """Stop the model and any running tool now; the run still ends with ``done``."""
        if run.stop_reason is None and not run.finished.is_set() and run.task is not None:
            run.stop_reason = reason
            # A task cancelled before its first step never runs its body (no done, no save):
            # one that has not begun sees stop_reason when it does.
            if run.began:
                run.task.cancel()

    async def _execute(self, run: ActiveRun, history: list[dict[str, Any]] | None = None) -> None:
        run.began = True
        context = TodoContext(user_id=run.user_id, db=self.db)
        usage = Usage()
        result = None
        deadline = asyncio.timeout(self.settings.max_run_duration_s)
        try:
            async with deadline:
                if run.stop_reason is not None:
                    raise asyncio.CancelledError  # stopped before it began
                if history is None:
                    history = conversations.history_items(
                        await conversations.list_messages(run.conversation_id, include_hidden=True)
                    )
                result = Runner.run_streamed(
                    # A copy per run: the SDK checks every run of one Agent object against
                    # all its other live runs at each turn, a cost that grows with concurrency
                    # (500 paced replies: 50 -> 43 us of CPU per event for the SDK alone).
                    # A shallow copy, as agent.clone() makes, without re-running the Agent's
                    # checks of its fields (71 -> 2 us per run).
                    copy.copy(self.agent), history, context=context, max_turns=self.settings.max_turns,
                    # Traces (when switched on) leave the machine: keep users' words out of them.
                    run_config=RunConfig(
                        tracing_disabled=not self.settings.tracing, trace_include_sensitive_data=False
                    ),
                )
                async for sdk_event in result.stream_events():
                    run.on_sdk_event(sdk_event)
            run.status = "completed"
        except asyncio.CancelledError:
            # Stop, not crash: the run still ends with its done event and its text saved.
            run.status = run.stop_reason or "cancelled"
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error event
            if deadline.expired():
                code, message = "limit_exceeded", (
                    f"The reply took longer than {self.settings.max_run_duration_s:g} s and was stopped."
                )
            else:
                code, message = classify(exc)
            # A provider's error body can echo the API key: log its type, not its text.
            provider_error = isinstance(exc, openai.APIError)
            log.warning("run %s failed: %s (%s)", run.id, code, type(exc).__name__,
                        exc_info=None if provider_error else exc)
            run.status = "failed"
            run.error = run.emit(events.Error, code=code, message=message)
        finally:
            # Leaving the stream does not stop the SDK: without this it goes on calling tools.
            if result is not None:
                result.cancel()
                u = result.context_wrapper.usage
                usage = Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens)
        done = events.encode(run.next_event(
            events.Done, status=run.status, usage=usage if usage.input_tokens or usage.output_tokens else None
        ))
        # Saved before it is sent: a client that sees ``done`` and reloads finds the whole run.
        # A second cancel (shutdown) must not lose the outcome, so saving goes on regardless.
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(asyncio.ensure_future(self._persist(run, usage, done)))
        finally:
            run.log.append(done, last=True)
            run.finished.set()

    async def _persist(self, run: ActiveRun, usage: Usage, done: bytes) -> None:
        try:
            async with self._save_lock:
                unsaved = [*run.log.since(run.saved), done]
                await run_records.finish_run(self.db, run.outcome(usage), (run.saved + 1, unsaved))
                run.saved += len(unsaved)
        except Exception:
            log.exception("could not save run %s", run.id)
        finally:
            self._active.pop(run.id, None)
            run.persisted.set()

    async def _sweep(self) -> None:
        closed = await run_records.mark_interrupted(self.db, await run_records.stale_runs(self.settings.lease_s))
        if closed:
            log.warning("marked %d run(s) of a stopped server instance as interrupted", len(closed))

    async def _keep_leases_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await run_records.renew_leases(self.db, list(self._active))
                await self._sweep()
            except Exception:
                log.exception("could not renew run leases")

    async def _obey_cancels_forever(self) -> None:
        assert self.broker is not None
        while True:
            try:
                async for run_id in self.broker.cancel_requests():
                    if (run := self._active.get(run_id)) is not None:
                        self.stop(run, "cancelled")
            except Exception:
                log.exception("the cancel subscription failed; subscribing again")
                await asyncio.sleep(1)

    async def _flush_forever(self) -> None:
        """Save pending events of every active run in one batch, off the streaming path."""
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            async with self._save_lock:
                batches = []
                for run in list(self._active.values()):
                    if len(run.log) == run.saved:
                        continue
                    pending = run.log.since(run.saved)
                    batches.append((run.id, run.saved + 1, pending))
                    run.saved += len(pending)
                if not batches:
                    continue
                try:
                    await run_records.save_events(self.db, batches)
                except Exception:
                    log.exception("could not save run events; they stay in memory until the run ends")
                    for run_id, first, _ in batches:
                        if run := self._active.get(run_id):
                            run.saved = min(run.saved, first - 1)


class RunFollower:
    """Reads one run from a sequence number on: from memory while it runs here, else from
    the database (polling every ``poll_s`` while it runs on another instance)."""

    def __init__(self, log: RunLog | None, run_id: str, poll_s: float | None = None):
        self._log = log
        self.run_id = run_id
        self._poll_s = poll_s

    def batches(self, after: int = 0, idle_s: float | None = None) -> AsyncIterator[list[bytes]]:
        # The log's own reader, not wrapped in another generator: one hop less per batch.
        return self._log.read(after, idle_s) if self._log is not None else self._stored(after, idle_s)

    async def _stored(self, after: int, idle_s: float | None) -> AsyncIterator[list[bytes]]:
        cursor, quiet = after, 0.0
        while True:
            stored = await run_records.event_payloads(self.run_id, cursor)
            if stored:
                cursor += len(stored)
                quiet = 0.0
                yield stored
                if events.is_done(stored[-1]):
                    return
            if self._poll_s is None:
                return
            await asyncio.sleep(self._poll_s)
            quiet += self._poll_s
            if idle_s is not None and quiet >= idle_s:
                quiet = 0.0
                yield []


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
