"""Runs in the database: begin a run, save its events in batches, finish it, read it back."""

from __future__ import annotations

import functools
import math
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import msgspec
from piccolo.engine.base import Engine
from piccolo.engine.sqlite import SQLiteEngine
from piccolo.table import Table

from domain import events
from domain.conversations import HIDDEN_STOPPED_NOTE, MESSAGE_COLUMNS, MessageView, ToolRecord, message_view, parse_id
from domain.database import write_transaction
from domain.errors import InvalidInput, LimitExceeded, NotFound, RunActive
from domain.events import RunStatus
from domain.tables import Conversation, Message, Run, RunEvent

_TITLE_CHARS = 60
_INSERT_EVENT = (
    f"INSERT INTO {RunEvent._meta.tablename} ({RunEvent.run._meta.db_column_name}, "
    f"{RunEvent.seq._meta.db_column_name}, {RunEvent.payload._meta.db_column_name}) VALUES "
)


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
    user_message: MessageView  # the message it answers


class FinishedRun(msgspec.Struct, frozen=True):
    run_id: str
    conversation_id: str
    message_id: str
    status: RunStatus
    text: str
    tools: list[tuple[datetime, ToolRecord]]
    input_tokens: int = 0
    output_tokens: int = 0
    error_code: str | None = None


def title_for(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 1].rstrip() + "…"


def now() -> datetime:
    return datetime.now(timezone.utc)


class RunLimits(msgspec.Struct, frozen=True):
    active_runs_per_user: int = 4
    messages_per_minute: int = 30


_LIMIT_COUNTS = (
    "SELECT (SELECT COUNT(*) FROM {run} WHERE user_id = $1 AND status = 'running') AS active, "
    "(SELECT COUNT(*) FROM {run} WHERE user_id = $1 AND created_at > $2) AS recent, "
    "(SELECT MIN(created_at) FROM {run} WHERE user_id = $1 AND created_at > $2) AS oldest"
).format(run=Run._meta.tablename)


async def _check_limits(db: Engine, user_id: str, limits: RunLimits, started: datetime) -> None:
    # Counted in the database, so the limits hold across server instances. One statement by
    # the driver: it runs inside begin_run's write transaction (see _execute).
    window = started - timedelta(minutes=1)
    active, recent, oldest = await _fetch_row(db, _LIMIT_COUNTS, user_id, window)
    if active >= limits.active_runs_per_user:
        raise LimitExceeded(
            f"You already have {active} replies running (the limit is {limits.active_runs_per_user}); "
            "wait for one to finish or cancel it.", retry_after_s=2,
        )
    if recent >= limits.messages_per_minute:
        if isinstance(oldest, str):  # SQLite keeps timestamps as text
            oldest = datetime.fromisoformat(oldest)
        retry_after = oldest - window
        raise LimitExceeded(
            f"You can send {limits.messages_per_minute} messages a minute; try again shortly.",
            retry_after_s=max(1, math.ceil(retry_after.total_seconds())),
        )


async def begin_run(
    db: Engine, user_id: str, message: str, conversation_id: str | None, limits: RunLimits = RunLimits(),
    instance: str | None = None, *, again: str | None = None,
) -> NewRun:
    """Write the user's message and a running run, in one transaction; nothing on refusal.

    With ``again`` (the id of an earlier user message of the conversation) nothing new is
    said: everything after that message is dropped and the run answers it again."""
    started = now()
    run_id, message_id = uuid.uuid4(), uuid.uuid4()
    async with write_transaction(db):
        await _check_limits(db, user_id, limits, started)
        if conversation_id is None:
            key, title = uuid.uuid4(), title_for(message)
            await _insert(db, Conversation, id=key, user_id=user_id, title=title, created_at=started,
                          updated_at=started)
        else:
            key = parse_id(conversation_id)
            row = key and await (
                Conversation.select(Conversation.title)
                .where(Conversation.id == key, Conversation.user_id == user_id)
                .first()
            )
            if not row:
                raise NotFound("No such conversation.")
            title = row["title"]
            if await Run.exists().where(Run.conversation == key, Run.status == "running"):
                raise RunActive("A reply is still being written in this conversation; wait for it or cancel it.")
            await _execute(db, _TOUCH_CONVERSATION, started, key)
        if again is None:
            said = MessageView(id=str(uuid.uuid4()), role="user", content=message, status="completed",
                               created_at=started, run_id=str(run_id))
            await _insert(db, Message, id=uuid.UUID(said.id), conversation=key, run_id=said.run_id, role="user",
                          content=message, tool=None, status="completed", feedback=None, created_at=started)
        else:
            said = await _answer_again(key, again, str(run_id))
        await _insert(db, Run, id=run_id, conversation=key, user_id=user_id, status="running",
                      message_id=str(message_id), input_tokens=0, output_tokens=0, error_code=None,
                      created_at=started, finished_at=None, instance=instance, heartbeat_at=started)
    return NewRun(
        run_id=str(run_id), conversation_id=str(key), message_id=str(message_id),
        created_conversation=conversation_id is None, title=title, user_message=said,
    )


async def _answer_again(conversation: uuid.UUID, message_id: str, run_id: str) -> MessageView:
    key = parse_id(message_id)
    row = key and await (
        Message.select(*MESSAGE_COLUMNS)
        .where(Message.id == key, Message.conversation == conversation)
        .first()
        .output(load_json=True)
    )
    if not row:
        raise NotFound("No such message in this conversation.")
    if row["role"] != "user":
        raise InvalidInput("Only a user message can be answered again.", field="item_id")
    await Message.delete().where(Message.conversation == conversation, Message.created_at > row["created_at"])
    await Message.update({Message.run_id: run_id}).where(Message.id == key)
    return message_view({**row, "run_id": run_id})


_FINISH_RUN = (
    f"UPDATE {Run._meta.tablename} SET status = $1, input_tokens = $2, output_tokens = $3, error_code = $4, "
    "finished_at = $5 WHERE id = $6"
)
_TOUCH_CONVERSATION = f"UPDATE {Conversation._meta.tablename} SET updated_at = $1 WHERE id = $2"
_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.cache
def _sqlite_sql(sql: str) -> str:
    """``$n`` placeholders as SQLite's ``?n``; cached, as the substitution costs more than a
    simple statement (the statements are a fixed set)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


async def _execute(db: Engine, sql: str, *args: object) -> None:
    """One statement with ``$n`` placeholders, inside the current write transaction."""
    connection = db.current_transaction.get().connection
    if isinstance(db, SQLiteEngine):  # runs in place (domain/sqlite_engine.py)
        connection.execute(_sqlite_sql(sql), args)
    else:
        await connection.execute(sql, *args)


async def _fetch_row(db: Engine, sql: str, *args: object) -> tuple:
    """The one row a statement returns (see ``_execute``)."""
    connection = db.current_transaction.get().connection
    if isinstance(db, SQLiteEngine):
        row = connection.execute(_sqlite_sql(sql), args).fetchone()
        return tuple(row.values()) if isinstance(row, dict) else tuple(row)
    return tuple(await connection.fetchrow(sql, *args))


def _insert_sql(table: type[Table], columns: Sequence[str]) -> str:
    marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    return f"INSERT INTO {table._meta.tablename} ({', '.join(columns)}) VALUES ({marks})"


async def _insert(db: Engine, table: type[Table], **values: object) -> None:
    """One row by the driver, every column given (see ``_execute``)."""
    await _execute(db, _insert_sql(table, list(values)), *values.values())


async def _insert_rows(db: Engine, table: type[Table], rows: list[dict[str, object]]) -> None:
    """Rows with the same columns, by the driver's executemany (see ``_execute``)."""
    columns = list(rows[0])
    sql, values = _insert_sql(table, columns), [tuple(row[c] for c in columns) for row in rows]
    connection = db.current_transaction.get().connection
    if isinstance(db, SQLiteEngine):
        connection.executemany(_sqlite_sql(sql), values)
    else:
        await connection.executemany(sql, values)


def _event_row(db: Engine, run_id: str, first_seq: int, payloads: Sequence[bytes]) -> tuple[object, int, str]:
    """One row for consecutive events: one row per event cost ≈ 1.6 µs of the server's ≈ 22
    per streamed event (the insert and its index entry), for rows nobody reads one by one.
    msgspec's JSON never holds a raw newline, so a newline separates them."""
    # SQLite keeps a UUID as its text: no str() of a UUID object (0.4 µs each).
    key = run_id if isinstance(db, SQLiteEngine) else uuid.UUID(run_id)
    return key, first_seq, b"\n".join(payloads).decode()


async def _insert_events(db: Engine, rows: list[tuple[object, int, str]]) -> None:
    """Inside a write transaction, by the driver: Piccolo builds and renders a query string
    per row object, the driver's executemany runs one prepared statement."""
    if not rows:
        return
    connection = db.current_transaction.get().connection
    if isinstance(db, SQLiteEngine):
        connection.executemany(_INSERT_EVENT + "(?, ?, ?)", rows)
    else:
        await connection.executemany(_INSERT_EVENT + "($1, $2, $3)", rows)


async def save_events(db: Engine, batches: Sequence[tuple[str, int, Sequence[bytes]]]) -> None:
    """Append events of several runs in one transaction: (run_id, seq of the first, payloads)."""
    rows = [_event_row(db, run_id, first, payloads) for run_id, first, payloads in batches if payloads]
    if rows:
        async with write_transaction(db):
            await _insert_events(db, rows)


async def finish_run(db: Engine, run: FinishedRun, unsaved: tuple[int, Sequence[bytes]]) -> None:
    """Store the outcome: tool turns, the assistant's (maybe partial) text, a hidden note
    after a Stop, the run's status and usage, and the events not saved yet, atomically."""
    finished = now()
    key = uuid.UUID(run.conversation_id)

    def message(id: uuid.UUID, role: str, content: str, at: datetime, tool: str | None = None,
                status: str = "completed") -> dict[str, object]:
        return dict(id=id, conversation=key, run_id=run.run_id, role=role, content=content, tool=tool,
                    status=status, feedback=None, created_at=at)

    messages = [
        message(uuid.uuid4(), "tool", "", at, tool=msgspec.json.encode(tool).decode()) for at, tool in run.tools
    ]
    if run.text or run.status == "completed":
        messages.append(message(uuid.UUID(run.message_id), "assistant", run.text, finished, status=run.status))
    if run.status == "cancelled":
        messages.append(message(uuid.uuid4(), "hidden", HIDDEN_STOPPED_NOTE, finished + timedelta(microseconds=1)))
    async with write_transaction(db):
        # By the driver, as the events: Piccolo renders each row object's query, slowly.
        if messages:
            await _insert_rows(db, Message, messages)
        if unsaved[1]:
            await _insert_events(db, [_event_row(db, run.run_id, *unsaved)])
        await _execute(db, _FINISH_RUN, run.status, run.input_tokens, run.output_tokens, run.error_code,
                       finished, uuid.UUID(run.run_id))
        await _execute(db, _TOUCH_CONVERSATION, finished, key)


async def get_run(user_id: str, run_id: str) -> RunRecord | None:
    key = parse_id(run_id)
    if key is None:
        return None
    row = await (
        Run.select(Run.id, Run.conversation, Run.user_id, Run.status, Run.message_id)
        .where(Run.id == key, Run.user_id == user_id)
        .first()
    )
    if not row:
        return None
    return RunRecord(id=str(row["id"]), conversation_id=str(row["conversation"]), user_id=row["user_id"],
                     status=row["status"], message_id=row["message_id"])


_EVENTS_FROM = (
    # The rows from the one holding event ``after + 1`` on (a row holds consecutive events).
    f"SELECT seq, payload FROM {RunEvent._meta.tablename} WHERE run = {{}} AND seq >= "
    f"(SELECT COALESCE(MAX(seq), 0) FROM {RunEvent._meta.tablename} WHERE run = {{}} AND seq <= {{}}) "
    "ORDER BY seq"
)


async def event_payloads(run_id: str, after: int = 0) -> list[bytes]:
    """The stored events with seq > ``after``, in order, one payload each."""
    key = uuid.UUID(run_id)
    payloads: list[bytes] = []
    for row in await RunEvent.raw(_EVENTS_FROM, key, key, after + 1):
        lines = row["payload"].encode().split(b"\n")
        payloads += lines[max(after + 1 - row["seq"], 0):]
    return payloads


async def renew_leases(db: Engine, run_ids: Sequence[str]) -> None:
    if run_ids:
        async with write_transaction(db):
            await Run.update({Run.heartbeat_at: now()}).where(Run.id.is_in([uuid.UUID(r) for r in run_ids]))


async def stale_runs(lease_s: float) -> list[str]:
    """Runs still ``running`` whose instance stopped renewing their lease."""
    cutoff = now() - timedelta(seconds=lease_s)
    rows = await Run.select(Run.id).where(
        Run.status == "running", (Run.heartbeat_at < cutoff) | (Run.heartbeat_at.is_null())
    )
    return [str(row["id"]) for row in rows]


async def mark_interrupted(db: Engine, run_ids: Sequence[str]) -> list[str]:
    """Close runs a dead instance left ``running``: save their partial text from the stored
    events and append the ``done`` event a resuming client waits for."""
    query = Run.select(Run.id, Run.conversation, Run.message_id).where(
        Run.status == "running", Run.id.is_in([uuid.UUID(r) for r in run_ids] or [uuid.UUID(int=0)])
    )
    closed: list[str] = []
    for row in await query:
        run_id = str(row["id"])
        async with write_transaction(db):
            # Claim it first: several instances may sweep the same dead instance's runs.
            claimed = await Run.update({Run.status: "interrupted"}).where(
                Run.id == row["id"], Run.status == "running"
            ).returning(Run.id)
        if not claimed:
            continue
        payloads = await event_payloads(run_id)
        text: list[str] = []
        tools: dict[str, ToolRecord] = {}
        at: dict[str, datetime] = {}
        for payload in payloads:
            event = events.decode(payload)
            if isinstance(event, events.Text):
                text.append(event.content)
            elif isinstance(event, events.ToolCall):
                tools[event.call_id] = ToolRecord(event.call_id, event.name, event.arguments,
                                                  {"error": "interrupted before it finished"})
                at[event.call_id] = now()
            elif isinstance(event, events.ToolResult) and event.call_id in tools:
                tools[event.call_id] = msgspec.structs.replace(tools[event.call_id], result=event.result)
        done = events.Done(run_id=run_id, seq=len(payloads) + 1, status="interrupted")
        await finish_run(
            db,
            FinishedRun(run_id=run_id, conversation_id=str(row["conversation"]), message_id=row["message_id"],
                        status="interrupted", text="".join(text),
                        tools=[(at[c], t) for c, t in tools.items()]),
            (len(payloads) + 1, [events.encode(done)]),
        )
        closed.append(run_id)
    return closed
