"""The broker between server instances: Redis pub/sub, or PostgreSQL LISTEN/NOTIFY.

Redis when ``REDIS_URL`` is set; otherwise PostgreSQL when the database is PostgreSQL;
otherwise none (one process: every run is local). It carries cancel requests and notices
(``domain.notices``), never a run's events: a follower elsewhere reads those from the store.

One task per process listens, on one connection subscribed to both channels, and hands each
message to the iterators reading that channel; no other coroutine reads that connection.
(Litestar's channels backend let two read one Redis connection: after a Redis restart that
ended in "readuntil() called while another coroutine is already waiting" and never recovered.)
When the connection fails, or a ping gets no answer within ``timeout_s``, the task connects
and subscribes again, pausing 0.1, 0.2, 0.4 … up to 3 s between attempts; it says so in the
log once when it loses the broker and once when it is back, and ``listening`` says which.
Publishing takes another connection and gives up after ``timeout_s`` (``BrokerUnavailable``):
a Stop is stored on the run's row as well, and followers poll, so nothing waits on a broker.

Redis pub/sub channels are global to a Redis server, whatever its database number: the
channel names carry the number from ``REDIS_URL`` (``chat:<db>:notices``), so deployments on
one server with different numbers never hear each other. PostgreSQL's NOTIFY is per database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

import asyncpg

from app.settings import Settings
from domain.notices import BrokerUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

CANCEL = "run-cancel"
NOTICES = "notices"
FIRST_PAUSE_S = 0.1  # between reconnection attempts, doubled after each failure…
MAX_PAUSE_S = 3.0  # …up to this: back within 3 s of the broker's return
PING_AFTER_S = 5.0  # a listening connection quiet this long is pinged
READER_QUEUE = 10_000  # messages waiting for one reader; more are dropped (delivery is at most once)


class BrokerObserver(Protocol):
    """Monitoring (``app.metrics``)."""

    def broker_listening(self, listening: bool) -> None: ...

    def broker_reconnected(self) -> None: ...

    def broker_publish_failed(self) -> None: ...


class _Unobserved:
    def broker_listening(self, listening: bool) -> None:
        pass

    def broker_reconnected(self) -> None:
        pass

    def broker_publish_failed(self) -> None:
        pass


class ListeningBroker:
    """``domain.notices.Broker``: the listen loop, the hand-off to readers and the publishing
    deadline. A subclass says how to listen to its server (``_listen``) and publish
    (``_publish``), under the channel names it chose."""

    kind = ""

    def __init__(self, cancel_channel: str, notice_channel: str, timeout_s: float,
                 observer: BrokerObserver | None = None):
        self.listening = False
        self.timeout_s = timeout_s
        self.cancel_channel, self.notice_channel = cancel_channel, notice_channel
        self._observer = observer or _Unobserved()
        self._readers: dict[str, set[asyncio.Queue[bytes]]] = {cancel_channel: set(), notice_channel: set()}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> ListeningBroker:
        self._listener = asyncio.create_task(self._listen_forever(), name=f"broker-{self.kind}")
        # Serving starts subscribed when the broker is there; without it, it starts anyway.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        self._set_listening(False)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout_s):
                await self._close_publisher()

    # -- domain.notices.Broker ---------------------------------------------------------------

    async def request_cancel(self, run_id: str) -> None:
        await self._publish_within(self.cancel_channel, run_id.encode())

    async def cancel_requests(self) -> AsyncIterator[str]:
        async for data in self._read(self.cancel_channel):
            yield data.decode()

    async def publish_notices(self, data: bytes) -> None:
        await self._publish_within(self.notice_channel, data)

    def notices(self) -> AsyncIterator[bytes]:
        return self._read(self.notice_channel)

    # -- what a server provides --------------------------------------------------------------

    async def _listen(self, subscribed: Callable[[], None]) -> None:
        """Connect, subscribe to both channels, call ``subscribed``, then ``_heard`` each
        message; raise when the connection fails or stops answering."""
        raise NotImplementedError

    async def _publish(self, channel: str, data: bytes) -> None:
        raise NotImplementedError

    async def _close_publisher(self) -> None:
        pass

    # -- the loop ----------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        loop = asyncio.get_running_loop()
        pause = FIRST_PAUSE_S
        lost_at: float | None = None

        def subscribed() -> None:
            nonlocal pause, lost_at
            pause = FIRST_PAUSE_S
            self._set_listening(True)
            self._subscribed.set()
            if lost_at is not None:
                logger.info("the %s broker is back after %.1f s: listening again", self.kind, loop.time() - lost_at)
                self._observer.broker_reconnected()
                lost_at = None

        while True:
            try:
                await self._listen(subscribed)
                failure = "the connection ended"
            except Exception as error:  # whatever it was, the remedy is a new connection
                failure = _why(error)
            self._set_listening(False)
            if lost_at is None:
                lost_at = loop.time()
                logger.warning(
                    "lost the %s broker (%s): until it is back, Stop from other instances arrives through "
                    "the database and their followers poll; reconnecting", self.kind, failure)
            else:
                logger.debug("the %s broker is still away (%s); next attempt in %.1f s", self.kind, failure, pause)
            # Jitter: instances that lost it together do not all return in the same instant.
            await asyncio.sleep(pause * random.uniform(0.75, 1.0))
            pause = min(pause * 2, MAX_PAUSE_S)

    def _set_listening(self, listening: bool) -> None:
        if listening != self.listening:
            self.listening = listening
            self._observer.broker_listening(listening)

    def _heard(self, channel: str, data: bytes) -> None:
        for queue in self._readers.get(channel, ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(data)

    async def _read(self, channel: str) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(READER_QUEUE)
        self._readers[channel].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._readers[channel].discard(queue)

    async def _publish_within(self, channel: str, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._publish(channel, data)
        except Exception as error:
            self._observer.broker_publish_failed()
            raise BrokerUnavailable(f"the {self.kind} broker could not take the message: {_why(error)}") from error


def _why(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class RedisBroker(ListeningBroker):
    kind = "Redis"

    def __init__(self, url: str, timeout_s: float, observer: BrokerObserver | None = None):
        # redis-py is imported here, not at the top: it loads the OpenTelemetry SDK when that is
        # installed, which a server without REDIS_URL (and without traces) should not pay.
        from redis.asyncio.connection import parse_url

        db = parse_url(url).get("db", 0)
        super().__init__(f"chat:{db}:{CANCEL}", f"chat:{db}:{NOTICES}", timeout_s, observer)
        self._url = url
        self._publisher = self._client()

    def _client(self) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: the listen loop has its own, and a publish that fails is
        # answered at once by the fallbacks.
        return Redis.from_url(self._url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                              retry=Retry(NoBackoff(), 0))

    async def _publish(self, channel: str, data: bytes) -> None:
        await self._publisher.publish(channel, data)

    async def _close_publisher(self) -> None:
        await self._publisher.aclose()

    async def _listen(self, subscribed: Callable[[], None]) -> None:
        client = self._client()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.cancel_channel, self.notice_channel)
            loop = asyncio.get_running_loop()
            confirmed = 0
            heard_at, pinged_at = loop.time(), None
            while True:
                message = await pubsub.get_message(timeout=1.0)
                now = loop.time()
                if message is not None:
                    heard_at, pinged_at = now, None
                    if message["type"] == "message":
                        self._heard(message["channel"].decode(), message["data"])
                    elif message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == 2:  # both channels: from now on nothing published is missed
                            subscribed()
                elif pinged_at is None and now - heard_at >= PING_AFTER_S:
                    await pubsub.ping()
                    pinged_at = now
                elif pinged_at is not None and now - pinged_at >= self.timeout_s:
                    raise ConnectionError(f"no answer to a ping in {self.timeout_s} s")
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await pubsub.aclose()
                    await client.aclose()


class PostgresBroker(ListeningBroker):
    kind = "PostgreSQL"

    def __init__(self, dsn: str, timeout_s: float, observer: BrokerObserver | None = None):
        super().__init__(CANCEL, NOTICES, timeout_s, observer)
        self._dsn = dsn
        # One kept connection publishes: a new one per NOTIFY costs a TCP and auth handshake.
        self._publisher: asyncpg.Connection | None = None
        self._publish_lock = asyncio.Lock()

    async def _publish(self, channel: str, data: bytes) -> None:
        async with self._publish_lock:
            if self._publisher is None or self._publisher.is_closed():
                self._publisher = await asyncpg.connect(self._dsn)
            try:
                await self._publisher.execute("SELECT pg_notify($1, $2)", channel, data.decode())
            except BaseException:  # a timeout too: the connection's state is unknown
                self._publisher.terminate()
                self._publisher = None
                raise

    async def _close_publisher(self) -> None:
        async with self._publish_lock:
            if self._publisher is not None:
                self._publisher.terminate()
                self._publisher = None

    async def _listen(self, subscribed: Callable[[], None]) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=self.timeout_s)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        try:
            async with asyncio.timeout(self.timeout_s):
                for channel in (self.cancel_channel, self.notice_channel):
                    await connection.add_listener(channel, self._notified)
            subscribed()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_AFTER_S):
                        await lost.wait()
                if lost.is_set():
                    raise ConnectionError("the connection closed")
                async with asyncio.timeout(self.timeout_s):
                    await connection.execute("SELECT 1")
        finally:
            connection.terminate()

    def _notified(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self._heard(channel, payload.encode())


def broker_for(settings: Settings, observer: BrokerObserver | None = None) -> ListeningBroker | None:
    if settings.redis_url:
        return RedisBroker(settings.redis_url, settings.broker_timeout_s, observer)
    if settings.database.startswith(("postgres://", "postgresql://")):
        return PostgresBroker(settings.database, settings.broker_timeout_s, observer)
    return None
