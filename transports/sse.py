"""Plain Server-Sent Events: ``POST /chat/stream`` and the resume route.

Frames are exactly ``data: <json>\\n\\n`` (naive clients split on blank lines), built from the
bytes the domain encoded once; Litestar's own SSE writer adds CRLFs and fields we do not want.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from app.settings import Settings
from domain.runs import ActiveRun, RunFollower, RunManager
from transports.docs import AUTH_ERRORS, CHAT_ERRORS, RESUME_RESPONSE, SSE_RESPONSE
from transports.requests import ChatRequest, checked_message
from transports.streaming import PlainStream

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"


def data_frames(batch: list[bytes]) -> bytes:
    return b"".join(b"data: " + event + b"\n\n" for event in batch)


def id_data_frames(batch: list[bytes], first_seq: int) -> bytes:
    return b"".join(
        b"id: %d\ndata: " % (first_seq + n) + event + b"\n\n" for n, event in enumerate(batch)
    )


class RunStream:
    """The plain frames of one run. A client that leaves before the end means Stop (unless
    it asked otherwise), even one that leaves before the first frame: then the generator
    never starts, and only the response's background task, which runs however the response
    ended, can tell."""

    def __init__(self, runs: RunManager, run: ActiveRun, *, stop_on_disconnect: bool, ping_s: float):
        self.runs, self.run = runs, run
        self.stop_on_disconnect, self.ping_s = stop_on_disconnect, ping_s
        self.ended = False

    async def frames(self) -> AsyncIterator[bytes]:
        try:
            async for batch in self.run.log.read(0, self.ping_s):
                yield data_frames(batch) if batch else PING
                # Always give the loop a turn: a replay that never awaits spins after a disconnect.
                await asyncio.sleep(0)
            self.ended = True
        finally:
            self.stop_unless_ended()

    def stop_unless_ended(self) -> None:
        if not self.ended and self.stop_on_disconnect:
            self.runs.stop(self.run, "cancelled")

    async def after_response(self) -> None:
        # Async on purpose: Litestar runs a sync background task on a worker thread, where
        # cancelling the run's task is not safe, and the hop cost ≈ 0.35 ms of CPU per request.
        self.stop_unless_ended()


async def resume_frames(follower: RunFollower, after: int, ping_s: float) -> AsyncIterator[bytes]:
    seq = after + 1
    async for batch in follower.batches(after, ping_s):
        if batch:
            yield id_data_frames(batch, seq)
            seq += len(batch)
        else:
            yield PING
        await asyncio.sleep(0)


class SSEController(Controller):
    tags = ["chat"]

    @post(
        "/chat/stream",
        status_code=200,
        summary="Send a message and stream the reply (SSE)",
        description="Starts a run and streams its events. Closing the stream is Stop, unless "
        "`on_disconnect` is `continue`: then the run finishes and can be resumed.",
        # No media_type here: Litestar gives error responses the handler's media type, so a 4xx
        # JSON body went out as text/event-stream. The Stream and SSE_RESPONSE carry the type.
        responses=SSE_RESPONSE,
        raises=CHAT_ERRORS,
    )
    async def chat_stream(
        self,
        user: NamedDependency[str],
        runs: NamedDependency[RunManager],
        settings: NamedDependency[Settings],
        data: JSONBody[ChatRequest],
    ) -> Stream:
        message = checked_message(data.message, settings.max_message_bytes)
        run = await runs.start(user, message, data.conversation_id)
        stream = RunStream(
            runs, run, stop_on_disconnect=data.on_disconnect == "cancel", ping_s=settings.sse_ping_interval_s
        )
        return PlainStream(
            stream.frames(), media_type="text/event-stream", headers=SSE_HEADERS,
            background=BackgroundTask(stream.after_response),
        )

    @get(
        "/runs/{run_id:str}/events",
        summary="Resume a run's event stream (SSE with id: lines)",
        description="Replays the events after `Last-Event-ID` (or `?after=`), then follows the run live "
        "until `done`. Works for running and finished runs.",
        responses=RESUME_RESPONSE,
        raises=[*AUTH_ERRORS, NotFoundException],
    )
    async def run_events(
        self,
        user: NamedDependency[str],
        runs: NamedDependency[RunManager],
        settings: NamedDependency[Settings],
        run_id: FromPath[str],
        last_event_id: Annotated[int | None, HeaderParameter(name="Last-Event-ID", required=False)] = None,
        after: FromQuery[int | None] = None,
    ) -> Stream:
        follower = await runs.follow(user, run_id)
        start = last_event_id if last_event_id is not None else (after or 0)
        return PlainStream(
            resume_frames(follower, start, settings.sse_ping_interval_s),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
