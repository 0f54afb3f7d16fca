"""Where runs are kept: the ``RunStore`` interface, its records, and the SQL both engines share.

One verb per method. The SQL lives here once; ``sqlite_store`` and ``postgres_store`` only
say how their driver runs a statement (the engines differ in placeholders, key types and
whether a call awaits), so no run logic ever asks which engine it has.

Writes go by the driver inside the engine's transaction: Piccolo builds and renders a query
string per row object, the driver runs one prepared statement (measured: ≈ 1.6 µs of the
server's ≈ 22 per streamed event was the insert alone). Reads go through Piccolo.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import msgspec
from piccolo.engine.base import Engine

from domain import events
from domain.approvals import SUPERSEDED, Decision, PendingCall, declined
from domain.conversations import HIDDEN_STOPPED_NOTE, MessageView, ToolRecord, parse_id
from domain.errors import AlreadyDecided, DatabaseUnavailable, InvalidInput, NotFound, RunActive
from domain.events import RunStatus
from domain.limits import PER_MINUTE, Limits, usage_day
from domain.tables import (
    APPROVAL_TABLE,
    CONVERSATION_TABLE,
    MESSAGE_TABLE,
    RUN_EVENT_TABLE,
    RUN_TABLE,
    USAGE_TABLE,
    Conversation,
    Run,
    RunEvent,
)

TITLE_CHARS = 60


class RunRecord(msgspec.Struct, frozen=True):
    id: str
    conversation_id: str
    user_id: str
    status: RunStatus
    message_id: str


class NewRun(msgspec.Struct, frozen=True):
    run_id: str
    conversation_id: str
    message_id: str  # of the assistant's reply to come
    created_conversation: bool
    title: str | None
    user_message: MessageView | None  # the message it answers; None: a continuation
    start: bytes  # the run's first event, stored with it


class FinishedRun(msgspec.Struct, frozen=True):
    run_id: str
    user_id: str
    conversation_id: str
    message_id: str
    status: RunStatus
    text: str
    tools: list[tuple[datetime, ToolRecord]]
    input_tokens: int = 0
    output_tokens: int = 0
    error_code: str | None = None
    # ``awaiting_approval``: the calls waiting for a decision and the agent's state.
    pending: list[PendingCall] = []
    state: str | None = None


class Continuation(msgspec.Struct, frozen=True):
    """Every call of an ``awaiting_approval`` run decided: the run that goes on from its state."""

    new: NewRun
    state: str
    pending: list[PendingCall]
    decisions: list[Decision]


class Decided(msgspec.Struct, frozen=True):
    """A decision recorded: the continuation once it was the last, else the calls still open."""

    continuation: Continuation | None
    waiting_for: list[str]


class AlreadySent(Exception):
    """``begin_run`` found the run a client's message id already started."""

    def __init__(self, record: RunRecord):
        super().__init__(record.id)
        self.record = record


EventBatch = tuple[str, int, Sequence[bytes]]
"""(run id, seq of the first event, the events' payloads)."""


class RunStore(Protocol):
    async def begin_run(
        self, user_id: str, message: str, conversation_id: str | None, limits: Limits, agent: str,
        *, again: str | None = None, client_message_id: str | None = None,
        client_conversation_id: str | None = None,
    ) -> NewRun:
        """The user's message, a running run and its ``start`` event, in one transaction;
        nothing on refusal. With ``again`` (an earlier user message's id) what followed that
        message is dropped instead (and with a ``message`` too, that message now says it: an
        edit). ``AlreadySent`` when the user's ``client_message_id``
        started a run before. A new conversation may be known by the client's own id too
        (``client_conversation_id``)."""

    async def save_events(self, batches: Sequence[EventBatch], *, retry: bool = False) -> None:
        """Append events of several runs, in one transaction. ``retry``: the same batches again
        after a failure, when the first attempt may have landed after all (its COMMIT's answer
        never came): then nothing is written twice."""

    async def finish_run(self, run: FinishedRun, unsaved: EventBatch) -> None:
        """The outcome, its messages and the events not saved yet, atomically; nothing when the
        run has ended already (an earlier attempt landed, or another instance closed it)."""

    async def decide(self, user_id: str, run_id: str, decision: Decision, limits: Limits, agent: str) -> Decided:
        """Record the user's decision on a call of their ``awaiting_approval`` run; the last
        one starts the continuation in the same transaction. ``NotFound`` for another user's
        run or an unknown call, ``AlreadyDecided`` for a decided one; nothing on refusal."""

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        """Delete the user's conversation with its messages, runs and events; False when the
        user has no such conversation; ``RunActive`` while a reply runs in it."""

    async def conversation_of_client(self, user_id: str, client_id: str) -> str | None:
        """The user's conversation a client knows by its own id, if there is one."""

    async def running_run(self, user_id: str, conversation_id: str) -> RunRecord | None:
        """The user's reply running in the conversation, if there is one."""

    async def claim_run(self, run_id: str, status: RunStatus) -> bool:
        """Mark a running run ``status``; False when another instance got there first."""

    async def request_cancel(self, user_id: str, run_id: str) -> bool:
        """Mark the user's running run as to be stopped; False when it is not running (or not
        theirs). The instance running it learns it from ``cancels_requested``."""

    async def cancels_requested(self) -> list[str]:
        """The running runs someone asked to stop (``request_cancel``)."""

    async def get_run(self, user_id: str, run_id: str) -> RunRecord | None: ...

    async def event_payloads(self, run_id: str, after: int = 0, rows: int | None = None) -> list[bytes]:
        """The stored events with seq > ``after``, in order; with ``rows``, only those of the
        first that many rows (a page)."""

    async def renew_leases(self, run_ids: Sequence[str]) -> None: ...

    async def begin_serving(self, close_dead_runs: Callable[[], Awaitable[None]]) -> None:
        """This process serves the database until ``end_serving``. Where the store can know no
        other process serves it, every run still ``running`` was left by a dead one:
        ``close_dead_runs`` runs then, before any other process can start one."""

    async def end_serving(self) -> None: ...

    async def stale_runs(self, lease_s: float) -> list[RunRecord]:
        """Runs still ``running`` whose instance stopped renewing their lease."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def title_for(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


# -- the statements (``$n`` placeholders; the SQLite store rewrites them once) --------------

LIMIT_COUNTS = (
    f"SELECT (SELECT COUNT(*) FROM {RUN_TABLE} WHERE user_id = $1 AND status = 'running') AS active, "
    f"(SELECT COUNT(*) FROM {RUN_TABLE} WHERE user_id = $1 AND created_at > $2) AS recent, "
    f"(SELECT MIN(created_at) FROM {RUN_TABLE} WHERE user_id = $1 AND created_at > $2) AS oldest, "
    # One row by its unique key: the day's quota costs a lookup, not a sum over the day's runs.
    f"(SELECT input_tokens + output_tokens FROM {USAGE_TABLE} WHERE user_id = $1 AND day = $3) AS tokens"
)
_CONVERSATION_TITLE = f"SELECT title FROM {CONVERSATION_TABLE} WHERE id = $1 AND user_id = $2"
_DELETE_CONVERSATION = f"DELETE FROM {CONVERSATION_TABLE} WHERE id = $1"
_RUNNING_IN = f"SELECT 1 FROM {RUN_TABLE} WHERE conversation = $1 AND status = 'running' LIMIT 1"
_TOUCH_CONVERSATION = f"UPDATE {CONVERSATION_TABLE} SET updated_at = $1 WHERE id = $2"
_INSERT_CONVERSATION = (
    f"INSERT INTO {CONVERSATION_TABLE} (id, user_id, title, created_at, updated_at, client_id) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)

_MESSAGE_COLUMNS = "id, conversation, run_id, role, content, tool, status, feedback, created_at"
_INSERT_MESSAGE = f"INSERT INTO {MESSAGE_TABLE} ({_MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
_INSERT_RUN = (
    f"INSERT INTO {RUN_TABLE} (id, conversation, user_id, status, message_id, input_tokens, output_tokens, "
    "error_code, created_at, finished_at, heartbeat_at, client_message_id) "
    "VALUES ($1, $2, $3, 'running', $4, 0, 0, NULL, $5, NULL, $5, $6)"
)
_RUN_OF_CLIENT_MESSAGE = (
    f"SELECT id, conversation, user_id, status, message_id FROM {RUN_TABLE} "
    "WHERE user_id = $1 AND client_message_id = $2"
)
_MESSAGE_TO_ANSWER = (
    f"SELECT role, content, status, created_at, feedback FROM {MESSAGE_TABLE} WHERE id = $1 AND conversation = $2"
)
_DROP_AFTER = f"DELETE FROM {MESSAGE_TABLE} WHERE conversation = $1 AND created_at > $2"
_ANSWER_WITH = f"UPDATE {MESSAGE_TABLE} SET run_id = $1 WHERE id = $2"
_EDIT_MESSAGE = f"UPDATE {MESSAGE_TABLE} SET content = $1 WHERE id = $2"
_INSERT_EVENT = f"INSERT INTO {RUN_EVENT_TABLE} (run, seq, payload) VALUES ($1, $2, $3)"
_EVENT_STORED = f"SELECT 1 FROM {RUN_EVENT_TABLE} WHERE run = $1 AND seq = $2"
_FINISHED_AT = f"SELECT finished_at FROM {RUN_TABLE} WHERE id = $1"
_FINISH_RUN = (
    f"UPDATE {RUN_TABLE} SET status = $1, input_tokens = $2, output_tokens = $3, error_code = $4, "
    "finished_at = $5 WHERE id = $6"
)
_ADD_USAGE = (
    # The same statement on both engines (SQLite >= 3.24, PostgreSQL >= 9.5).
    f"INSERT INTO {USAGE_TABLE} (user_id, day, input_tokens, output_tokens, runs) VALUES ($1, $2, $3, $4, 1) "
    f"ON CONFLICT (user_id, day) DO UPDATE SET input_tokens = {USAGE_TABLE}.input_tokens + excluded.input_tokens, "
    f"output_tokens = {USAGE_TABLE}.output_tokens + excluded.output_tokens, runs = {USAGE_TABLE}.runs + 1"
)
_RUN_STATE = f"SELECT conversation, status, state FROM {RUN_TABLE} WHERE id = $1 AND user_id = $2"
_INSERT_APPROVAL = (
    f"INSERT INTO {APPROVAL_TABLE} (run, call_id, name, arguments, decision, reason, created_at, decided_at) "
    "VALUES ($1, $2, $3, $4, NULL, NULL, $5, NULL)"
)
_APPROVAL_DECISION = f"SELECT decision FROM {APPROVAL_TABLE} WHERE run = $1 AND call_id = $2"
_DECIDE = f"UPDATE {APPROVAL_TABLE} SET decision = $1, reason = $2, decided_at = $3 WHERE run = $4 AND call_id = $5"
_APPROVALS_OF = f"SELECT call_id, name, arguments, decision, reason FROM {APPROVAL_TABLE} WHERE run = $1 ORDER BY id"
_SUPERSEDE = (
    # A new message in a conversation whose reply waits for approval: its open calls are declined.
    f"UPDATE {APPROVAL_TABLE} SET decision = 'rejected', reason = $1, decided_at = $2 "
    f"WHERE decision IS NULL AND run IN (SELECT id FROM {RUN_TABLE} WHERE conversation = $3 "
    "AND status = 'awaiting_approval') RETURNING call_id, name, arguments"
)
_SET_STATE = f"UPDATE {RUN_TABLE} SET state = $1 WHERE id = $2"
_REQUEST_CANCEL = (
    f"UPDATE {RUN_TABLE} SET cancel_requested = TRUE WHERE id = $1 AND user_id = $2 AND status = 'running' "
    "RETURNING id"
)
_CLAIM_RUN = f"UPDATE {RUN_TABLE} SET status = $1 WHERE id = $2 AND status = 'running' RETURNING id"
_RENEW_LEASES = f"UPDATE {RUN_TABLE} SET heartbeat_at = $1 WHERE id = $2"
_EVENTS_FROM = (
    # The rows from the one holding event ``after + 1`` on (a row holds consecutive events).
    f"SELECT seq, payload FROM {RUN_EVENT_TABLE} WHERE run = {{}} AND seq >= "
    f"(SELECT COALESCE(MAX(seq), 0) FROM {RUN_EVENT_TABLE} WHERE run = {{}} AND seq <= {{}}) "
    "ORDER BY seq"
)
_RUN_COLUMNS = (Run.id, Run.conversation, Run.user_id, Run.status, Run.message_id)


def _json(value: Any) -> Any:
    """A JSON column as the driver hands it back (text on both engines' raw reads)."""
    return msgspec.json.decode(value) if isinstance(value, (str, bytes)) else value


def _record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(id=str(row["id"]), conversation_id=str(row["conversation"]), user_id=row["user_id"],
                     status=row["status"], message_id=row["message_id"])


class SQLRunStore:
    """The store's logic over four driver primitives a subclass provides.

    Admission is decided inside the writing transaction and holds under concurrency on both
    engines: SQLite runs one writer at a time (every transaction begins IMMEDIATE), and on
    PostgreSQL a user's starts take turns on an advisory lock (exact limits) and a start and
    a delete of one conversation take turns on its row (``FOR UPDATE``), so the later of two
    sees what the earlier did. A unique index admits one running run per conversation.
    """

    UNREACHABLE: tuple[type[BaseException], ...] = (OSError,)  # the database is not there
    LOCK_USER: str | None = None  # a statement that makes one user's admissions take turns
    FOR_UPDATE = ""  # what locks a selected row until the transaction ends

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- what each engine's driver provides -------------------------------------------------

    async def _execute(self, connection: Any, sql: str, *args: object) -> None:
        raise NotImplementedError

    async def _executemany(self, connection: Any, sql: str, rows: list[tuple[object, ...]]) -> None:
        raise NotImplementedError

    async def _fetch_row(self, connection: Any, sql: str, *args: object) -> tuple[Any, ...] | None:
        raise NotImplementedError

    async def _fetch_all(self, connection: Any, sql: str, *args: object) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run_key(self, run_id: str) -> object:
        """A run id as the driver takes it for the event rows."""
        raise NotImplementedError

    def _timestamp(self, value: Any) -> datetime:
        return value

    def _is_conflict(self, error: Exception) -> bool:
        """A unique index refused the row."""
        return False

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        # Piccolo's transaction: on SQLite the engine begins it IMMEDIATE and queues it
        # behind this process's other writers (domain/sqlite_engine.py).
        with self._reachable():
            async with self.engine.transaction() as transaction:
                yield transaction.connection

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """A database that cannot be reached becomes ``DatabaseUnavailable`` (a 503 on HTTP, an
        error frame on a socket that stays open), never a driver's exception."""
        try:
            yield
        except self.UNREACHABLE as error:
            raise DatabaseUnavailable() from error

    # -- the store --------------------------------------------------------------------------

    async def begin_run(
        self, user_id: str, message: str, conversation_id: str | None, limits: Limits, agent: str,
        *, again: str | None = None, client_message_id: str | None = None,
        client_conversation_id: str | None = None,
    ) -> NewRun:
        started = now()
        run_id = uuid.uuid4()
        async with self._transaction() as connection:
            if self.LOCK_USER:
                await self._fetch_row(connection, self.LOCK_USER, user_id)
            if client_message_id is not None:
                sent = await self._fetch_row(connection, _RUN_OF_CLIENT_MESSAGE, user_id, client_message_id)
                if sent:  # a retry: no limits counted, nothing written
                    raise AlreadySent(RunRecord(id=str(sent[0]), conversation_id=str(sent[1]), user_id=sent[2],
                                                status=sent[3], message_id=sent[4]))
            await self._admit(connection, user_id, limits, started, a_message=True)
            if conversation_id is None:
                key, title = uuid.uuid4(), title_for(message)
                try:
                    await self._execute(connection, _INSERT_CONVERSATION, key, user_id, title, started, started,
                                        client_conversation_id)
                except Exception as error:
                    if self._is_conflict(error):  # another first message of the same client id won
                        raise RunActive("A reply is still being written in this conversation; "
                                        "wait for it or cancel it.") from None
                    raise
            else:
                key = parse_id(conversation_id)
                row = key and await self._fetch_row(connection, _CONVERSATION_TITLE + self.FOR_UPDATE, key, user_id)
                if not row:
                    raise NotFound("No such conversation.")
                title = row[0]
                if await self._fetch_row(connection, _RUNNING_IN, key):
                    raise RunActive("A reply is still being written in this conversation; wait for it or cancel it.")
                await self._execute(connection, _TOUCH_CONVERSATION, started, key)
                await self._supersede(connection, key, started)
            if again is None:
                said = MessageView(id=str(uuid.uuid4()), role="user", content=message, status="completed",
                                   created_at=started, run_id=str(run_id))
                await self._execute(connection, _INSERT_MESSAGE, uuid.UUID(said.id), key, said.run_id, "user",
                                    message, None, "completed", None, started)
            else:
                said = await self._answer_again(connection, key, again, str(run_id), message or None)
            return await self._insert_run(connection, run_id, key, user_id, agent, started, client_message_id,
                                          title, said, created=conversation_id is None)

    async def _supersede(self, connection: Any, conversation: uuid.UUID, at: datetime) -> None:
        """Decline the calls still waiting in the conversation, and tell the model so: each is
        stored as a call with the declined result, just before the new message."""
        result = {"error": declined(SUPERSEDED)}
        await self._executemany(connection, _INSERT_MESSAGE, [
            (uuid.uuid4(), conversation, None, "tool", "",
             msgspec.json.encode(ToolRecord(call_id, name, _json(arguments), result)).decode(), "completed", None,
             at - timedelta(microseconds=1))
            for call_id, name, arguments in await self._fetch_all(connection, _SUPERSEDE, SUPERSEDED, at, conversation)
        ])


    async def decide(self, user_id: str, run_id: str, decision: Decision, limits: Limits, agent: str) -> Decided:
        run_key = parse_id(run_id)
        async with self._transaction() as connection:
            if self.LOCK_USER:
                await self._fetch_row(connection, self.LOCK_USER, user_id)
            row = run_key and await self._fetch_row(connection, _RUN_STATE + self.FOR_UPDATE, run_key, user_id)
            if not row:
                raise NotFound("No such run.")
            conversation, status, state = row
            found = await self._fetch_row(connection, _APPROVAL_DECISION, run_key, decision.call_id)
            if found is None:
                raise NotFound("No such approval request in this run.")
            if found[0] is not None:
                raise AlreadyDecided(f"This call was already {found[0]}.")
            decided = now()
            await self._execute(connection, _DECIDE, "approved" if decision.approve else "rejected", decision.reason,
                                decided, run_key, decision.call_id)
            calls = await self._fetch_all(connection, _APPROVALS_OF, run_key)
            waiting = [call_id for call_id, _, _, made, _ in calls if made is None]
            if waiting or status != "awaiting_approval" or state is None:
                return Decided(None, waiting)
            # The last decision: the continuation starts now, as one more reply in the conversation.
            # It counts as a start: the reply limits and the day's quota hold for it too.
            await self._admit(connection, user_id, limits, decided, a_message=False)
            conversation_key = conversation if isinstance(conversation, uuid.UUID) else uuid.UUID(str(conversation))
            new = await self._insert_run(connection, uuid.uuid4(), conversation_key, user_id, agent, decided, None)
            await self._execute(connection, _SET_STATE, None, run_key)  # used once
        pending = [PendingCall(call_id, name, _json(arguments)) for call_id, name, arguments, _, _ in calls]
        decisions = [Decision(c, made == "approved", reason) for c, _, _, made, reason in calls]
        return Decided(Continuation(new, state, pending, decisions), [])

    async def _admit(self, connection: Any, user_id: str, limits: Limits, at: datetime, *, a_message: bool) -> None:
        """The user's limits, counted in the database inside the write, so they hold across
        instances; a continuation is no new message (the per-minute limit leaves it alone)."""
        active, recent, oldest, tokens = await self._fetch_row(
            connection, LIMIT_COUNTS, user_id, at - PER_MINUTE, usage_day(at)
        ) or (0, 0, None, None)
        if not a_message:
            recent, oldest = 0, None
        limits.check_runs(active, recent, oldest and self._timestamp(oldest), at, tokens or 0)

    async def _insert_run(self, connection: Any, run_id: uuid.UUID, conversation: uuid.UUID, user_id: str,
                          agent: str, started: datetime, client_message_id: str | None,
                          title: str | None = None, said: MessageView | None = None, created: bool = False) -> NewRun:
        """The running run, its ``start`` event with it."""
        message_id = uuid.uuid4()
        try:
            await self._execute(connection, _INSERT_RUN, run_id, conversation, user_id, str(message_id), started,
                                client_message_id)
        except Exception as error:
            if self._is_conflict(error):  # another start won the conversation
                raise RunActive("A reply is still being written in this conversation; "
                                "wait for it or cancel it.") from None
            raise
        start = events.encode(events.Start(run_id=str(run_id), seq=1, conversation_id=str(conversation),
                                           message_id=str(message_id), agent=agent))
        await self._executemany(connection, _INSERT_EVENT, [self._event_row(str(run_id), 1, [start])])
        return NewRun(run_id=str(run_id), conversation_id=str(conversation), message_id=str(message_id),
                      created_conversation=created, title=title, user_message=said, start=start)

    async def _answer_again(self, connection: Any, conversation: uuid.UUID, message_id: str,
                            run_id: str, edited: str | None = None) -> MessageView:
        key = parse_id(message_id)
        row = key and await self._fetch_row(connection, _MESSAGE_TO_ANSWER, key, conversation)
        if not row:
            raise NotFound("No such message in this conversation.")
        role, content, status, created_at, feedback = row
        if role != "user":
            raise InvalidInput("Only a user message can be answered again.", field="item_id")
        await self._execute(connection, _DROP_AFTER, conversation, created_at)
        await self._execute(connection, _ANSWER_WITH, run_id, key)
        if edited is not None:
            await self._execute(connection, _EDIT_MESSAGE, edited, key)
            content = edited
        return MessageView(id=str(key), role="user", content=content, status=status,
                           created_at=self._timestamp(created_at), run_id=run_id, feedback=feedback)

    def _event_row(self, run_id: str, first_seq: int, payloads: Sequence[bytes]) -> tuple[object, int, str]:
        """One row for consecutive events: rows nobody reads one by one, so one per batch.
        msgspec's JSON never holds a raw newline, so a newline separates them."""
        return self._run_key(run_id), first_seq, b"\n".join(payloads).decode()

    async def save_events(self, batches: Sequence[EventBatch], *, retry: bool = False) -> None:
        rows = [self._event_row(*batch) for batch in batches if batch[2]]
        if rows:
            async with self._transaction() as connection:
                # The rows of one attempt went in together or not at all: the first one tells.
                if retry and await self._fetch_row(connection, _EVENT_STORED, rows[0][0], rows[0][1]):
                    return
                await self._executemany(connection, _INSERT_EVENT, rows)

    async def finish_run(self, run: FinishedRun, unsaved: EventBatch) -> None:
        finished = now()
        key = uuid.UUID(run.conversation_id)

        def message(id: uuid.UUID, role: str, content: str, at: datetime, tool: str | None = None,
                    status: str = "completed") -> tuple[object, ...]:
            return (id, key, run.run_id, role, content, tool, status, None, at)

        messages = [
            message(uuid.uuid4(), "tool", "", at, tool=msgspec.json.encode(tool).decode()) for at, tool in run.tools
        ]
        if run.text or run.status == "completed":
            messages.append(message(uuid.UUID(run.message_id), "assistant", run.text, finished, status=run.status))
        if run.status == "cancelled":
            messages.append(message(uuid.uuid4(), "hidden", HIDDEN_STOPPED_NOTE, finished + timedelta(microseconds=1)))
        async with self._transaction() as connection:
            # Ended already: by an earlier attempt whose COMMIT's answer never came (a database
            # gone silent), or by another instance that took this one for dead. Writing it again
            # would fail on the reply's message id at every retry, and count the usage twice.
            ended = await self._fetch_row(connection, _FINISHED_AT + self.FOR_UPDATE, uuid.UUID(run.run_id))
            if ended is not None and ended[0] is not None:
                return
            if messages:
                await self._executemany(connection, _INSERT_MESSAGE, messages)
            if unsaved[2]:
                await self._executemany(connection, _INSERT_EVENT, [self._event_row(*unsaved)])
            await self._execute(connection, _FINISH_RUN, run.status, run.input_tokens, run.output_tokens,
                                run.error_code, finished, uuid.UUID(run.run_id))
            # Counted on the day the run finishes, with its outcome: never twice, never lost.
            await self._execute(connection, _ADD_USAGE, run.user_id, usage_day(finished), run.input_tokens,
                                run.output_tokens)
            if run.pending:
                await self._executemany(connection, _INSERT_APPROVAL, [
                    (uuid.UUID(run.run_id), call.call_id, call.name, msgspec.json.encode(call.arguments).decode(),
                     finished) for call in run.pending
                ])
                await self._execute(connection, _SET_STATE, run.state, uuid.UUID(run.run_id))
            await self._execute(connection, _TOUCH_CONVERSATION, finished, key)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        key = parse_id(conversation_id)
        if key is None:
            return False
        async with self._transaction() as connection:
            # The row first: only the owner learns whether a reply runs in it.
            if not await self._fetch_row(connection, _CONVERSATION_TITLE + self.FOR_UPDATE, key, user_id):
                return False
            if await self._fetch_row(connection, _RUNNING_IN, key):
                raise RunActive("A reply is still being written in this conversation; cancel it first.")
            # Messages, runs and run events go with it (ON DELETE CASCADE; foreign keys are
            # on for every SQLite connection).
            await self._execute(connection, _DELETE_CONVERSATION, key)
        return True

    async def conversation_of_client(self, user_id: str, client_id: str) -> str | None:
        with self._reachable():
            row = await Conversation.select(Conversation.id).where(
                Conversation.user_id == user_id, Conversation.client_id == client_id
            ).first()
        return str(row["id"]) if row else None

    async def running_run(self, user_id: str, conversation_id: str) -> RunRecord | None:
        key = parse_id(conversation_id)
        if key is None:
            return None
        with self._reachable():
            row = await Run.select(*_RUN_COLUMNS).where(
                Run.conversation == key, Run.user_id == user_id, Run.status == "running"
            ).first()
        return _record(row) if row else None

    async def claim_run(self, run_id: str, status: RunStatus) -> bool:
        async with self._transaction() as connection:
            return await self._fetch_row(connection, _CLAIM_RUN, status, uuid.UUID(run_id)) is not None

    async def request_cancel(self, user_id: str, run_id: str) -> bool:
        key = parse_id(run_id)
        if key is None:
            return False
        async with self._transaction() as connection:
            return await self._fetch_row(connection, _REQUEST_CANCEL, key, user_id) is not None

    async def cancels_requested(self) -> list[str]:
        with self._reachable():
            # Few rows: the running ones (indexed by status) with the flag.
            rows = await Run.select(Run.id).where(Run.status == "running", Run.cancel_requested.eq(True))
        return [str(row["id"]) for row in rows]

    async def begin_serving(self, close_dead_runs: Callable[[], Awaitable[None]]) -> None:
        pass  # other processes may serve it too: their runs are judged by their leases

    async def end_serving(self) -> None:
        pass

    async def renew_leases(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            at = now()
            async with self._transaction() as connection:
                await self._executemany(connection, _RENEW_LEASES, [(at, uuid.UUID(r)) for r in run_ids])

    async def get_run(self, user_id: str, run_id: str) -> RunRecord | None:
        key = parse_id(run_id)
        if key is None:
            return None
        with self._reachable():
            row = await Run.select(*_RUN_COLUMNS).where(Run.id == key, Run.user_id == user_id).first()
        return _record(row) if row else None

    async def event_payloads(self, run_id: str, after: int = 0, rows: int | None = None) -> list[bytes]:
        key = uuid.UUID(run_id)
        payloads: list[bytes] = []
        with self._reachable():
            if rows is None:
                found = await RunEvent.raw(_EVENTS_FROM, key, key, after + 1)
            else:
                found = await RunEvent.raw(_EVENTS_FROM + " LIMIT {}", key, key, after + 1, rows)
        for row in found:
            lines = row["payload"].encode().split(b"\n")
            payloads += lines[max(after + 1 - row["seq"], 0):]
        return payloads

    async def stale_runs(self, lease_s: float) -> list[RunRecord]:
        cutoff = now() - timedelta(seconds=lease_s)
        with self._reachable():
            rows = await Run.select(*_RUN_COLUMNS).where(
                Run.status == "running", (Run.heartbeat_at < cutoff) | (Run.heartbeat_at.is_null())
            )
        return [_record(row) for row in rows]
