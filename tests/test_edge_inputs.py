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
from tests.conftest import auth, start_live_server, token_for


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


@pytest.fixture
def live(settings):
    server = start_live_server(settings)
    yield server
    server.stop()


def finished_run(http: httpx.Client) -> dict:
    reply = http.post("/api/alice/chat", json={"message": "add buy milk"}).json()
    assert reply["status"] == "completed"
    return reply


@pytest.mark.parametrize("how", ["Last-Event-ID", "after"])
def test_a_resume_from_the_top_seq_is_an_empty_replay_on_both_engines(live, how):
    with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=10) as http:
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


def test_a_websocket_resume_from_the_top_seq_is_an_empty_replay_on_both_engines(live):
    with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=10) as http:
        run_id = finished_run(http)["run_id"]
    url = live.url.replace("http", "ws") + f"/api/alice/ws?token={token_for('alice')}"

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
    assert response.json() == {"status_code": 404, "detail": "Not Found"}
    assert client.get("/static/app.js").status_code == 200
