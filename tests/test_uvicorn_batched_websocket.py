"""The batched WebSocket frames: every uvicorn and websockets internal they rely on, pinned,
and the stock protocol when those internals are gone."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import socket
import sys
import time

import pytest
import uvicorn
import websockets
from websockets.frames import Frame, Opcode

import app.cli
import app.uvicorn_batched_websocket as batched
from app.settings import Settings
from tests.conftest import serving
from transports.asgi_extensions import SEND_TEXTS

SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"


# -- the contract with uvicorn and websockets ---------------------------------------------

def test_uvicorns_sansio_protocol_is_where_the_subclass_expects_it():
    from uvicorn.config import WS_PROTOCOLS
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    assert WS_PROTOCOLS["websockets-sansio"] == f"{SANSIO}:WebSocketsSansIOProtocol"
    assert batched.BatchingWebSocketProtocol is not None
    assert issubclass(batched.BatchingWebSocketProtocol, WebSocketsSansIOProtocol)
    assert app.cli.uvicorn_options(Settings())["ws"] is batched.BatchingWebSocketProtocol
    # The overridden methods, with the arguments the overrides pass on.
    assert list(inspect.signature(WebSocketsSansIOProtocol.handle_connect).parameters) == ["self", "event"]
    assert list(inspect.signature(WebSocketsSansIOProtocol.send).parameters) == ["self", "message"]
    assert inspect.iscoroutinefunction(WebSocketsSansIOProtocol.send)


def test_the_connection_state_the_subclass_reads_exists():
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.server import ServerState
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    async def noop_app(scope, receive, send) -> None:
        pass

    async def build() -> object:
        config = uvicorn.Config(noop_app, ws_per_message_deflate=False, lifespan="off")
        return batched.BatchingWebSocketProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())

    protocol = asyncio.run(build())
    assert isinstance(protocol.writable, asyncio.Event) and protocol.writable.is_set()
    assert (protocol.disconnected, protocol.handshake_complete, protocol.close_sent) == (False, False, False)
    assert hasattr(protocol, "transport")
    assert isinstance(protocol.conn, ServerProtocol)
    assert protocol.conn.state is State.CONNECTING and State.OPEN in State
    assert protocol.conn.extensions == [] and protocol.conn.data_to_send() == []
    assert issubclass(ClientDisconnected, OSError)  # the error uvicorn's run_asgi swallows


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frames_are_byte_for_byte_websockets_own(size):
    """Every length class (7-, 16- and 64-bit), at each boundary."""
    payload = b"x" * size
    assert batched.text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


# -- on a real uvicorn ------------------------------------------------------------------

async def echo_app(scope, receive, send) -> None:
    """Says whether the extension was announced, then sends two frames the announced way."""
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    if SEND_TEXTS in scope["extensions"]:
        await send({"type": "websocket.send", "text": "batched"})
        await send({"type": SEND_TEXTS, "texts": ["héllo".encode(), b"x" * 70000]})
    else:
        await send({"type": "websocket.send", "text": "one by one"})
        for text in ("héllo", "x" * 70000):
            await send({"type": "websocket.send", "text": text})
    await send({"type": "websocket.close", "code": 1000})


def serve(ws: object) -> contextlib.AbstractContextManager[int]:
    return serving(echo_app, ws=ws)


def frames_from(port: int) -> list[str]:
    async def read() -> list[str]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            return [frame async for frame in ws]

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("ws", "announced"), [(batched.BatchingWebSocketProtocol, "batched"), ("websockets-sansio", "one by one")]
)
def test_frames_arrive_one_message_each_with_or_without_the_extension(ws, announced):
    with serve(ws) as port:
        assert frames_from(port) == [announced, "héllo", "x" * 70000]


def test_a_refused_handshake_gets_400_and_logs_no_error(caplog):
    """A malformed upgrade (no Sec-WebSocket-Key) is refused by websockets before any scope
    exists; the subclass must not trip over that."""
    with serve(batched.BatchingWebSocketProtocol) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
            answer = b""
            while chunk := raw.recv(4096):  # until the server closes the connection
                answer += chunk
        time.sleep(0.2)
    assert answer.startswith(b"HTTP/1.1 400")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- when uvicorn's layout changes --------------------------------------------------------

def test_without_the_internals_serve_falls_back_to_uvicorns_stock_protocol(monkeypatch):
    monkeypatch.setitem(sys.modules, SANSIO, None)  # importing it now raises ImportError
    try:
        importlib.reload(batched)
        importlib.reload(app.cli)
        assert batched.BatchingWebSocketProtocol is None
        assert app.cli.uvicorn_options(Settings())["ws"] == "websockets-sansio"
        assert batched.text_frame(b"ok") == b"\x81\x02ok"
    finally:
        monkeypatch.undo()
        importlib.reload(batched)
        importlib.reload(app.cli)
    assert app.cli.uvicorn_options(Settings())["ws"] is batched.BatchingWebSocketProtocol is not None


def test_a_renamed_method_counts_as_gone(monkeypatch):
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    monkeypatch.delattr(WebSocketsSansIOProtocol, "handle_connect")
    try:
        importlib.reload(batched)
        assert batched.BatchingWebSocketProtocol is None
    finally:
        monkeypatch.undo()
        importlib.reload(batched)
    assert batched.BatchingWebSocketProtocol is not None
