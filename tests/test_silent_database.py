"""A PostgreSQL that stops answering (issue 33, item 3), as clients and operators see it.

A TCP proxy in front of the test's database can go silent: it keeps every connection open and
accepts new ones, but nothing goes through, in either direction, until it forwards again. What
was sent meanwhile is held and delivered then (as a network partition does, TCP retransmitting)
or lost (as a middlebox that drops a connection's packets does). The server runs with short
deadlines; a silent database must get the same fast coded 503s as one that is down, and the
server must be itself again once the database answers, without a restart.

SQLite is a local file: there is no connection that can go silent, so this is PostgreSQL's
(the admission racing a shutdown, at the end, is both engines').
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import pytest
import websockets

from domain import events
from domain.agent import todo_agent
from domain.database import close_database, open_database, run_store
from domain.offline_model import OfflineModel
from domain.runs import RunManager
from tests.conftest import ServerProcess, Settings, auth, fetch_rows, fresh_postgres, stored_events, token_for

# Short deadlines, so the test sees in a second or two what production sees in ten.
DEADLINES = {
    "DATABASE_CONNECT_TIMEOUT_S": "1", "DATABASE_ACQUIRE_TIMEOUT_S": "1.5",
    "DATABASE_STATEMENT_TIMEOUT_S": "1", "DATABASE_HEALTH_TIMEOUT_S": "1",
}
FAST_S = 5.0  # "fast": well within this, whatever the deadlines add up to
LONG_REPLY = "what can you do?"  # the offline model's help text: ~90 pieces, no tool, no database


class SilentProxy:
    """A TCP proxy (asyncio, on a thread of its own) that can go silent and come back."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.lose = False  # while silent: drop what arrives instead of holding it
        self.lost_chunks = 0
        self.held_chunks = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self._call(self._start())

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _start(self) -> int:
        self.forwarding = asyncio.Event()
        self.forwarding.set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.tasks.add(task := asyncio.current_task())  # type: ignore[arg-type]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        except OSError:
            client_writer.close()
        except asyncio.CancelledError:
            pass  # the proxy closes (asyncio's stream server logs a cancelled handler as an error)
        finally:
            self.tasks.discard(task)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.forwarding.is_set():
                    if self.lose:
                        self.lost_chunks += 1
                        continue
                    self.held_chunks += 1
                    await self.forwarding.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            await self.forwarding.wait()  # a close goes through no sooner than the bytes before it
            writer.close()

    def go_silent(self, *, lose: bool = False) -> None:
        self.lose = lose
        self.loop.call_soon_threadsafe(self.forwarding.clear)

    def forward(self) -> None:
        self.loop.call_soon_threadsafe(self.forwarding.set)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def start_behind_proxy(tmp_path, postgres_server, **env: str) -> tuple[str, SilentProxy, ServerProcess]:
    database = fresh_postgres(postgres_server)
    parts = urlsplit(database)
    proxy = SilentProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    settings = Settings(data_dir=str(tmp_path / "data"), database_url=through_proxy, offline_token_delay_ms=30)
    try:
        server = ServerProcess(settings, **DEADLINES, **env)
    except BaseException:
        proxy.close()
        raise
    return database, proxy, server


def ws_url(server: ServerProcess, user: str) -> str:
    return server.url.replace("http", "ws") + f"/api/{user}/ws?token={token_for(user)}"


async def frame(ws: Any, timeout_s: float = 30) -> dict:
    return msgspec.json.decode(await asyncio.wait_for(ws.recv(), timeout_s))


async def frames_until_done(ws: Any, run_id: str, timeout_s: float = 30) -> list[dict]:
    """This run's frames until its ``done`` (frames of other runs on the socket are skipped)."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while not seen or seen[-1]["type"] != "done":
        received = await frame(ws, deadline - time.monotonic())
        if received.get("run_id") == run_id:
            seen.append(received)
    return seen


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


async def timed(action: Awaitable[Any]) -> tuple[Any, float]:
    began = time.monotonic()
    result = await action
    return result, time.monotonic() - began


def assert_clean(log: str) -> None:
    assert "Task exception was never retrieved" not in log, log[-3000:]


@pytest.mark.parametrize("silence", ["held", "lost"])
def test_a_silent_postgresql_answers_fast_503s_and_the_server_recovers_by_itself(tmp_path, postgres_server, silence):
    database, proxy, server = start_behind_proxy(tmp_path, postgres_server)

    async def scenario() -> str:
        async with httpx.AsyncClient(base_url=server.url, headers=auth("alice"), timeout=30) as http:
            assert (await http.post("/api/alice/chat", json={"message": "add milk"})).status_code == 200
            async with websockets.connect(ws_url(server, "alice")) as replying, \
                    websockets.connect(ws_url(server, "alice")) as asking:
                # A reply streams while the database goes silent: its events cannot be stored.
                await replying.send(msgspec.json.encode({"type": "chat", "message": LONG_REPLY}))
                start = await frame(replying)
                assert start["type"] == "start", start
                assert (await frame(replying))["type"] == "text"
                proxy.go_silent(lose=silence == "lost")

                async def ws_chat() -> dict:
                    await asking.send(msgspec.json.encode({"type": "chat", "message": "add bread"}))
                    return await frame(asking)

                (tasks, tasks_s), (listing, listing_s), (chat, chat_s), (health, health_s), (refused, ws_s) = (
                    await asyncio.gather(
                        timed(http.get("/api/alice/tasks")), timed(http.get("/api/alice/conversations")),
                        timed(http.post("/api/alice/chat", json={"message": "add bread"})),
                        timed(http.get("/health")), timed(ws_chat()),
                    )
                )
                for response, took in ((tasks, tasks_s), (listing, listing_s), (chat, chat_s)):
                    assert response.status_code == 503, response.text
                    assert response.json()["extra"] == {"code": "database_unavailable"}
                    assert int(response.headers["retry-after"]) > 0
                    assert took < FAST_S, (response.request.url, took)
                assert health.status_code == 503 and health.json()["status"] == "degraded", health.text
                assert health_s < FAST_S
                assert refused["type"] == "error" and refused["code"] == "database_unavailable", refused
                assert ws_s < FAST_S
                # Asked again, still fast: a deadline that ran out left nothing behind waiting.
                again, again_s = await timed(http.get("/api/alice/tasks"))
                assert again.status_code == 503 and again_s < FAST_S

                proxy.forward()

                async def healthy() -> bool:
                    return (await http.get("/health")).status_code == 200

                await until(healthy, 15, "/health answers 200 again")
                # The reply that was streaming went on: all its events arrive, then its done.
                rest = await frames_until_done(replying, start["run_id"])
                assert rest[-1]["status"] == "completed", rest[-1]
                # Everything works again, without a restart.
                tasks = await http.get("/api/alice/tasks")
                assert tasks.status_code == 200 and [t["title"] for t in tasks.json()] == ["milk"]
                assert (await http.get("/api/alice/conversations")).status_code == 200
                assert (await http.post("/api/alice/chat", json={"message": "add eggs"})).status_code == 200
                await asking.send(msgspec.json.encode({"type": "chat", "message": "add butter"}))
                started = await frame(asking)
                assert started["type"] == "start", started
                assert (await frames_until_done(asking, started["run_id"]))[-1]["status"] == "completed"
                return start["run_id"]

    try:
        run_id = asyncio.run(scenario())
    finally:
        server.stop()
        proxy.close()
    # Stored once each, in order, ending in one done: the retried saves wrote nothing twice.
    events = stored_events(database, run_id)
    assert [e["type"] for e in events].count("done") == 1 and events[-1]["status"] == "completed"
    assert fetch_rows(database, "SELECT title FROM task ORDER BY id") == [("milk",), ("eggs",), ("butter",)]
    assert_clean(server.output())


def test_sigterm_after_a_silence_leaves_no_run_running(tmp_path, postgres_server):
    """The outage report: a run admitted as the database came back stayed ``running`` after
    SIGTERM, though the log said "interrupted". Its outcome waited for the group commit, which
    waited for ever on a connection whose answer the silence had swallowed."""
    database, proxy, server = start_behind_proxy(tmp_path, postgres_server)

    async def scenario() -> list[list[dict]]:
        async with httpx.AsyncClient(base_url=server.url, headers=auth("alice"), timeout=30) as http, \
                websockets.connect(ws_url(server, "alice")) as replying, \
                websockets.connect(ws_url(server, "bob")) as arriving:
            await replying.send(msgspec.json.encode({"type": "chat", "message": LONG_REPLY}))
            before = await frame(replying)
            assert (await frame(replying))["type"] == "text"
            proxy.go_silent(lose=True)

            async def commit_lost() -> bool:  # the group commit has sent something into the void
                return proxy.lost_chunks > 0

            await until(commit_lost, 10, "the group commit writes during the silence")
            proxy.forward()

            async def healthy() -> bool:
                return (await http.get("/health")).status_code == 200

            await until(healthy, 15, "/health answers 200 again")
            await arriving.send(msgspec.json.encode({"type": "chat", "message": LONG_REPLY}))
            after = await frame(arriving)
            assert after["type"] == "start", after
            server.process.send_signal(signal.SIGTERM)
            return [await frames_until_done(replying, before["run_id"]),
                    await frames_until_done(arriving, after["run_id"])]

    try:
        seen = asyncio.run(scenario())
        assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        server.stop()
        proxy.close()
    assert seen[0][-1]["status"] in ("completed", "interrupted") and seen[1][-1]["status"] == "interrupted"
    assert fetch_rows(database, "SELECT COUNT(*) FROM run WHERE status = 'running'") == [(0,)]
    assert_clean(server.output())


def test_saves_retried_after_a_commit_whose_answer_was_lost_write_nothing_twice(database_url):
    """A COMMIT that ran out of time may have landed: the retry must not add the events again,
    and a run's end must neither fail on its own message id at every retry nor count twice."""
    from tests.test_run_store import LIMITS, finished, text_events, with_store

    async def scenario(store: Any) -> str:
        new = await store.begin_run("alice", "hello", None, LIMITS, "todo")
        batch = [(new.run_id, 2, text_events(new.run_id, 2, "He", "llo"))]
        await store.save_events(batch)
        await store.save_events(batch, retry=True)  # the first attempt landed unseen
        done = [events.encode(events.Done(run_id=new.run_id, seq=4, status="completed"))]
        await store.finish_run(finished(new, text="Hello"), (new.run_id, 4, done))
        await store.finish_run(finished(new, text="Hello"), (new.run_id, 4, done))
        return new.run_id

    run_id = with_store(database_url, scenario)
    assert [e["type"] for e in stored_events(database_url, run_id)] == ["start", "text", "text", "done"]
    assert fetch_rows(database_url, "SELECT role, content FROM message ORDER BY created_at") == [
        ("user", "hello"), ("assistant", "Hello")]
    assert fetch_rows(database_url, "SELECT input_tokens, output_tokens, runs FROM daily_usage") == [(3, 5, 1)]


class GatedStore:
    """The run store, with admissions held until the test lets them through."""

    def __init__(self, store: Any):
        self.store = store
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def begin_run(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.gate.wait()
        return await self.store.begin_run(*args, **kwargs)


def test_a_start_admitted_after_closing_began_ends_interrupted(database_url):
    """The race behind the report: closing stopped the runs it knew, and a start the database
    admitted a moment later launched a run nobody stopped or waited for."""

    async def scenario() -> str:
        db = await open_database(database_url)
        store = GatedStore(run_store(db))
        runs = RunManager(db, store, todo_agent(OfflineModel(0.01)))
        await runs.open()
        try:
            starting = asyncio.create_task(runs.start("alice", LONG_REPLY))
            await store.entered.wait()
            closing = asyncio.create_task(runs.close())
            await asyncio.sleep(0)  # closing has begun
            store.gate.set()
            run = await starting
            await closing
            return run.id
        finally:
            await close_database(db)  # what the run did not store by now, it never will

    run_id = asyncio.run(scenario())
    assert fetch_rows(database_url, "SELECT status FROM run") == [("interrupted",)]
    assert stored_events(database_url, run_id)[-1]["status"] == "interrupted"
