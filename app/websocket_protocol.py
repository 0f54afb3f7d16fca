"""uvicorn's WebSocket protocol, with the frames sent in one turn of the loop written at once.

The protocol has one frame per event, and uvicorn writes each ASGI send to the socket by
itself. A reader that lags (a resume, a burst of text, a busy loop) is sent its batch in one
turn; a write per frame there costs a system call each, more than the frame's own work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class _CoalescingTransport:
    """A transport whose writes wait for the end of the current turn of the loop, then go
    out together, in order. Closing writes what is waiting first."""

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_CoalescingTransport(transport))  # type: ignore[arg-type]
