"""uvicorn's WebSocket protocol with one ASGI extension: several text frames in one send.

The chat protocol has one frame per event, and ASGI one message per frame. A reader that
lags (a resume, a burst of text) holds a batch of events; sent a message each, every frame
went through each middleware's send wrapper, was decoded to ``str`` and encoded back, and
cost a system call. With the extension a batch of UTF-8 frames is one ASGI send and one
write. The server announces it in ``scope["extensions"]``; other servers (and the test
client) do not, and the app sends frame by frame there.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

SEND_TEXTS = "chat.websocket.send_texts"
"""Extension and message type: ``{"type": SEND_TEXTS, "texts": [bytes, ...]}``, each item
one text frame's UTF-8 payload."""


class BatchingWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The app's task is created above but runs later: it sees the extension.
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
        try:
            for text in message["texts"]:
                self.conn.send_text(text)
        except InvalidState:
            raise ClientDisconnected() from None
        finally:
            # Whatever was framed goes out, in one write.
            if output := self.conn.data_to_send():
                self.transport.write(b"".join(output))
