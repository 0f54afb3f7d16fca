"""A uvicorn WebSocket server protocol with one ASGI extension: several text frames in one send.

This subclasses uvicorn internals, not public API: ``WebSocketsSansIOProtocol`` (what
``ws="websockets-sansio"`` names) and its connection state (``writable``, ``disconnected``,
``handshake_complete``, ``close_sent``, ``response``, ``scope``, ``transport``, and websockets'
``ServerProtocol`` as ``conn``: ``state``, ``extensions``, ``data_to_send()``). It is worth it:
the chat protocol has one frame per event, and ASGI one message per frame. A reader that lags
(a resume, a burst of text) holds a batch of events; sent a message each, every frame went
through each middleware's send wrapper, was decoded to ``str`` and encoded back, and cost a
system call. With the extension a batch of UTF-8 frames is one ASGI send and one write, its
frames built here at 0.32 µs each against 0.90 through websockets.
``tests/test_uvicorn_batched_websocket.py`` pins every internal used.

If uvicorn's layout changes, ``BatchingWebSocketProtocol`` is ``None``: ``serve`` then runs
uvicorn's stock ``websockets-sansio`` protocol, the extension is not announced, and the
WebSocket transport sends frame by frame, as it does on other servers and in the test client.

A batch's frames are built as RFC 6455 §5.2 says (FIN and the text opcode, the length, no mask
from a server), byte for byte what websockets builds. The extension is announced only where no
WebSocket extension was negotiated (``serve`` turns permessage-deflate off): then there is
nothing else in a frame.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from transports.asgi_extensions import SEND_TEXTS

try:
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # uvicorn or websockets moved them
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

OVERRIDDEN = ("handle_connect", "send")
"""The methods overridden below: renamed upstream, ours would silently never run."""


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


BatchingWebSocketProtocol: type[asyncio.Protocol] | None = None
"""uvicorn's ``ws=`` protocol class, or ``None`` when the internals it needs are gone."""

if WebSocketsSansIOProtocol is not None and all(hasattr(WebSocketsSansIOProtocol, name) for name in OVERRIDDEN):

    class BatchingWebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[no-redef]
        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            # Only on an accepted handshake (a refused one has no scope) without a negotiated
            # extension: frames are built below. The app's task is created above but runs later.
            if self.response.status_code == 101 and not self.conn.extensions:
                self.scope["extensions"][SEND_TEXTS] = {}  # type: ignore[index]

        async def send(self, message: Any) -> None:
            if message["type"] != SEND_TEXTS:
                await super().send(message)
                return
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            if not self.handshake_complete or self.close_sent:
                raise RuntimeError(f"{SEND_TEXTS} is only valid on an open WebSocket")
            if self.conn.state is not State.OPEN:
                raise ClientDisconnected()  # what websockets' InvalidState means to uvicorn
            # Anything websockets has queued goes first, as it would have.
            self.transport.write(b"".join([*self.conn.data_to_send(), *map(text_frame, message["texts"])]))
