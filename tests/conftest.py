"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL where reachable),
the real app behind Litestar's test client, and the real app behind uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest
import uvicorn
from litestar.testing import TestClient

from app.auth import Authenticator
from app.cli import uvicorn_options
from app.main import create_app
from app.settings import Settings

JWT_SECRET = "test-secret-which-is-long-enough-for-hs256"


def _own_redis_database(url: str, worker: str) -> str:
    """Parallel workers (pytest-xdist: gw0, gw1, ...) each get a Redis database of their own; the
    broker names its channels after it, so one worker's instances never hear another's."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{1 + int(worker.removeprefix('gw'))}"))


if os.environ.get("TEST_REDIS_URL") and os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["TEST_REDIS_URL"] = _own_redis_database(os.environ["TEST_REDIS_URL"], os.environ["PYTEST_XDIST_WORKER"])

BACKENDS = ["sqlite", "postgres"]


def _run(coro):
    """Run one coroutine on a private loop: test bodies stay independent of the app's loop."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str | None]:
    """A throw-away database on the TEST_POSTGRES_URL server, dropped at the end."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        yield None
        return
    name = f"chat_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    _run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def fresh_postgres(postgres_server: str | None) -> str:
    """The session's PostgreSQL database, emptied; skips (or fails, in CI) without one."""
    if postgres_server is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES is set but TEST_POSTGRES_URL is not")
        pytest.skip("PostgreSQL tests need TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")

    async def reset() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    _run(reset())
    return postgres_server


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path, postgres_server) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.sqlite3'}"
    return fresh_postgres(postgres_server)


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(
        data_dir=str(tmp_path / "data"), database_url=database_url, jwt_secret=JWT_SECRET,
        offline_token_delay_ms=0, sse_ping_interval_s=15,
    )


def token_for(user: str, ttl_s: int = 3600) -> str:
    return Authenticator(JWT_SECRET).issue(user, ttl_s)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), timeout=30) as test_client:
        yield test_client


class LiveServer(msgspec.Struct):
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_live_server(settings: Settings, port: int = 0) -> LiveServer:
    """The real app on uvicorn at 127.0.0.1 (on a free port by default), in a thread of its own."""
    options = {**uvicorn_options(settings), "timeout_graceful_shutdown": 5}
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return LiveServer(url=f"http://127.0.0.1:{port}", settings=settings, server=server, thread=thread)


@contextlib.contextmanager
def serving(app: object, **options: object) -> Iterator[int]:
    """A bare ASGI app on uvicorn (the server's options, overridable) at 127.0.0.1; its port.
    log_config=None: uvicorn's records reach the root logger, so caplog sees any traceback."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None,
                            **{**uvicorn_options(Settings()), **options})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        assert thread.is_alive(), "uvicorn did not start"
        threading.Event().wait(0.01)
    else:
        raise RuntimeError("uvicorn did not start in 10 s")
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(settings) -> Iterator[LiveServer]:
    live = start_live_server(settings)
    yield live
    live.stop()


def count_rows(database_url: str, table: str, where: str = "", *args) -> int:
    """Count rows straight from the database, independent of the app and of Piccolo."""
    sql = f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "")
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            return conn.execute(sql.replace("$1", "?").replace("$2", "?"), args).fetchone()[0]

    async def query() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return _run(query())


def wait_until_no_run_runs(database_url: str, timeout_s: float = 10) -> None:
    """Wait (at most ``timeout_s``) until no run is ``running``: a stopped reply has ended."""
    deadline = time.monotonic() + timeout_s
    while count_rows(database_url, "run", "status = 'running'") and time.monotonic() < deadline:
        time.sleep(0.05)


def fetch_rows(database_url: str, sql: str, *args) -> list[tuple]:
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            return conn.execute(sql.replace("$1", "?").replace("$2", "?"), args).fetchall()

    async def query() -> list[tuple]:
        conn = await asyncpg.connect(database_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return _run(query())


def write_before_migration(database_url: str, migration_id: str, statements: list[str]) -> None:
    """Migrate a fresh database up to ``migration_id`` and write ``statements`` there: what an
    older server left behind, for a later migration to take over."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from domain.database import bind, close_database, engine_for

    async def write() -> None:
        engine = engine_for(database_url)
        bind(engine)
        if engine.engine_type == "postgres":
            await engine.start_connection_pool()
        try:
            assert (await run_forwards(app_name="domain", migration_id=migration_id)).success
            async with engine.transaction():
                for statement in statements:
                    await engine.run_ddl(statement)
        finally:
            await close_database(engine)

    _run(write())


def stored_events(database_url: str, run_id: str) -> list[dict]:
    """A run's events as saved: each row holds consecutive events, one per line."""
    rows = fetch_rows(database_url, "SELECT seq, payload FROM run_event WHERE run = $1 ORDER BY seq", run_id)
    events = [json.loads(line) for _, payload in rows for line in payload.split("\n")]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "rows must hold consecutive events"
    return events


class ServerProcess:
    """``chat-server serve`` as a real process, for signals and kill -9.

    Its output goes to a file, not a pipe: a pipe nobody reads fills at 64 KiB and then blocks
    the server's next log line (a server that "does not stop" on SIGTERM). ``stop`` fails the
    test if the server logged a background task's exception that nobody retrieved."""

    def __init__(self, settings: Settings, *, wait: bool = True, workers: int = 1, **env: str):
        import socket
        import subprocess
        import sys
        import tempfile

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {
            **os.environ,
            "DATA_DIR": settings.data_dir, "DATABASE_URL": settings.database, "JWT_SECRET": JWT_SECRET,
            "OFFLINE_TOKEN_DELAY_MS": str(settings.offline_token_delay_ms), **env,
        }
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            env=environ, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() also ends its workers
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        import httpx

        # Generous: on a busy 2-core machine importing the stack alone can take seconds.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            threading.Event().wait(0.05)
        self._kill()
        raise RuntimeError(f"server did not start:\n{self.output()}")

    def output(self) -> str:
        """Everything the server has written so far (stdout and stderr)."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def _kill(self) -> None:
        """SIGKILL to the whole process group: a worker outliving its parent would hold the port."""
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        self._kill()
        assert_no_unretrieved_exceptions(self.output())


# A task of ours that ended with an exception nobody awaited (issue 33). A bare Future a
# driver leaves behind when the server drops its connection (asyncpg's "Future exception was
# never retrieved" on a terminated connection) is the library's, not a task of ours.
UNRETRIEVED = "Task exception was never retrieved"


def assert_no_unretrieved_exceptions(log: str) -> None:
    """A background task that ended with an exception nobody awaited is a bug (issue 33)."""
    assert UNRETRIEVED not in log, f"a background task's exception was never retrieved:\n{log[-4000:]}"


class _UnretrievedRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if UNRETRIEVED in message:
            self.messages.append(message + "\n" + repr(record.__dict__.get("exc_info")))


@pytest.fixture(autouse=True)
def no_unretrieved_task_exceptions() -> Iterator[None]:
    """Fails a test whose in-process servers leave a task's exception unretrieved. asyncio logs
    it when the task is collected, so collect before looking."""
    handler = _UnretrievedRecords()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        yield
        gc.collect()
    finally:
        asyncio_logger.removeHandler(handler)
    assert not handler.messages, "\n".join(handler.messages)
