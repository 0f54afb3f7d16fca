"""A lean load client: raw asyncio protocols for SSE over HTTP/1.1 and for WebSockets.

A general-purpose client (httpx, websockets) spends more CPU per event than the server under
test; on a 2-core machine the client would be the bottleneck. These protocols do the least
that gives honest figures: one clock reading per socket read, and events counted by their
type marker (msgspec writes ``"type"`` first, and event bytes are never split by the server).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from array import array
from urllib.parse import urlsplit

import msgspec

# Every marker is 13 bytes, so a 12-byte carry-over finds markers split between two reads
# without ever counting one twice.
_TEXT = b'"type":"text"'
_START = b'"type":"start'
_TOOL = b'"type":"tool_'
_ERROR = b'"type":"error'
_DONE = b'"type":"done"'
_CARRY = 12
_RUN_ID = re.compile(rb'"run_id":"([0-9a-f-]{36})"')
_STATUS = re.compile(rb'"type":"done".*?"status":"(\w+)"')
_HEAD_END = b"\r\n\r\n"


class Stream:
    """What one client saw of one reply (or one replay), in ``time.perf_counter`` seconds."""

    __slots__ = (
        "sent_at", "first_event_at", "first_text_at", "last_text_at", "ended_at", "texts", "events",
        "gaps", "status", "error", "run_id", "_carry", "_recent", "finished",
    )

    def __init__(self) -> None:
        self.sent_at = 0.0
        self.first_event_at: float | None = None
        self.first_text_at: float | None = None
        self.last_text_at = 0.0
        self.ended_at: float | None = None
        self.texts = 0
        self.events = 0
        self.gaps = array("d")  # seconds between text events; events read together count 0
        self.status: str | None = None  # the done event's status
        self.error: str | None = None
        self.run_id: str | None = None
        self._carry = b""
        self._recent = b""
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_text_at is None else (self.first_text_at - self.sent_at) * 1000

    @property
    def text_rate(self) -> float | None:
        """Text events per second over this reply's streaming span."""
        span = self.last_text_at - (self.first_text_at or 0.0)
        return (self.texts - 1) / span if self.texts > 1 and span > 0 else None

    def count(self, data: bytes, now: float) -> None:
        chunk = self._carry + data
        self._carry = chunk[-_CARRY:]
        texts = chunk.count(_TEXT)
        events = texts + chunk.count(_START) + chunk.count(_TOOL) + chunk.count(_DONE) + chunk.count(_ERROR)
        if not events:
            return
        if self.first_event_at is None:
            self.first_event_at = now
        if self.run_id is None and (match := _RUN_ID.search(chunk)):
            self.run_id = match[1].decode()
        self.events += events
        if texts:
            if self.first_text_at is None:
                self.first_text_at = now
            else:
                self.gaps.append(now - self.last_text_at)
            if texts > 1:
                self.gaps.extend([0.0] * (texts - 1))
            self.last_text_at = now
            self.texts += texts
        if _DONE in chunk or self._recent:
            self._recent = (self._recent + chunk)[-4096:]
            if self.status is None and (match := _STATUS.search(self._recent)):
                self.status = match[1].decode()

    def end(self, error: str | None = None) -> None:
        if self.finished.done():
            return
        self.ended_at = time.perf_counter()
        if error and not self.error:
            self.error = error
        if self.status is None and not self.error:
            self.error = "stream ended without done"
        self.finished.set_result(None)


class _SSEProtocol(asyncio.Protocol):
    def __init__(self, stream: Stream, request: bytes, keep_alive: bool = False):
        self.stream = stream
        self.request = request
        self.keep_alive = keep_alive
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.body_started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stream.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def send(self, stream: Stream, request: bytes) -> None:
        """The next request on a kept-alive connection, once the previous response ended."""
        self.stream, self.head, self.body_started = stream, b"", False
        stream.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.body_started:
            self.head += data
            end = self.head.find(_HEAD_END)
            if end < 0:
                return
            status_line = self.head.split(b"\r\n", 1)[0]
            data, self.head = self.head[end + 4 :], self.head[:end]
            self.body_started = True
            if b" 200 " not in status_line:
                self.stream.end(f"{status_line.decode(errors='replace')}: {data[:200].decode(errors='replace')}")
                self.transport.close()
                return
        self.stream.count(data, now)
        # The last chunk of a chunked body is "0\r\n\r\n".
        if self.stream.status is not None and data.endswith(b"0\r\n\r\n"):
            self.stream.end()
            if not self.keep_alive:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.end(f"connection lost: {exc}" if exc else None)


def _request(method: str, url: str, path: str, token: str, body: bytes = b"", headers: str = "",
             keep_alive: bool = False) -> bytes:
    host = urlsplit(url).netloc
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: text/event-stream\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n{headers}"
    )
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _connect(url: str, protocol: asyncio.Protocol) -> asyncio.Transport:
    parts = urlsplit(url)
    transport, _ = await asyncio.get_running_loop().create_connection(
        lambda: protocol, parts.hostname, parts.port
    )
    return transport


async def sse_open(
    url: str, path: str, token: str, body: dict | None = None
) -> tuple[Stream, asyncio.Transport | None]:
    """A stream (POST with a JSON body, else GET) that may stay open; the caller closes it."""
    stream = Stream()
    if body is None:
        request = _request("GET", url, path, token)
    else:
        request = _request("POST", url, path, token, msgspec.json.encode(body))
    try:
        return stream, await _connect(url, _SSEProtocol(stream, request))
    except OSError as exc:
        stream.end(f"connect: {exc}")
        return stream, None


async def _until_end(stream: Stream, transport: asyncio.Transport | None) -> Stream:
    try:
        await stream.finished
        return stream
    finally:
        if transport is not None:
            transport.close()  # also when cancelled by a time limit


async def sse_chat(url: str, user: str, token: str, message: str, on_disconnect: str = "cancel") -> Stream:
    """``POST /api/{user}/chat/stream``; returns once the stream ended (or failed)."""
    body = {"message": message, "on_disconnect": on_disconnect}
    return await _until_end(*await sse_open(url, f"/api/{user}/chat/stream", token, body))


class SSESession:
    """``chat/stream`` requests one after another on one kept-alive connection, as a browser's
    connection pool sends them (a new TCP connection costs the server ≈ 1 ms of CPU here)."""

    def __init__(self, url: str, user: str, token: str):
        self.url, self.user, self.token = url, user, token
        self.protocol: _SSEProtocol | None = None

    async def chat(self, message: str) -> Stream:
        stream = Stream()
        body = msgspec.json.encode({"message": message})
        request = _request("POST", self.url, f"/api/{self.user}/chat/stream", self.token, body, keep_alive=True)
        if self.protocol is None or self.protocol.transport.is_closing():
            self.protocol = _SSEProtocol(stream, request, keep_alive=True)
            await _connect(self.url, self.protocol)
        else:
            self.protocol.send(stream, request)
        await stream.finished
        return stream

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()


async def sse_get(url: str, path: str, token: str) -> Stream:
    return await _until_end(*await sse_open(url, path, token))


# -- WebSocket -----------------------------------------------------------------------------


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame: clients must mask what they send."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    key = int.from_bytes(mask * (length // 4 + 1), "big") >> (8 * (4 - length % 4))
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") if length else b""
    return head + mask + body


class WSConnection(asyncio.Protocol):
    """One socket; the current reply's events go to ``self.stream``."""

    def __init__(self, path_with_token: str, host: str):
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path_with_token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.upgraded = False
        self.stream: Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_masked(0x1, payload))

    def chat(self, message: str) -> Stream:
        self.stream = Stream()
        self.stream.sent_at = time.perf_counter()
        self.send_text(msgspec.json.encode({"type": "chat", "message": message}))
        return self.stream

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buffer = self.buffer + data
        if not self.upgraded:
            end = buffer.find(_HEAD_END)
            if end < 0:
                self.buffer = buffer
                return
            if b" 101 " not in buffer.split(b"\r\n", 1)[0]:
                self.open.set_exception(ConnectionError(buffer[:200].decode(errors="replace")))
                self.transport.close()
                return
            self.upgraded = True
            self.open.set_result(None)
            buffer = buffer[end + 4 :]
        texts = bytearray()
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            opcode, length = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length, start = int.from_bytes(buffer[start : start + 2], "big"), start + 2
            elif length == 127:
                if size - start < 8:
                    break
                length, start = int.from_bytes(buffer[start : start + 8], "big"), start + 8
            if size - start < length:
                break
            payload = buffer[start : start + length]
            pos = start + length
            if opcode in (0x1, 0x0):
                texts += payload
            elif opcode == 0x9:
                self.transport.write(_masked(0xA, payload))
            elif opcode == 0x8:
                self.transport.close()
        self.buffer = buffer[pos:]
        if texts and self.stream is not None:
            self.stream.count(bytes(texts), now)
            if self.stream.status is not None:
                self.stream.end()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))
        if self.stream is not None:
            self.stream.end(f"socket closed: {exc}")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()


async def ws_connect(url: str, user: str, token: str) -> WSConnection:
    parts = urlsplit(url)
    connection = WSConnection(f"/api/{user}/ws?token={token}", parts.netloc)
    await _connect(url, connection)
    await connection.open
    return connection


async def ws_chat(url: str, user: str, token: str, message: str) -> Stream:
    """One reply on its own socket."""
    try:
        connection = await ws_connect(url, user, token)
    except (OSError, ConnectionError) as exc:
        stream = Stream()
        stream.end(f"connect: {exc}")
        return stream
    try:
        stream = connection.chat(message)
        await stream.finished
        return stream
    finally:
        connection.close()
