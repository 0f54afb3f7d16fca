"""A followed reply as framed bytes: the one batch loop every SSE transport streams through.

A transport gives a ``Framing``: its name (for the ``streamed`` count) and how a batch of the
domain's encoded events becomes frames, plus what ends the stream. A protocol that renames
events gives a translator (``translate(event) -> items``) and an encoder to ``Translated``,
which decodes each event once; plain SSE frames the encoded bytes as they are. The loop counts
what it streams and sends the keep-alive when a batch comes empty (the run was idle).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from domain import events
from domain.runs import RunManager, Subscription
from domain.runs.observer import Transport
from transports.event_stream import EventStream
from transports.sse_framing import PING, SSE_HEADERS, data_frames


class Framing(Protocol):
    protocol: Transport

    def frames(self, batch: list[bytes]) -> bytes:
        """The batch's frames (``b""``: nothing to send for it)."""
        ...

    def close(self) -> bytes:
        """What ends the stream once the run's events have all been framed (``b""``: nothing)."""
        ...


class Translator(Protocol):
    def translate(self, event: events.Event) -> list[Any]: ...


class Translated:
    """The framing of a protocol that translates each chat event into its own items, sent as
    one ``data:`` frame each (``encode``: an item's JSON bytes); ``end``: the stream's last frame."""

    __slots__ = ("_encode", "_translate", "end", "protocol")

    def __init__(self, protocol: Transport, translator: Translator, encode: Callable[[Any], bytes],
                 end: bytes = b"") -> None:
        self.protocol = protocol
        self._translate = translator.translate
        self._encode = encode
        self.end = end

    def frames(self, batch: list[bytes]) -> bytes:
        translate, decode = self._translate, events.decode
        out = [item for payload in batch for item in translate(decode(payload))]
        return data_frames(map(self._encode, out)) if out else b""

    def close(self) -> bytes:
        return self.end


async def reply_frames(runs: RunManager, subscription: Subscription, framing: Framing) -> AsyncIterator[bytes]:
    streamed, protocol, frames = runs.observer.streamed, framing.protocol, framing.frames
    async for batch in subscription:
        if not batch:
            yield PING
            continue
        streamed(protocol, len(batch))
        if framed := frames(batch):
            yield framed
    if end := framing.close():
        yield end


def following(runs: RunManager, subscription: Subscription, framing: Framing,
              headers: dict[str, str] = SSE_HEADERS) -> EventStream:
    """A response streaming ``subscription`` through ``framing``: however it ends, the
    subscription is closed (Stop, where leaving means that), and a client that reads nothing
    for the send timeout is let go."""
    return EventStream(reply_frames(runs, subscription, framing), headers=headers, on_close=subscription.aclose,
                       send_timeout_s=runs.limits.send_timeout_s)
