"""Piccolo's PostgreSQL engine, with a deadline on everything that waits for the server.

A PostgreSQL that refuses or resets connections fails fast by itself. One that stops answering
(a network partition, a hung host, a proxy that keeps connections open) does not: asyncpg and
Piccolo wait for it without end by default, and every request, the group commit and ``/health``
hang with it. Here each wait has a deadline (``Deadlines``), so such a database ends in
``TimeoutError``, which the run store and the app answer like any unreachable database (503
``database_unavailable``):

- opening a connection (TCP, TLS, authentication): asyncpg's ``timeout``;
- getting a connection from the pool, opening one included: ``pool.acquire(timeout=…)``, which
  Piccolo's own engine never passes;
- each statement: asyncpg's ``command_timeout`` (which also bounds ``BEGIN``, ``COMMIT``,
  ``ROLLBACK`` and the pool's reset on release), and around each of our statements an
  ``asyncio.timeout`` of the same length, since asyncpg runs some steps of a statement without
  one (closing prepared statements evicted from its cache).

A connection whose statement ran out of time (or whose caller was cancelled) is dropped, not
handed back: asyncpg would first ask the server to cancel the statement over a new connection,
and a silent server answers that no sooner. The pool opens a fresh connection when one is
needed, so the server is used again, without a restart, as soon as it answers.

The server is told to end a session left idle inside a transaction for longer than the
statement deadline (``idle_in_transaction_session_timeout``). After a partition the server never
hears that the client gave up, and the locks that client's transaction held (a user's admission
lock, a conversation's row) would otherwise outlive it by hours (until TCP keepalive). It also
settles a COMMIT that ran out of time: the server went idle before that COMMIT was sent, so
by the time the client gives up on it, the server has either committed it or ended the
session; a retry that looks first (``SQLRunStore.save_events(retry=True)``) sees which.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from piccolo.engine.postgres import PostgresEngine


class Deadlines(msgspec.Struct, frozen=True):
    """How long the server waits for PostgreSQL (seconds). The defaults are far above what a
    healthy server takes even under load: a statement here takes milliseconds."""

    connect_s: float = 5.0  # opening a connection
    acquire_s: float = 10.0  # getting a connection from the pool, opening one included
    statement_s: float = 10.0  # each statement, BEGIN and COMMIT included
    health_s: float = 3.0  # a health check's ``SELECT 1``, acquiring included

    def connection_config(self, dsn: str) -> dict[str, Any]:
        """asyncpg's keywords for each connection."""
        idle_ms = max(round(self.statement_s * 1000), 1)
        return {
            "dsn": dsn,
            "timeout": self.connect_s,
            "command_timeout": self.statement_s,
            "server_settings": {"idle_in_transaction_session_timeout": str(idle_ms)},
        }


def _unfinished(error: BaseException | None) -> bool:
    """The statement may still be running, or its answer be on its way: the connection is in
    no state to be reused."""
    return isinstance(error, (TimeoutError, asyncio.CancelledError))


class TimedConnection:
    """A pool connection whose statements each end by the deadline: what a transaction hands
    to Piccolo's queries and to the run store (the four calls they make)."""

    __slots__ = ("raw", "deadline_s")

    def __init__(self, raw: Any, deadline_s: float):
        self.raw = raw
        self.deadline_s = deadline_s

    async def fetch(self, query: str, *args: object) -> list[Any]:
        async with asyncio.timeout(self.deadline_s):
            return await self.raw.fetch(query, *args)

    async def fetchrow(self, query: str, *args: object) -> Any:
        async with asyncio.timeout(self.deadline_s):
            return await self.raw.fetchrow(query, *args)

    async def execute(self, query: str, *args: object) -> str:
        async with asyncio.timeout(self.deadline_s):
            return await self.raw.execute(query, *args)

    async def executemany(self, query: str, rows: Sequence[Sequence[object]]) -> None:
        async with asyncio.timeout(self.deadline_s):
            await self.raw.executemany(query, rows)


class DeadlineTransaction:
    """A transaction on a pool connection, acquired, begun, committed and rolled back within
    the deadlines. Piccolo's queries find it through the engine's ``current_transaction`` (the
    attribute Piccolo's engines consult) and run on its ``connection``. Our own class, not a
    subclass of Piccolo's ``PostgresTransaction``: that one hands the connection back only
    after a rollback that worked, so a rollback on a silent connection lost it to the pool and
    left the task inside the transaction. A transaction begun inside another joins it."""

    def __init__(self, engine: DeadlinePostgresEngine):
        self.engine = engine
        self.connection: TimedConnection | None = None
        self._outer: DeadlineTransaction | None = None
        self._transaction: Any = None
        self._context: contextvars.Token[Any] | None = None

    async def __aenter__(self) -> DeadlineTransaction:
        current = self.engine.current_transaction.get()
        if current is not None:
            self._outer = current
            return current
        raw = await self.engine.acquire()
        try:
            self._transaction = raw.transaction()
            await self._transaction.start()
        except BaseException as error:
            await self.engine.give_back(raw, error)
            raise
        self.connection = TimedConnection(raw, self.engine.deadlines.statement_s)
        self._context = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(self, exception_type: Any, exception: BaseException | None, traceback: Any) -> bool:
        if self._outer is not None:
            return False
        assert self._context is not None and self.connection is not None
        self.engine.current_transaction.reset(self._context)
        raw = self.connection.raw
        if exception is None:
            try:
                await self._transaction.commit()
            except BaseException as error:
                # Whether a COMMIT that failed or ran out of time landed is unknown: the
                # connection is dropped (the server rolls back what did not land).
                await self.engine.give_back(raw, error)
                raise
        elif not _unfinished(exception):
            try:
                await self._transaction.rollback()
            except Exception:  # noqa: BLE001 - the body's error is the one to report
                raw.terminate()
        await self.engine.give_back(raw, exception)
        return False


class DeadlinePostgresEngine(PostgresEngine):
    def __init__(self, dsn: str, deadlines: Deadlines):
        super().__init__(config=deadlines.connection_config(dsn))
        self.deadlines = deadlines

    async def acquire(self) -> Any:
        if self.pool is None:
            raise ValueError("A pool isn't currently running.")
        return await self.pool.acquire(timeout=self.deadlines.acquire_s)

    async def give_back(self, raw: Any, error: BaseException | None = None) -> None:
        """Return a connection to the pool; drop it, without a word to a server that may not be
        answering, when its last statement did not end or the connection failed. The pool
        opens a new one when one is needed."""
        if _unfinished(error) or isinstance(error, OSError):
            raw.terminate()
        assert self.pool is not None
        # The release runs the pool's reset statement (within the statement deadline). One
        # that fails drops the connection by itself, and is no failure of what the connection
        # did: a COMMIT that landed stays landed.
        with contextlib.suppress(Exception):
            await self.pool.release(raw)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[TimedConnection]:
        raw = await self.acquire()
        try:
            yield TimedConnection(raw, self.deadlines.statement_s)
        except BaseException as error:
            await self.give_back(raw, error)
            raise
        await self.give_back(raw)

    async def _run_in_pool(self, query: str, args: Sequence[Any] | None = None) -> Any:
        async with self.connection() as connection:
            return await connection.fetch(query, *(args or ()))

    def transaction(self, allow_nested: bool = True) -> DeadlineTransaction:  # type: ignore[override]
        return DeadlineTransaction(self)

    async def close_connection_pool(self) -> None:
        """Close the pool; a server that does not answer the goodbyes is left without them."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                async with asyncio.timeout(self.deadlines.statement_s):
                    await pool.close()
            except TimeoutError:
                pool.terminate()
