"""``MAX_WS_FRAME_BYTES`` on both sockets through uvicorn: a message over it is refused with
close code 1009 (message too big) from its frame header, before its payload is read, and the
server goes on serving."""

from __future__ import annotations

import asyncio
import json
import struct

import msgspec
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import start_live_server, token_for

LIMIT = 1024

# Per socket: a frame the next client sends, padded to exactly LIMIT bytes, and what it answers.
SOCKETS = {
    "ws": ({"type": "ping"}, {"type": "pong"}),
    "ai-sdk/ws": ({"type": "resume", "requestId": "r1", "id": "chat-1"}, {"type": "no-active", "requestId": "r1"}),
}


@pytest.fixture
def server(settings):
    live = start_live_server(msgspec.structs.replace(settings, max_ws_frame_bytes=LIMIT))
    yield live
    live.stop()


def url_of(server, path: str) -> str:
    return server.url.replace("http", "ws") + f"/api/alice/{path}?token={token_for('alice')}"


def padded(frame: dict, size: int) -> str:
    """``frame`` as JSON, with blanks up to ``size`` bytes."""
    text = json.dumps(frame)
    return text + " " * (size - len(text.encode()))


async def close_code(ws) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def answer(ws, text: str) -> dict:
    await ws.send(text)
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


@pytest.mark.parametrize("path", SOCKETS)
def test_a_message_over_the_limit_closes_with_1009_and_the_server_serves_the_next_client(server, path):
    frame, reply = SOCKETS[path]

    async def scenario() -> None:
        async with websockets.connect(url_of(server, path)) as ws:
            assert await answer(ws, padded(frame, LIMIT)) == reply  # at the limit: read as usual
            await ws.send(padded(frame, LIMIT + 1))
            assert await close_code(ws) == 1009
        async with websockets.connect(url_of(server, path)) as ws:
            assert await answer(ws, json.dumps(frame)) == reply

    asyncio.run(scenario())


@pytest.mark.parametrize("path", SOCKETS)
def test_an_oversized_frame_is_refused_from_its_header_before_its_payload_arrives(server, path):
    """A client announcing 16 MiB and sending 4 bytes of it: the server closes at once (it
    waited for the whole payload when its limit was uvicorn's default, 16 MiB)."""
    async def scenario() -> None:
        async with websockets.connect(url_of(server, path)) as ws:
            # FIN + text, masked with a 64-bit length (RFC 6455 §5.2), a zero mask, and a start.
            ws.transport.write(struct.pack("!BBQ", 0x81, 0x80 | 127, 16 * 1024 * 1024) + b"\0\0\0\0" + b'{"ty')
            assert await close_code(ws) == 1009

    asyncio.run(scenario())
