"""EventStream on a real uvicorn (test clients buffer bodies and cannot leave mid-stream)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from litestar import Litestar, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import ResponseHeader
from litestar.response import Stream

from app.request_id import RequestIdMiddleware
from tests.conftest import serving
from transports.event_stream import EventStream

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
LAYER_HEADER = [ResponseHeader(name="X-Layer", value="route")]


class Story:
    """What the server side did, written from the server's thread, read from the test's."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def add(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def count(self, line: str) -> int:
        with self.lock:
            return self.lines.count(line)

    def wait_for(self, line: str, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while self.count(line) == 0:
            assert time.monotonic() < deadline, f"never saw {line!r} in {self.lines}"
            time.sleep(0.01)

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.add("on_close")


def build_app(story: Story) -> Litestar:
    async def numbers(n: int) -> AsyncIterator[bytes]:
        for i in range(n):
            await asyncio.sleep(0)  # an SSE body always awaits (TRAPS)
            yield b"data: %d\n\n" % i

    async def one_then_forever() -> AsyncIterator[bytes]:
        try:
            await asyncio.sleep(0)
            yield b"data: first\n\n"
            story.add("waiting")
            await asyncio.sleep(3600)
            yield b"data: never\n\n"
        except asyncio.CancelledError:
            story.add("cancelled")
            raise
        finally:
            story.add("body closed")

    async def nothing_yet() -> AsyncIterator[bytes]:
        try:
            story.add("waiting")
            await asyncio.sleep(3600)
            yield b"data: never\n\n"
        finally:
            story.add("body closed")

    async def broken() -> AsyncIterator[bytes]:
        await asyncio.sleep(0)
        yield b"data: first\n\n"
        raise RuntimeError("the body failed")

    @get("/numbers", response_headers=LAYER_HEADER)
    async def numbers_route() -> EventStream:
        return EventStream(numbers(3), headers=SSE_HEADERS, on_close=story.close)

    @get("/litestar-numbers", response_headers=LAYER_HEADER)
    async def litestar_numbers_route() -> Stream:
        return Stream(numbers(3), headers=SSE_HEADERS, media_type="text/event-stream")

    @get("/forever")
    async def forever_route() -> EventStream:
        return EventStream(one_then_forever(), headers=SSE_HEADERS, on_close=story.close)

    @get("/nothing-yet")
    async def nothing_yet_route() -> EventStream:
        return EventStream(nothing_yet(), on_close=story.close)

    @get("/broken")
    async def broken_route() -> EventStream:
        return EventStream(broken(), on_close=story.close)

    return Litestar(
        [numbers_route, litestar_numbers_route, forever_route, nothing_yet_route, broken_route],
        cors_config=CORSConfig(allow_origins=["https://chat.example"]),
        middleware=[RequestIdMiddleware],
        logging_config=None,
    )


@contextlib.contextmanager
def serve(app: Litestar) -> Iterator[str]:
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def story() -> Story:
    return Story()


@pytest.fixture
def url(story: Story) -> Iterator[str]:
    with serve(build_app(story)) as base:
        yield base


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_the_body_streams_in_order_and_on_close_runs_once(url, story):
    with httpx.stream("GET", f"{url}/numbers") as response:
        chunks = list(response.iter_raw())
    assert response.status_code == 200
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    story.wait_for("on_close")
    time.sleep(0.05)
    assert story.count("on_close") == 1


def test_the_head_is_byte_for_byte_litestars_stream(url):
    def head(path: str) -> list[tuple[bytes, bytes]]:
        response = httpx.get(f"{url}{path}", headers={"Origin": "https://chat.example", "X-Request-ID": "req-1"})
        return [(name, value) for name, value in response.headers.raw if name.lower() != b"date"]

    ours = head("/numbers")
    assert ours == head("/litestar-numbers")
    # What the callers pass, the route's layer, the media type, and what middleware adds.
    assert (b"cache-control", b"no-cache") in ours and (b"x-accel-buffering", b"no") in ours
    assert (b"x-layer", b"route") in ours
    assert (b"content-type", b"text/event-stream; charset=utf-8") in ours
    assert (b"access-control-allow-origin", b"https://chat.example") in ours
    assert (b"x-request-id", b"req-1") in ours
    assert not any(name == b"content-length" for name, _ in ours)


def test_a_client_leaving_mid_stream_cancels_the_body_and_closes_once(url, story, caplog):
    with httpx.stream("GET", f"{url}/forever") as response:
        assert next(response.iter_raw()) == b"data: first\n\n"
        story.wait_for("waiting")
    story.wait_for("on_close")
    time.sleep(0.05)
    assert story.lines == ["waiting", "cancelled", "body closed", "on_close"]
    assert errors(caplog) == []


def test_a_client_leaving_before_the_first_chunk_still_closes(url, story, caplog):
    with httpx.stream("GET", f"{url}/nothing-yet") as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        story.wait_for("waiting")
    story.wait_for("on_close")
    time.sleep(0.05)
    assert story.lines == ["waiting", "body closed", "on_close"]
    assert errors(caplog) == []


def test_a_failing_body_still_closes_once(url, story, caplog):
    with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", f"{url}/broken") as response:
        response.read()
    story.wait_for("on_close")
    time.sleep(0.05)
    assert story.count("on_close") == 1
    assert "RuntimeError: the body failed" in caplog.text  # an error is still an error


# -- the race itself, on bare ASGI callables ----------------------------------------------

def asgi(*incoming: dict) -> tuple[Callable, Callable, list[dict]]:
    """A receive that hands out ``incoming`` then waits forever, and a send that records."""
    pending, sent = list(incoming), []

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        await asyncio.sleep(0)
        sent.append(message)

    return receive, send, sent


def test_a_disconnect_before_the_first_chunk_ends_quietly_and_closes():
    story = Story()
    receive, send, sent = asgi({"type": "http.disconnect"})

    async def silent() -> AsyncIterator[bytes]:
        await asyncio.sleep(3600)
        yield b"data: never\n\n"

    asyncio.run(EventStream(silent(), on_close=story.close)({"type": "http"}, receive, send))
    assert story.lines == ["on_close"]
    assert [message["type"] for message in sent] == ["http.response.start"]


def test_a_cancel_from_elsewhere_propagates_and_still_closes_once():
    story = Story()
    receive, send, _ = asgi()

    async def forever() -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.001)
            yield b": ping\n\n"

    async def shut_down() -> None:
        response = asyncio.create_task(EventStream(forever(), on_close=story.close)({"type": "http"}, receive, send))
        await asyncio.sleep(0.05)
        response.cancel()
        with pytest.raises(asyncio.CancelledError):
            await response

    asyncio.run(shut_down())
    assert story.lines == ["on_close"]


def test_without_on_close_a_finished_body_is_a_complete_response():
    receive, send, sent = asgi()

    async def two() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b"):
            await asyncio.sleep(0)
            yield chunk

    asyncio.run(EventStream(two(), media_type="application/x-ndjson", status_code=202)({"type": "http"}, receive, send))
    assert sent[0] == {"type": "http.response.start", "status": 202,
                       "headers": [(b"content-type", b"application/x-ndjson")]}
    assert [m["body"] for m in sent[1:]] == [b"a", b"b", b""] and sent[-1]["more_body"] is False
