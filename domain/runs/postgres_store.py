"""The run store on PostgreSQL: statements by asyncpg on the transaction's connection."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from domain.runs.store import SQLRunStore


class PostgresRunStore(SQLRunStore):
    UNREACHABLE = (
        OSError,  # refused, reset, timed out: the server is not there
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,  # starting up or shutting down
        asyncpg.InterfaceError,  # a pool connection that went away mid-query
        asyncpg.TooManyConnectionsError,
    )
    LOCK_USER = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
    FOR_UPDATE = " FOR UPDATE"

    def _is_conflict(self, error: Exception) -> bool:
        return isinstance(error, asyncpg.UniqueViolationError)

    async def _execute(self, connection: Any, sql: str, *args: object) -> None:
        await connection.execute(sql, *args)

    async def _executemany(self, connection: Any, sql: str, rows: list[tuple[object, ...]]) -> None:
        await connection.executemany(sql, rows)

    async def _fetch_row(self, connection: Any, sql: str, *args: object) -> tuple[Any, ...] | None:
        row = await connection.fetchrow(sql, *args)
        return None if row is None else tuple(row)

    async def _fetch_all(self, connection: Any, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await connection.fetch(sql, *args)]

    def _run_key(self, run_id: str) -> object:
        return uuid.UUID(run_id)
