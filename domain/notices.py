"""What server instances tell each other through the broker: small notices, never payloads.

- ``RunCommitted``: a run's events up to ``seq`` are stored. A follower of that run on another
  instance then reads them from the store at once instead of polling for them.
- ``FeedNotice`` (``domain.feed``): a change to one user's conversations or tasks.

A notice is published after the commit it announces (durable before visible). They are
coalesced: while one message is being published the next ones gather, and a run's notices
fold into its highest seq, so a busy group commit costs one publish, not one per run.
Delivery is at most once (Redis pub/sub, PostgreSQL NOTIFY): followers still read the store
on a slow poll, so a lost notice delays an event, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import msgspec

from domain.feed import Feed, FeedNotice

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 7000  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more


class BrokerUnavailable(Exception):
    """A message could not be published (the broker is away or too slow); nothing was sent."""


class Broker(Protocol):
    """Carries messages between server instances: cancel requests (a run executes on exactly
    one instance) and notices. Publishing raises ``BrokerUnavailable`` rather than wait long;
    the iterators never end: the broker reconnects by itself."""

    # True while what other instances publish reaches this one; False: it is lost meanwhile.
    listening: bool

    async def request_cancel(self, run_id: str) -> None: ...

    def cancel_requests(self) -> AsyncIterator[str]: ...

    async def publish_notices(self, data: bytes) -> None: ...

    def notices(self) -> AsyncIterator[bytes]: ...


class RunCommitted(msgspec.Struct, tag="run", array_like=True, frozen=True):
    run_id: str
    seq: int  # the highest stored


Notice = RunCommitted | FeedNotice


class NoticeMessage(msgspec.Struct, array_like=True, frozen=True):
    origin: str  # the instance that sent it; it does not act on its own messages
    notices: list[Notice]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(NoticeMessage).decode


class Notices:
    def __init__(self, broker: Broker | None, feed: Feed):
        self.broker = broker
        self.feed = feed
        self._committed: dict[str, int] = {}  # run -> highest seq, to publish
        self._told: list[FeedNotice] = []  # to publish
        self._pending = asyncio.Event()
        self._watchers: dict[str, set[asyncio.Event]] = {}  # run -> its followers here

    def committed(self, run_id: str, seq: int) -> None:
        # Followers here read the store too when this instance stored what another one left
        # (the sweep closing a dead instance's run).
        self._wake(run_id)
        if self.broker is not None:
            self._committed[run_id] = max(seq, self._committed.get(run_id, 0))
            self._pending.set()

    def tell(self, notice: FeedNotice) -> None:
        if self.broker is not None:
            self._told.append(notice)
            self._pending.set()

    @contextlib.contextmanager
    def watching(self, run_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever another instance says more of the run is stored."""
        woken = asyncio.Event()
        self._watchers.setdefault(run_id, set()).add(woken)
        try:
            yield woken
        finally:
            watchers = self._watchers[run_id]
            watchers.discard(woken)
            if not watchers:
                del self._watchers[run_id]

    def messages(self) -> list[bytes]:
        """What is pending, in messages small enough for any broker."""
        notices: list[Notice] = [*(RunCommitted(r, s) for r, s in self._committed.items()), *self._told]
        self._committed, self._told = {}, []
        out: list[bytes] = []
        batch: list[Notice] = []
        empty = size = len(_encode(NoticeMessage(self.feed.origin, [])))
        for notice in notices:
            length = len(_encode(notice)) + 1  # and a comma
            if batch and size + length > MAX_MESSAGE_BYTES:
                out.append(_encode(NoticeMessage(self.feed.origin, batch)))
                batch, size = [], empty
            batch.append(notice)
            size += length
        if batch:
            out.append(_encode(NoticeMessage(self.feed.origin, batch)))
        return out

    async def publish_forever(self) -> None:
        assert self.broker is not None
        failing = False
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                for data in self.messages():
                    await self.broker.publish_notices(data)
            except Exception as error:
                # Followers elsewhere fall back on their slow poll; feeds elsewhere miss these
                # events. Said once per outage, and a pause: a broker that is away is not
                # asked (and logged) per commit.
                if not failing:
                    failing = True
                    logger.warning("notices do not reach the other instances (%s); dropped until the broker is back",
                                   error if isinstance(error, BrokerUnavailable) else repr(error))
                await asyncio.sleep(1)
                continue
            if failing:
                failing = False
                logger.info("notices reach the other instances again")

    async def hear_forever(self) -> None:
        assert self.broker is not None
        while True:
            try:
                async for data in self.broker.notices():
                    self.heard(data)
            except Exception:  # a broker's iterator ends only by a bug: keep listening
                logger.exception("the notice subscription failed; subscribing again")
                await asyncio.sleep(1)

    def _wake(self, run_id: str) -> None:
        for woken in self._watchers.get(run_id, ()):
            woken.set()

    def heard(self, data: bytes) -> None:
        try:
            message = _decode(data)
        except msgspec.DecodeError:
            logger.warning("ignored a notice that is not one: %r", data[:100])
            return
        if message.origin == self.feed.origin:
            return
        for notice in message.notices:
            if isinstance(notice, RunCommitted):
                self._wake(notice.run_id)
            else:
                self.feed.heard(notice)
