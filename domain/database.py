"""Database engines: pick one from a URL, bind the tables to it, migrate; the run store for it."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import logging
import os
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

# Piccolo's migration runner finds its engine through this module; set before Piccolo reads it.
os.environ.setdefault("PICCOLO_CONF", "domain.piccolo_conf")

from piccolo.apps.migrations.commands.forwards import run_forwards  # noqa: E402
from piccolo.apps.migrations.tables import Migration  # noqa: E402
from piccolo.engine.base import Engine  # noqa: E402
from piccolo.engine.postgres import PostgresEngine  # noqa: E402
from piccolo.engine.sqlite import SQLiteEngine  # noqa: E402

import asyncpg  # noqa: E402

from domain import piccolo_conf  # noqa: E402
from domain.postgres_engine import DeadlinePostgresEngine, Deadlines  # noqa: E402
from domain.runs.postgres_store import PostgresRunStore  # noqa: E402
from domain.runs.sqlite_store import SQLiteRunStore  # noqa: E402
from domain.runs.store import RunStore  # noqa: E402
from domain.sqlite_engine import InlineSQLiteEngine  # noqa: E402
from domain.tables import TABLES  # noqa: E402

log = logging.getLogger(__name__)

_MIGRATION_LOCK_KEY = 0x63686174  # "chat"


class DatabaseUrlError(ValueError):
    pass


class DatabaseUnreachable(ConnectionError):
    """The database a valid URL names could not be opened; the message names where, never a secret."""


def _parse(url: str) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgres", url)``: the one reading of a database URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here, not deep in the driver
    except ValueError as exc:
        raise DatabaseUrlError(f"not a URL ({exc})") from None
    if parts.scheme == "sqlite":
        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path or path == ":memory:":
            raise DatabaseUrlError("sqlite URLs need a file path, e.g. sqlite:///data/chat.sqlite3")
        return "sqlite", path
    if parts.scheme in ("postgres", "postgresql"):
        return "postgres", url
    raise DatabaseUrlError(f"unsupported database URL scheme {parts.scheme!r} (use sqlite:// or postgresql://)")


def engine_for(url: str, deadlines: Deadlines = Deadlines()) -> Engine:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``postgresql://…`` (whose
    waits for the server end by ``deadlines``)."""
    kind, target = _parse(url)
    if kind == "sqlite":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        return InlineSQLiteEngine(path=target)
    return DeadlinePostgresEngine(target, deadlines)


async def probe(url: str, timeout_s: float = 10.0) -> None:
    """Open the database once and leave: ``DatabaseUrlError`` or ``DatabaseUnreachable`` in one
    line, before a server starts (the engines' own failures are long tracebacks)."""
    kind, target = _parse(url)
    where = _location(kind, target)
    try:
        if kind == "postgres":
            connection = await asyncpg.connect(target, timeout=timeout_s)
            await connection.close()
        else:
            await asyncio.to_thread(_open_sqlite, target)
    except ValueError as exc:  # asyncpg's reading of the URL's options (sslmode=…)
        raise DatabaseUrlError(_one_line(exc)) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error) as exc:
        raise DatabaseUnreachable(f"cannot open the database at {where}: {_one_line(exc)}") from None


def _open_sqlite(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA schema_version")
    finally:
        connection.close()


def _location(kind: str, target: str) -> str:
    """Where a URL points, without its user or password."""
    if kind == "sqlite":
        return target
    parts = urlsplit(target)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path or '/'}"


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(text.split())


def bind(engine: Engine) -> None:
    """Point every table, and Piccolo's migration machinery, at ``engine``."""
    piccolo_conf.DB = engine
    for table in (*TABLES, Migration):
        table._meta.refresh_db()  # Piccolo's documented way: the table looks up piccolo_conf.DB again


async def open_database(url: str, deadlines: Deadlines = Deadlines()) -> Engine:
    engine = engine_for(url, deadlines)
    if isinstance(engine, DeadlinePostgresEngine):
        # Migrations first, on an engine of their own without statement deadlines: one may
        # take long (an index on a big table), and only the serving engine needs them.
        migrating = PostgresEngine(config={"dsn": url, "timeout": deadlines.connect_s})
        bind(migrating)
        await migrating.start_connection_pool(min_size=1, max_size=2)
        try:
            async with _migration_lock(url, migrating, deadlines.connect_s):
                await migrate()
        finally:
            await migrating.close_connection_pool()
        bind(engine)
        await engine.start_connection_pool(min_size=2, max_size=20)
        return engine
    bind(engine)
    if isinstance(engine, SQLiteEngine):
        # WAL lets readers go on while one run writes.
        await engine.run_ddl("PRAGMA journal_mode=WAL")
    async with _migration_lock(url, engine):
        await migrate()
    return engine


@contextlib.asynccontextmanager
async def _migration_lock(url: str, engine: Engine, connect_s: float = 60.0):
    """Instances starting together (workers, a scaled deployment) migrate one at a time."""
    if isinstance(engine, PostgresEngine):
        connection = await asyncpg.connect(url, timeout=connect_s)
        try:
            await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
            yield
        finally:
            await connection.close()  # releases the session lock
    else:
        path = Path(engine.path).with_suffix(".migrate-lock")
        with open(path, "w") as file:
            await asyncio.to_thread(fcntl.flock, file, fcntl.LOCK_EX)
            yield


async def answers(engine: Engine) -> bool:
    """Whether the database answers a ``SELECT 1`` (on PostgreSQL, within its health deadline)."""
    try:
        if isinstance(engine, DeadlinePostgresEngine):
            async with asyncio.timeout(engine.deadlines.health_s):
                await engine.run_ddl("SELECT 1")
        else:
            await engine.run_ddl("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means no
        return False
    return True


async def close_database(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.close_connection_pool()
    elif isinstance(engine, InlineSQLiteEngine):
        await engine.close()


async def migrate() -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        result = await run_forwards(app_name="domain")
    for line in output.getvalue().splitlines():
        if line.strip():
            log.debug("migrate: %s", line.strip())
    if not result.success:
        raise RuntimeError(f"database migration failed: {result.message}")


UNREACHABLE = (*SQLiteRunStore.UNREACHABLE, *PostgresRunStore.UNREACHABLE)
"""What the drivers raise when the database cannot be reached (not a wrong query)."""


def run_store(engine: Engine) -> RunStore:
    """The run store for ``engine``: the one place that asks which engine it is."""
    return SQLiteRunStore(engine) if isinstance(engine, InlineSQLiteEngine) else PostgresRunStore(engine)
