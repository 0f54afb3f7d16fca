"""Piccolo's SQLite engine, with statements run on the event loop's thread.

Piccolo's own engine goes through aiosqlite: a new connection and thread for every
transaction and for every query outside one (TRAPS), and a trip to that thread for every
statement, cursor fetch and close. A trip costs about 60 µs of CPU (a statement itself about
1 µs), and the replies' starts and saves queued behind them: per reply, about 3 ms of CPU on
SQLite. Here two long-lived connections answer in place: in WAL mode with synchronous=NORMAL
a commit writes to the WAL without waiting for the disk, so no statement blocks the loop for
long; the fsyncs happen in checkpoints, which run on a worker thread.

- Transactions (every one is a writer's, begun IMMEDIATE) take turns on the writer
  connection, queued on an asyncio lock, so the lock passes on at once instead of through
  SQLite's busy handler (which sleeps up to 100 ms a try and lets newcomers overtake).
- Queries outside a transaction use the reader connection, which in WAL mode sees the last
  commit and never an open transaction.
- A long read (a search ranking thousands of matches: tens of milliseconds) goes to a worker
  thread on a connection of its own (``read_off_loop``), so it never holds up the replies.
- Another process holding the write lock (a second worker, ``chat-server migrate``) makes
  SQLite answer "busy" at once; that wait happens here, asleep, not inside SQLite.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from piccolo.engine.sqlite import SQLiteEngine, TransactionType, dict_factory
from piccolo.querystring import QueryString

T = TypeVar("T")
_CHECKPOINT_EVERY = 100  # commits
log = logging.getLogger(__name__)


def _log_failure(checkpoint: asyncio.Future[Any]) -> None:
    if not checkpoint.cancelled() and checkpoint.exception() is not None:
        log.warning("SQLite checkpoint failed (the WAL keeps the data): %s", checkpoint.exception())


class InlineTransaction:
    """A writer's transaction on the engine's writer connection: Piccolo's queries find it
    through the engine's ``current_transaction`` (the attribute Piccolo's engines consult)
    and run on its ``connection``. Our own class, not a subclass of Piccolo's
    ``SQLiteTransaction``, so nothing here depends on that class's private state. A
    transaction begun inside another joins it."""

    def __init__(self, engine: InlineSQLiteEngine, transaction_type: TransactionType):
        self.engine = engine
        self.transaction_type = transaction_type
        self.connection = engine.writer
        self._outer: InlineTransaction | None = None
        self._context: contextvars.Token[Any] | None = None

    async def __aenter__(self) -> InlineTransaction:
        current = self.engine.current_transaction.get()
        if current is not None:
            self._outer = current
            return current
        lock = self.engine.write_lock()
        await lock.acquire()
        try:
            # Every transaction here is a writer's: a DEFERRED one would meet another process's
            # lock at its first write, inside the transaction, where it cannot wait asleep.
            kind = "EXCLUSIVE" if self.transaction_type is TransactionType.exclusive else "IMMEDIATE"
            await self.engine.when_not_busy(lambda: self.connection.execute(f"BEGIN {kind}"))
        except BaseException:
            lock.release()
            raise
        self._context = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(self, exception_type: Any, exception: BaseException | None, traceback: Any) -> bool:
        if self._outer is not None:
            return False
        committed = False
        try:
            if exception is None:
                self.connection.execute("COMMIT")
                committed = True
        finally:
            if self.connection.in_transaction:  # an exception, or a COMMIT that failed
                self.connection.execute("ROLLBACK")
            assert self._context is not None
            self.engine.current_transaction.reset(self._context)
            self.engine.write_lock().release()
        if committed:
            self.engine.committed()
        return False


class InlineSQLiteEngine(SQLiteEngine):
    def __init__(self, path: str, busy_timeout_s: float = 30.0, **connection_kwargs: Any):
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or newer is needed (RETURNING)")
        super().__init__(path=path, **connection_kwargs)
        self.busy_timeout_s = busy_timeout_s
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._slow_reader: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Future[Any] | None = None
        self._commits = 0
        # asyncio locks belong to one event loop (tests run apps on several).
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._slow_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _connect(self, timeout: float = 0) -> sqlite3.Connection:
        # timeout=0: a busy database answers at once and when_not_busy waits asleep.
        connection = sqlite3.connect(**{**self.connection_kwargs, "timeout": timeout, "check_same_thread": False})
        connection.row_factory = dict_factory
        connection.execute("PRAGMA foreign_keys = 1")
        connection.execute("PRAGMA synchronous = NORMAL")  # with WAL: no fsync per commit
        connection.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run off the loop
        return connection

    @property
    def writer(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._connect()
        return self._writer

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect()
        return self._reader

    def write_lock(self) -> asyncio.Lock:
        return self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())

    async def when_not_busy(self, attempt: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + self.busy_timeout_s, 0.001
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or loop.time() > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def read_off_loop(self, query: str, args: list[Any]) -> list[dict[str, Any]]:
        """A read that may take long, on a worker thread and a connection of its own (one at a
        time: a second waits here, asleep); it sees the last commit, as the reader does. On
        its thread, waiting out another process's lock in SQLite's busy handler costs nothing."""
        lock = self._slow_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if self._slow_reader is None:
                self._slow_reader = self._connect(timeout=self.busy_timeout_s)
            reader = self._slow_reader
            return await asyncio.to_thread(lambda: reader.execute(query, args).fetchall())

    def committed(self) -> None:
        """Every so many commits, copy the WAL into the database file, on a worker thread
        (that is where the fsyncs happen); the committer does not wait for it."""
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY or (self._checkpoint and not self._checkpoint.done()):
            return
        if self._checkpointer is None:
            self._checkpointer = self._connect()
        self._checkpoint = asyncio.ensure_future(
            asyncio.to_thread(self._checkpointer.execute, "PRAGMA wal_checkpoint(PASSIVE)")
        )
        self._checkpoint.add_done_callback(_log_failure)

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        for connection in (self._writer, self._reader, self._checkpointer, self._slow_reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = self._checkpointer = self._checkpoint = self._slow_reader = None

    def transaction(
        self, transaction_type: TransactionType = TransactionType.deferred, allow_nested: bool = True
    ) -> InlineTransaction:  # type: ignore[override]
        return InlineTransaction(self, transaction_type)

    async def get_connection(self) -> sqlite3.Connection:
        raise NotImplementedError("statements run on the engine's own connections")

    # Piccolo's engine interface (the abstract methods of ``piccolo.engine.base.Engine``):
    # every query and DDL statement of Piccolo's comes through these two, so nothing here
    # depends on how Piccolo's own SQLite engine runs a statement.
    # tests/test_private_hooks.py checks both, and that no Piccolo query bypasses them.
    async def run_querystring(self, querystring: QueryString, in_pool: bool = False) -> list[dict[str, Any]]:
        query, args = querystring.compile_string(engine_type=self.engine_type)
        return await self._execute(query, args)

    async def run_ddl(self, ddl: str, in_pool: bool = False) -> list[dict[str, Any]]:
        return await self._execute(ddl, [])

    async def _execute(self, query: str, args: list[Any]) -> list[dict[str, Any]]:
        transaction = self.current_transaction.get()
        if transaction is not None:
            return transaction.connection.execute(query, args).fetchall()
        return await self.when_not_busy(lambda: self.reader.execute(query, args).fetchall())
