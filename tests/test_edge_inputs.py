"""Inputs at the edges of what the server accepts, and peers that misbehave at the edges: each
gets its documented answer on both engines, and nothing ends in a 500, a cut stream or a
background task that fails unseen (issue 33, items 1, 2 and 6)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import Iterator

import httpx
import msgspec
import pytest
import websockets

from app.main import create_app
from domain.database import close_database, open_database, run_store
from domain.limits import MAX_SEQ, Limits
from tests.conftest import auth, fetch_rows, token_for, wait_until_no_run_runs


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def server_errors() -> Iterator[list[str]]:
    """The errors the server logs meanwhile, asyncio's "Task exception was never retrieved"
    included (that one is logged when the failed task is collected: collect before reading).
    Attached after the server started: Litestar's logging config replaces the root's handlers."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]  # uvicorn's do not propagate
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        gc.collect()
        for logger in loggers:
            logger.removeHandler(handler)


# -- item 1: a resume from the top seq ----------------------------------------------------------


def test_the_store_reads_nothing_after_the_top_seq(database_url):
    async def scenario() -> list[list[bytes]]:
        db = await open_database(database_url)
        try:
            store = run_store(db)
            new = await store.begin_run("alice", "hi", None, Limits(), "todo")
            return [await store.event_payloads(new.run_id, after, rows) for after in (MAX_SEQ - 1, MAX_SEQ)
                    for rows in (None, 64)]
        finally:
            await close_database(db)

    assert asyncio.run(scenario()) == [[], [], [], []]


def finished_run(http: httpx.Client) -> dict:
    reply = http.post("/api/alice/chat", json={"message": "add buy milk"}).json()
    assert reply["status"] == "completed"
    return reply


@pytest.mark.parametrize("how", ["Last-Event-ID", "after"])
def test_a_resume_from_the_top_seq_is_an_empty_replay_on_both_engines(live_server, how):
    with httpx.Client(base_url=live_server.url, headers=auth("alice"), timeout=10) as http:
        run_id = finished_run(http)["run_id"]
        headers, params = ({"Last-Event-ID": str(MAX_SEQ)}, {}) if how == "Last-Event-ID" else ({}, {"after": MAX_SEQ})
        with server_errors() as errors:
            response = http.get(f"/api/alice/runs/{run_id}/events", headers=headers, params=params)
            # One below: the last seq the column holds is still a seq a client may have seen.
            below = http.get(f"/api/alice/runs/{run_id}/events", headers={"Last-Event-ID": str(MAX_SEQ - 1)})
            # The stream is whole and the server still serves the run's events.
            replay = http.get(f"/api/alice/runs/{run_id}/events", headers={"Last-Event-ID": "0"})

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b""
    assert below.status_code == 200 and below.content == b""
    assert replay.status_code == 200 and b'"type":"done"' in replay.content
    assert errors == []


def test_a_websocket_resume_from_the_top_seq_is_an_empty_replay_on_both_engines(live_server):
    with httpx.Client(base_url=live_server.url, headers=auth("alice"), timeout=10) as http:
        run_id = finished_run(http)["run_id"]
    url = live_server.url.replace("http", "ws") + f"/api/alice/ws?token={token_for('alice')}"

    async def scenario() -> list[dict]:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "resume", "run_id": run_id, "after": MAX_SEQ}))
            await ws.send(json.dumps({"type": "ping"}))
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            # The socket still follows runs: the whole run from the start.
            await ws.send(json.dumps({"type": "resume", "run_id": run_id, "after": 0}))
            frames = [first]
            while frames[-1].get("type") != "done":
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            return frames

    with server_errors() as errors:
        frames = asyncio.run(scenario())
    assert frames[0] == {"type": "pong"}  # nothing came for the resume, and no error
    assert frames[1]["seq"] == 1 and frames[-1]["status"] == "completed"
    assert errors == []


# -- item 2: a static path the file system cannot look up ---------------------------------------


@pytest.mark.parametrize("path", [
    "a" * 300,  # longer than a file name may be (ENAMETOOLONG)
    "a/" * 3000 + "b",  # longer than a path may be
    "app.js/x",  # a file used as a directory (ENOTDIR)
    "%00",  # a NUL (the file system refuses to look it up)
    "vendor",  # a directory
])
def test_a_static_path_that_names_no_file_is_404_on_both_engines(client, path):
    response = client.get(f"/static/{path}")
    assert response.status_code == 404, response.text
    # Not Litestar's own detail, which names the path looked up (the server's directory too).
    assert response.json() == {"status_code": 404, "detail": "Not Found", "code": "not_found", "extra": {"code": "not_found"}}
    assert client.get("/static/app.js").status_code == 200


# -- item 6: a socket that closes under a forwarder ---------------------------------------------


class UvicornSocket:
    """The ASGI side of a WebSocket as uvicorn shows it to the app. While ``reading`` is clear
    (a client that stops reading) every send, a close too, waits. Once a close went out, from
    the app or from uvicorn itself (``keepalive_timeout``: a client that does not answer the
    ping in time), a send raises the RuntimeError uvicorn raises, and the app hears of the end
    only when the connection is gone (``gone``)."""

    def __init__(self, path: str) -> None:
        self.scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
            "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000), "root_path": "",
            "path": path, "raw_path": path.encode(), "query_string": f"token={token_for('alice')}".encode(),
            "headers": [(b"host", b"127.0.0.1")], "subprotocols": [], "extensions": {}, "state": {},
        }
        self._incoming: asyncio.Queue[dict] = asyncio.Queue()
        self._incoming.put_nowait({"type": "websocket.connect"})
        self.reading = asyncio.Event()
        self.reading.set()
        self.waiting = 0  # sends waiting for the client to read
        self.frames: list[dict] = []
        self.close_code: int | None = None  # of the close that went out
        self.refused = 0  # sends after it
        self.closing = asyncio.Event()  # the app sent a close (it may still wait to go out)

    def say(self, frame: dict) -> None:
        self._incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(frame)})

    def keepalive_timeout(self) -> None:
        self.close_code = 1011  # what uvicorn's keepalive_timeout sends

    def gone(self) -> None:
        self._incoming.put_nowait({"type": "websocket.disconnect", "code": 1006})

    async def receive(self) -> dict:
        return await self._incoming.get()

    async def send(self, message: dict) -> None:
        if message["type"] == "websocket.close":
            self.closing.set()
        self.waiting += 1
        try:
            await self.reading.wait()
        finally:
            self.waiting -= 1
        if self.close_code is not None:
            self.refused += 1
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}', after sending 'websocket.close'.")
        if message["type"] == "websocket.close":
            self.close_code = message["code"]
        elif message["type"] == "websocket.send":
            self.frames.append(json.loads(message["text"]))


async def until(condition, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


WORDS = " ".join(f"w{n}" for n in range(300))
SOCKETS = {  # the path, and a frame that starts a reply there
    "ws": ("/api/alice/ws", lambda n: {"type": "chat", "message": f"complete {WORDS}"}),
    "ai_sdk_ws": ("/api/alice/ai-sdk/ws", lambda n: {
        "type": "send", "requestId": f"r{n}", "id": f"chat-{n}",
        "messages": [{"id": f"m{n}", "role": "user", "parts": [{"type": "text", "text": f"complete {WORDS}"}]}],
    }),
}


def on_a_socket(settings, database_url, path: str, story) -> tuple[UvicornSocket, list[str]]:
    """Run ``story(socket)`` against the app over ``path``, wait for every reply to end, let the
    socket go: the socket, and what the loop reported (a task failing unseen, among others) and
    the server logged as errors."""
    app = create_app(msgspec.structs.replace(settings, send_timeout_s=0.5, offline_token_delay_ms=5))
    socket = UvicornSocket(path)

    async def scenario() -> list[str]:
        problems: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: problems.append(context["message"]))
        async with app.lifespan():
            serving = asyncio.create_task(app(socket.scope, socket.receive, socket.send))
            try:
                await story(socket)
                await asyncio.to_thread(wait_until_no_run_runs, database_url)
            finally:
                socket.reading.set()
                socket.gone()
                await asyncio.wait_for(serving, 10)
        gc.collect()  # a failed task nobody retrieved says so when it is collected
        return problems

    with server_errors() as errors:
        problems = asyncio.run(asyncio.wait_for(scenario(), 60))
    return socket, problems + errors


@pytest.mark.parametrize("kind", SOCKETS)
def test_a_socket_uvicorn_closed_under_the_forwarders_ends_them_quietly(settings, database_url, kind):
    """Issue 33, item 6: a client too slow to answer uvicorn's keepalive ping is closed by
    uvicorn itself; the app hears of it only when the connection is gone, and meanwhile every
    send of the replies it follows is refused. That is their end, not a task failing unseen."""
    path, reply = SOCKETS[kind]

    async def story(socket: UvicornSocket) -> None:
        socket.say(reply(1))
        socket.say(reply(2))
        await until(lambda: len(socket.frames) >= 6)
        socket.keepalive_timeout()
        await until(lambda: socket.refused >= 1)

    socket, problems = on_a_socket(settings, database_url, path, story)
    assert problems == []
    assert socket.refused >= 1 and socket.close_code == 1011  # the app sent no close of its own
    # Dropping the socket stopped neither reply.
    assert fetch_rows(settings.database, "SELECT status FROM run") == [("completed",), ("completed",)]


def test_a_client_that_reads_nothing_for_the_send_timeout_is_closed_1013(settings, database_url):
    """README: a client that takes no bytes for SEND_TIMEOUT_S is disconnected. Two replies wait
    on it; the first to wait out the timeout closes the socket (1013, try again later), and the
    other one's next send finds it closed: the end of both forwarders, quietly."""
    path, reply = SOCKETS["ws"]

    async def story(socket: UvicornSocket) -> None:
        socket.say(reply(1))
        await until(lambda: len(socket.frames) >= 3)
        socket.reading.clear()  # the client stops reading
        await until(lambda: socket.waiting == 1)
        socket.say(reply(2))
        await until(lambda: socket.waiting == 2)
        await asyncio.wait_for(socket.closing.wait(), 10)
        socket.reading.set()  # it reads again: the close goes out, and nothing after it

    socket, problems = on_a_socket(settings, database_url, path, story)
    assert problems == []
    assert socket.close_code == 1013 and socket.refused == 0
    assert fetch_rows(settings.database, "SELECT status FROM run") == [("completed",), ("completed",)]
