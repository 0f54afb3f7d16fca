"""The broker between server instances, on Litestar's channels plugin.

Redis pub/sub when ``REDIS_URL`` is set; otherwise PostgreSQL LISTEN/NOTIFY when the database
is PostgreSQL; otherwise none (one process: every run is local). It carries cancel requests
and notices (``domain.notices``: a run's events are stored up to a seq; a user's feed event),
never a run's events themselves: a follower on another instance reads those from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from functools import partial

import asyncpg
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend

from app.settings import Settings

CANCEL_CHANNEL = "run-cancel"
NOTICE_CHANNEL = "notices"


class KeptConnectionAsyncPgBackend(AsyncPgChannelsBackend):
    """Publishes on one kept connection: Litestar's opens a new one per publish (a TCP and auth
    handshake, milliseconds), fine for a rare cancel, not for a notice per group commit."""

    _publisher: asyncpg.Connection | None = None

    async def on_startup(self) -> None:
        await super().on_startup()
        self._publish_lock = asyncio.Lock()

    async def on_shutdown(self) -> None:
        async with self._publish_lock:
            if self._publisher is not None:
                await self._publisher.close()
                self._publisher = None
        await super().on_shutdown()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        async with self._publish_lock:
            if self._publisher is None or self._publisher.is_closed():
                self._publisher = await self._connect()
            try:
                for channel in channels:
                    await self._publisher.execute("SELECT pg_notify($1, $2)", channel, data.decode())
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                # The next publish connects again: the database may be back by then.
                self._publisher.terminate()
                self._publisher = None
                raise


def broker_backend(settings: Settings) -> tuple[str, ChannelsBackend] | None:
    if settings.redis_url:
        from redis.asyncio import Redis

        return "redis", RedisChannelsPubSubBackend(redis=Redis.from_url(settings.redis_url))
    if settings.database.startswith(("postgres://", "postgresql://")):
        # The database's deadlines: a server gone silent must not hang a publish, nor the
        # shutdown (closing a connection waits for the server's goodbye).
        connect = partial(asyncpg.connect, dsn=settings.database, timeout=settings.database_connect_timeout_s,
                          command_timeout=settings.database_statement_timeout_s)
        return "postgresql", KeptConnectionAsyncPgBackend(make_connection=connect)
    return None


class ChannelsBroker:
    """``domain.notices.Broker`` on a started ChannelsPlugin."""

    def __init__(self, channels: ChannelsPlugin):
        self._channels = channels

    async def request_cancel(self, run_id: str) -> None:
        await self._channels.wait_published(run_id.encode(), CANCEL_CHANNEL)

    async def cancel_requests(self) -> AsyncIterator[str]:
        async with self._channels.start_subscription([CANCEL_CHANNEL]) as subscriber:
            async for data in subscriber.iter_events():
                yield data.decode()

    async def publish_notices(self, data: bytes) -> None:
        await self._channels.wait_published(data, NOTICE_CHANNEL)

    async def notices(self) -> AsyncIterator[bytes]:
        async with self._channels.start_subscription([NOTICE_CHANNEL]) as subscriber:
            async for data in subscriber.iter_events():
                yield data


def channels_plugin(backend: ChannelsBackend) -> ChannelsPlugin:
    return ChannelsPlugin(backend=backend, channels=[CANCEL_CHANNEL, NOTICE_CHANNEL], create_ws_route_handlers=False)
