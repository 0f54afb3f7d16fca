"""The run store on SQLite: statements run in place on the engine's writer connection.

``domain/sqlite_engine.py`` keeps one writer connection and runs each transaction's
statements on the event loop's thread (a statement costs ≈ 1 µs; a trip to a worker thread
≈ 60). SQLite keeps a UUID as its text and its placeholders are ``?n``.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import IO, Any

from domain.runs.store import SQLRunStore

_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.cache
def sqlite_sql(sql: str) -> str:
    """``$n`` placeholders as SQLite's ``?n``; cached, as the substitution costs more than a
    simple statement (the statements are a fixed set)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class SQLiteRunStore(SQLRunStore):
    """Serving takes an OS lock beside the database file: shared while it serves, exclusive
    for a moment at start-up. A process that gets it exclusive knows no other one serves the
    file, so the runs left ``running`` are a dead process's, closed at once (no lease to wait
    out). The kernel drops the lock with the process, however it dies."""

    _serving: IO[bytes] | None = None

    async def begin_serving(self, close_dead_runs: Callable[[], Awaitable[None]]) -> None:
        path = Path(self.engine.path).with_suffix(".serve-lock")
        self._serving = open(path, "wb")  # noqa: SIM115 - held until end_serving
        try:
            fcntl.flock(self._serving, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process serves it
            await asyncio.to_thread(fcntl.flock, self._serving, fcntl.LOCK_SH)
            return
        await close_dead_runs()
        fcntl.flock(self._serving, fcntl.LOCK_SH)  # others may serve beside this one now

    async def end_serving(self) -> None:
        if self._serving is not None:
            self._serving.close()  # releases the lock
            self._serving = None

    async def _execute(self, connection: sqlite3.Connection, sql: str, *args: object) -> None:
        connection.execute(sqlite_sql(sql), args)

    async def _executemany(self, connection: sqlite3.Connection, sql: str, rows: list[tuple[object, ...]]) -> None:
        connection.executemany(sqlite_sql(sql), rows)

    async def _fetch_row(self, connection: sqlite3.Connection, sql: str, *args: object) -> tuple[Any, ...] | None:
        row = connection.execute(sqlite_sql(sql), args).fetchone()
        if row is None:
            return None
        return tuple(row.values()) if isinstance(row, dict) else tuple(row)

    async def _fetch_all(self, connection: sqlite3.Connection, sql: str, *args: object) -> list[tuple[Any, ...]]:
        rows = connection.execute(sqlite_sql(sql), args).fetchall()
        return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in rows]

    def _run_key(self, run_id: str) -> object:
        return run_id  # no UUID object and back to text (0.4 µs each)

    def _is_conflict(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)

    def _timestamp(self, value: Any) -> datetime:
        # An aggregate (MIN) loses the column's declared type: SQLite hands back the text.
        return datetime.fromisoformat(value) if isinstance(value, str) else value
