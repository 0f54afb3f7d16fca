"""Plain Server-Sent Events: ``POST /chat/stream`` and the resume route.

Frames are exactly ``data: <json>\\n\\n`` (naive clients split on blank lines), built from the
bytes the domain encoded once; Litestar's own SSE writer adds CRLFs and fields we do not want.
The ChatKit transport frames its events the same way (``data_frames``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from domain.approvals import Decision
from domain.errors import AlreadyStarted
from domain.limits import MAX_SEQ
from domain.runs import RunManager, Subscription
from transports.chat_body import ApprovalDecision, ChatRequest
from transports.event_stream import EventStream
from transports.http_errors import errors
from transports.route_specs import (
    APPROVAL_RESPONSE,
    CHAT_ERRORS,
    FOLLOW_ERRORS,
    RESUME_RESPONSE,
    SSE_RESPONSE,
    Waiting,
)

# Litestar leaves a bound of 0 (falsy) out of the document: stated again for it.
AT_LEAST_0 = {"minimum": 0}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"


def data_frames(batch: Iterable[bytes]) -> bytes:
    return b"".join(b"data: " + event + b"\n\n" for event in batch)


def id_data_frames(batch: list[bytes], first_seq: int) -> bytes:
    return b"".join(
        b"id: %d\ndata: " % (first_seq + n) + event + b"\n\n" for n, event in enumerate(batch)
    )


def following(runs: RunManager, subscription: Subscription, frames: AsyncIterator[bytes],
              headers: dict[str, str] = SSE_HEADERS) -> EventStream:
    """A response streaming ``frames`` read from ``subscription``: however it ends, the
    subscription is closed (Stop, where leaving means that), and a client that reads nothing
    for the send timeout is let go."""
    return EventStream(frames, headers=headers, on_close=subscription.aclose, send_timeout_s=runs.limits.send_timeout_s)


async def plain_frames(runs: RunManager, subscription: Subscription) -> AsyncIterator[bytes]:
    streamed = runs.observer.streamed
    async for batch in subscription:
        if batch:
            streamed("sse", len(batch))
            yield data_frames(batch)
        else:
            yield PING


async def resume_frames(runs: RunManager, subscription: Subscription) -> AsyncIterator[bytes]:
    seq, streamed = subscription.first_seq, runs.observer.streamed
    async for batch in subscription:
        if batch:
            streamed("sse", len(batch))
            yield id_data_frames(batch, seq)
            seq += len(batch)
        else:
            yield PING


class SSEController(Controller):
    tags = ["chat"]

    @post(
        "/chat/stream",
        status_code=200,
        summary="Send a message and stream the reply (SSE)",
        description="Starts a run and streams its events. Closing the stream is Stop, unless "
        "`on_disconnect` is `continue`: then the run finishes and can be resumed.",
        # No media_type here: Litestar gives error responses the handler's media type, so a 4xx
        # JSON body went out as text/event-stream. The stream and SSE_RESPONSE carry the type.
        responses={**SSE_RESPONSE, **errors(*CHAT_ERRORS)},
    )
    async def chat_stream(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], data: JSONBody[ChatRequest],
    ) -> EventStream:
        try:
            run = await runs.start(user, data.message, data.conversation_id, again=data.again,
                                   client_message_id=data.client_message_id, transport="sse")
            subscription = runs.subscribe(run, on_leave="stop" if data.on_disconnect == "cancel" else "continue")
        except AlreadyStarted as sent:  # a retried send: its reply from the start
            subscription = await runs.follow(user, sent.run_id)
        return following(runs, subscription, plain_frames(runs, subscription))

    @post(
        "/runs/{run_id:str}/approvals",
        status_code=200,
        summary="Approve or reject a tool call the run waits for; stream the continuation (SSE)",
        description="A run that ended `awaiting_approval` named its calls in `approval_request` events. "
        "Each is decided once (409 `already_decided` after). The last decision starts the continuation, "
        "a new run in the same conversation, streamed here like `/chat/stream`; before that, 202 with "
        "the calls still waiting. A new message in the conversation rejects the calls still waiting.",
        responses={**APPROVAL_RESPONSE, **errors(*CHAT_ERRORS)},
    )
    async def decide(
        self, user: NamedDependency[str], runs: NamedDependency[RunManager], run_id: FromPath[str],
        data: JSONBody[ApprovalDecision],
    ) -> EventStream | Response[Waiting]:
        decided = await runs.decide(user, run_id, Decision(data.call_id, data.approve, data.reason), transport="sse")
        if isinstance(decided, list):
            return Response(Waiting(waiting_for=decided), status_code=HTTP_202_ACCEPTED)
        subscription = runs.subscribe(decided, on_leave="stop" if data.on_disconnect == "cancel" else "continue")
        return following(runs, subscription, plain_frames(runs, subscription))

    @get(
        "/runs/{run_id:str}/events",
        summary="Resume a run's event stream (SSE with id: lines)",
        description="Replays the events after `Last-Event-ID` (or `?after=`), then follows the run live "
        "until `done`. Works for running and finished runs.",
        responses={**RESUME_RESPONSE, **errors(*FOLLOW_ERRORS)},
    )
    async def run_events(
        self,
        user: NamedDependency[str],
        runs: NamedDependency[RunManager],
        run_id: FromPath[str],
        last_event_id: Annotated[
            int | None, HeaderParameter(name="Last-Event-ID", required=False, ge=0, le=MAX_SEQ, schema_extra=AT_LEAST_0)
        ] = None,
        after: Annotated[int | None, QueryParameter(ge=0, le=MAX_SEQ, schema_extra=AT_LEAST_0)] = None,
    ) -> EventStream:
        start = last_event_id if last_event_id is not None else (after or 0)
        subscription = await runs.follow(user, run_id, start)
        return following(runs, subscription, resume_frames(runs, subscription))
