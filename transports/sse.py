"""Plain Server-Sent Events: ``POST /chat/stream``, approvals and the resume route.

The domain's events go out as they were encoded, ``data: <json>\\n\\n`` (``sse_framing``),
through the one reply loop (``reply_stream``).
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from domain.approvals import Decision
from domain.limits import MAX_SEQ
from domain.runs import RunManager, start_or_follow
from transports.chat_body import ApprovalDecision, ChatRequest
from transports.event_stream import EventStream
from transports.http_errors import errors
from transports.reply_stream import following
from transports.route_specs import (
    APPROVAL_RESPONSE,
    CHAT_ERRORS,
    FOLLOW_ERRORS,
    RESUME_RESPONSE,
    SSE_RESPONSE,
    Waiting,
)
from transports.sse_framing import data_frames, id_data_frames

# Litestar leaves a bound of 0 (falsy) out of the document: stated again for it.
AT_LEAST_0 = {"minimum": 0}


class PlainFraming:
    """The domain's encoded events as they are, one ``data:`` frame each: nothing decoded."""

    __slots__ = ()
    protocol = "sse"
    frames = staticmethod(data_frames)

    def close(self) -> bytes:
        return b""


class ResumeFraming(PlainFraming):
    """Each event's frame carries its sequence number as its ``id:``, for ``Last-Event-ID``."""

    __slots__ = ("seq",)

    def __init__(self, first_seq: int) -> None:
        self.seq = first_seq

    def frames(self, batch: list[bytes]) -> bytes:  # type: ignore[override]
        framed = id_data_frames(batch, self.seq)
        self.seq += len(batch)
        return framed


PLAIN = PlainFraming()


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
        subscription = await start_or_follow(
            runs, user, data.message, data.conversation_id, again=data.again,
            client_message_id=data.client_message_id, transport="sse",
            on_leave="stop" if data.on_disconnect == "cancel" else "continue",
        )
        return following(runs, subscription, PLAIN)

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
        return following(runs, subscription, PLAIN)

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
        return following(runs, subscription, ResumeFraming(subscription.first_seq))
