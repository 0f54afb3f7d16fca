"""Piccolo's SQLite engine on long-lived connections: one writer and a few readers.

Piccolo's own engine opens a connection, and with it a thread, for every transaction and for
every query outside one (TRAPS), and sends ``PRAGMA foreign_keys`` before every query in a
transaction. Per reply that was about 4 ms of CPU on short-lived threads and a queue of trips
for each start. Here connections live as long as the engine: write (IMMEDIATE) transactions
take turns on the one writer connection, queued on an asyncio lock so the lock passes on at
once (writers that meet inside SQLite wait in its busy handler, which sleeps up to 100 ms a
try and lets newcomers overtake); reads and deferred transactions use a reader, which in WAL
mode sees the last commit without waiting for the writer.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import aiosqlite
from piccolo.engine.sqlite import SQLiteEngine, SQLiteTransaction, TransactionType

_WRITES = (TransactionType.immediate, TransactionType.exclusive)


class _Connections:
    """The connections of one event loop (asyncio locks and queues belong to one loop)."""

    def __init__(self, engine: PooledSQLiteEngine):
        self._engine = engine
        self.write_lock = asyncio.Lock()
        self._writer: aiosqlite.Connection | None = None
        self._idle: asyncio.LifoQueue[aiosqlite.Connection] = asyncio.LifoQueue()
        self._readers: list[aiosqlite.Connection] = []

    async def writer(self) -> aiosqlite.Connection:
        """The writer connection; the caller holds ``write_lock``."""
        if self._writer is None:
            self._writer = await self._engine.get_connection()
        return self._writer

    async def reader(self) -> aiosqlite.Connection:
        if self._idle.empty() and len(self._readers) < self._engine.readers:
            self._readers.append(await self._engine.get_connection())
            return self._readers[-1]
        return await self._idle.get()

    async def release(self, connection: aiosqlite.Connection) -> None:
        """Give a connection back, never inside a transaction (a failed COMMIT leaves one)."""
        if connection.in_transaction:
            await connection.rollback()
        if connection is not self._writer:
            self._idle.put_nowait(connection)

    async def close(self) -> None:
        for connection in [*self._readers, *([self._writer] if self._writer else [])]:
            await connection.close()
        self._readers, self._writer = [], None


class PooledTransaction(SQLiteTransaction):
    async def __aenter__(self) -> SQLiteTransaction:
        if self._parent is not None:
            return self._parent
        pool = self.engine.connections()
        if self.transaction_type in _WRITES:
            await pool.write_lock.acquire()
            self._lock = pool.write_lock
            try:
                self.connection = await pool.writer()
                await self.begin()
            except BaseException:
                self._lock.release()
                raise
        else:
            self._lock = None
            self.connection = await pool.reader()
            try:
                await self.begin()
            except BaseException:
                await pool.release(self.connection)
                raise
        self.context = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(self, exception_type, exception, traceback) -> bool:
        if self._parent:
            return exception is None
        try:
            if exception:
                if not self._rolled_back:
                    await self.rollback()
            elif not self._committed and not self._rolled_back:
                await self.commit()
        finally:
            self.engine.current_transaction.reset(self.context)
            try:
                await self.engine.connections().release(self.connection)
            finally:
                if self._lock is not None:
                    self._lock.release()
        return exception is None


class PooledSQLiteEngine(SQLiteEngine):
    def __init__(self, path: str, readers: int = 4, **connection_kwargs: Any):
        super().__init__(path=path, **connection_kwargs)
        self.readers = readers
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connections] = weakref.WeakKeyDictionary()

    def connections(self) -> _Connections:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _Connections(self)
        return pool

    async def close(self) -> None:
        """Close every connection (their threads keep a process alive until then)."""
        for pool in list(self._pools.values()):
            await pool.close()
        self._pools.clear()

    def transaction(
        self, transaction_type: TransactionType = TransactionType.deferred, allow_nested: bool = True
    ) -> SQLiteTransaction:
        return PooledTransaction(engine=self, transaction_type=transaction_type, allow_nested=allow_nested)

    async def _run_in_existing_connection(
        self, connection, query: str, args: list[Any] | None = None, query_type: str = "generic", table=None
    ):
        # As Piccolo's, less the PRAGMA before every query: these connections set it once.
        if query_type == "insert" and self.get_version_sync() < 3.35:
            return await super()._run_in_existing_connection(connection, query, args, query_type, table)
        async with connection.execute(query, args or []) as cursor:
            return await cursor.fetchall()

    async def _run_in_new_connection(
        self, query: str, args: list[Any] | None = None, query_type: str = "generic", table=None
    ):
        pool = self.connections()
        connection = await pool.reader()
        try:
            return await self._run_in_existing_connection(connection, query, args, query_type, table)
        finally:
            await pool.release(connection)
