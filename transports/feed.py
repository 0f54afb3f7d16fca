"""The user's feed over SSE: ``GET /api/{user_id}/events``.

Frames are ``id: <event id>\\ndata: <json>\\n\\n``, one feed event each (``domain.feed``), with
``: ping`` comments while idle. ``Last-Event-ID`` resumes within the window; outside it the
first event is ``reload``. The WebSocket's ``subscribe`` frame reads the same feed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter

from domain.errors import LimitExceeded, ShuttingDown
from domain.feed import MAX_ID_CHARS, Entry, FeedEvent, FeedReader
from domain.runs import RunManager
from transports.event_stream import EventStream
from transports.http_errors import errors
from transports.route_specs import event_stream
from transports.sse_framing import PING, SSE_HEADERS

FEED_RESPONSE = {
    200: ResponseSpec(
        data_container=event_stream(FeedEvent, name="FeedEventFrame"),
        media_type="text/event-stream",
        generate_examples=False,
        description=(
            "Frames `id: <event id>\\ndata: <feed event JSON>\\n\\n` (this schema) as the user's "
            "conversations and tasks change, on any instance; `: ping` comments while idle. It does "
            "not end by itself."
        ),
    )
}


def feed_frames(batch: list[Entry]) -> bytes:
    # A reload with nothing known here has no id: the client keeps its own and is told to
    # reload again should it reconnect, rather than resume past events it never got.
    return b"".join((b"id: %s\n" % entry_id.encode() if entry_id else b"") + b"data: " + event + b"\n\n"
                    for entry_id, event in batch)


async def frames(reader: FeedReader) -> AsyncIterator[bytes]:
    async for batch in reader:
        yield feed_frames(batch) if batch else PING


@get(
    "/events",
    summary="The user's feed: conversations and tasks as they change (SSE)",
    description=(
        "Runs started (with the run id, to follow it at `/runs/{run_id}/events`) and finished; "
        "conversations created, renamed, deleted; tasks added, changed, removed: whichever "
        "instance made the change. `Last-Event-ID` resumes after that event if this instance "
        "still holds it (the last 256 events of the last 10 minutes); otherwise the stream starts "
        "with a `reload` event: reload what you show, then read on."
    ),
    tags=["feed"],
    responses={**FEED_RESPONSE, **errors(LimitExceeded, ShuttingDown)},
)
async def user_events(
    user: NamedDependency[str],
    runs: NamedDependency[RunManager],
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", required=False, max_length=MAX_ID_CHARS)
    ] = None,
) -> EventStream:
    reader = runs.feed.subscribe(user, last_event_id, runs.settings.ping_interval_s)
    return EventStream(frames(reader), headers=SSE_HEADERS, on_close=reader.aclose,
                       send_timeout_s=runs.limits.send_timeout_s)
