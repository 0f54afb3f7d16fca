"""The broker between server instances, on Litestar's channels plugin.

Redis pub/sub when ``REDIS_URL`` is set; otherwise PostgreSQL LISTEN/NOTIFY when the database
is PostgreSQL; otherwise none (one process: every run is local). It carries cancel requests
only: live events of a run on another instance are followed through the ``run_event`` table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar.channels import ChannelsPlugin
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend

from app.settings import Settings

CANCEL_CHANNEL = "run-cancel"


def broker_backend(settings: Settings) -> tuple[str, ChannelsBackend] | None:
    if settings.redis_url:
        from redis.asyncio import Redis

        return "redis", RedisChannelsPubSubBackend(redis=Redis.from_url(settings.redis_url))
    if settings.database.startswith(("postgres://", "postgresql://")):
        return "postgresql", AsyncPgChannelsBackend(dsn=settings.database)
    return None


class ChannelsCancelBroker:
    """``domain.runs.CancelBroker`` on a started ChannelsPlugin."""

    def __init__(self, channels: ChannelsPlugin):
        self._channels = channels

    async def request_cancel(self, run_id: str) -> None:
        await self._channels.wait_published(run_id.encode(), CANCEL_CHANNEL)

    async def cancel_requests(self) -> AsyncIterator[str]:
        async with self._channels.start_subscription([CANCEL_CHANNEL]) as subscriber:
            async for data in subscriber.iter_events():
                yield data.decode()


def channels_plugin(backend: ChannelsBackend) -> ChannelsPlugin:
    return ChannelsPlugin(backend=backend, channels=[CANCEL_CHANNEL], create_ws_route_handlers=False)
