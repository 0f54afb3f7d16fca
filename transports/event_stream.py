"""The streaming response both SSE transports (plain and ChatKit) send.

Shaped like Starlette's ``StreamingResponse``: the body pump and a disconnect listener race as
two named tasks, and whichever ends first cancels the other. Plain asyncio tasks, not an anyio
task group: the group cost ≈ 0.12 ms of CPU per request; waiting on the listener too, once
the body is done, cost ≈ 20 µs more for nothing.

It plugs into Litestar through public API only: it is a ``litestar.response.Response``, whose
``to_asgi_response`` hook (called for any ``Response`` a handler returns) merges what the route's
layers add and returns the response itself as the ASGI app. It sends through the ``send`` it is
given, so middleware wrapping ``send`` (CORS, the request id) still sees every message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from litestar.response import Response

if TYPE_CHECKING:
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.connection import Request
    from litestar.datastructures import Cookie
    from litestar.types import Receive, Scope, Send


class EventStream(Response[AsyncIterable[bytes]]):
    """Streams ``body`` as it comes. ``on_close`` is awaited exactly once however the response
    ends (body done, client gone even before the first chunk, error, server shutdown): the
    one place to stop what the body was following, since a body the client left before its
    first step never runs at all.

    A client leaving ends the response quietly; a cancel from elsewhere propagates. The body
    must await at every step (uvicorn's ``send`` does not yield to the loop): one that never
    does keeps the disconnect listener from running.
    """

    def __init__(
        self,
        body: AsyncIterable[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        media_type: str = "text/event-stream",
        status_code: int = 200,
        send_timeout_s: float | None = None,
    ) -> None:
        super().__init__(body, headers=headers, media_type=media_type, status_code=status_code)
        self.on_close = on_close
        self.send_timeout_s = send_timeout_s

    def to_asgi_response(  # type: ignore[override]
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        headers: dict[str, str] | None = None,
        **_: Any,  # the handler's media type and status code: this response's own win
    ) -> EventStream:
        # The same precedence as Litestar's responses: the layers' headers, then ours.
        self.headers = {**(headers or {}), **self.headers}
        self.cookies = [*self.cookies, *(cookies or ())]
        self.background = self.background or background
        return self

    async def listen_for_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def stream_body(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers()})
        loop, limit = asyncio.get_running_loop(), self.send_timeout_s
        try:
            # A client that takes no bytes for ``send_timeout_s`` is gone, as one that hung up:
            # otherwise what it does not read piles up in the server's memory.
            async with asyncio.timeout(None) as sending:
                async for chunk in self.content:
                    if limit is not None:
                        sending.reschedule(loop.time() + limit)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if limit is not None:
                        sending.reschedule(None)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            pass  # the connection is dropped unfinished: the client never read it anyway
        finally:
            # Cancelled inside ``send``, a generator would only see ``GeneratorExit`` when
            # collected: close it now, so its cleanup runs before ``on_close``.
            if (aclose := getattr(self.content, "aclose", None)) is not None:
                await aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = asyncio.create_task(self.stream_body(send), name="event-stream body")
        listener = asyncio.create_task(self.listen_for_disconnect(receive), name="event-stream disconnect")
        try:
            # Whichever ends first, the body or the client, cancels the other.
            await asyncio.wait((body, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            listener.cancel()  # it only waits in receive(): nothing to wait for
            try:
                if not body.done():  # the client left, or a cancel from elsewhere (shutdown)
                    body.cancel()
                    await asyncio.wait((body,))  # its cleanup runs before on_close
            finally:
                if self.on_close is not None:
                    await self.on_close()
        for task in (body, listener):
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        if self.background is not None:
            await self.background()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """Byte for byte what Litestar's ``Stream`` sends: lower-case names in order, then the
        content type (with a charset for text types) unless given, then cookies."""
        headers = [
            (name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in self.headers.items()
        ]
        if not any(name == b"content-type" for name, _ in headers):
            media_type = getattr(self.media_type, "value", self.media_type)
            content_type = f"{media_type}; charset={self.encoding}" if media_type.startswith("text/") else media_type
            headers.append((b"content-type", content_type.encode("latin-1")))
        cookies = [cookie.to_encoded_header() for cookie in self.cookies if not cookie.documentation_only]
        return [*headers, *cookies]
