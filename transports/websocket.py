"""The WebSocket protocol: ``/api/{user_id}/ws``.

Client frames are one msgspec tagged union; server frames are the domain events (each with
``run_id`` and ``seq``) plus ``pong`` and ``error``; after a ``subscribe`` frame, ``subscribed``
and the user's feed events (``domain.feed``, each with its ``id``). A bad frame gets an ``error`` frame and
the socket stays open; a bad token closes with 1008. Dropping the socket never cancels a
run: WebSocket clients have an explicit ``cancel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Annotated, Any, Protocol, TypeVar, runtime_checkable

import msgspec
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath

from domain.approvals import Decision
from domain.errors import AlreadyStarted, AuthError, ChatError, InvalidInput, KeysUnavailable
from domain.feed import MAX_ID_CHARS, FeedReader
from domain.limits import MAX_SEQ
from domain.runs import RunManager, Subscription
from domain.runs.observer import Transport
from transports.asgi_extensions import SEND_TEXTS

log = logging.getLogger(__name__)
T = TypeVar("T")

Frames = AsyncGenerator[list[bytes], None] | Subscription
"""What a forwarder sends: a subscription's batches, or frames made from them."""

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
AUTH_TIMEOUT_S = 10.0


class _ClientFrame(msgspec.Struct, tag_field="type", frozen=True):
    pass


class AuthFrame(_ClientFrame, tag="auth"):
    token: str


class ChatFrame(_ClientFrame, tag="chat"):
    message: str
    conversation_id: str | None = None
    # Unique per user: a chat frame sent again (after a reconnect) follows the run it started.
    client_message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    # An earlier user message answered anew (regenerate); with a message, edited first.
    again: str | None = None


class CancelFrame(_ClientFrame, tag="cancel"):
    run_id: str


class ResumeFrame(_ClientFrame, tag="resume"):
    run_id: str
    after: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)] = 0


class PingFrame(_ClientFrame, tag="ping"):
    pass


class ApprovalFrame(_ClientFrame, tag="approval"):
    """The user's decision on a call an ``approval_request`` event named."""

    run_id: str
    call_id: str
    approve: bool
    reason: str | None = None


class SubscribeFrame(_ClientFrame, tag="subscribe"):
    """Receive the user's feed; ``after``: the last feed event id seen (resume within the window,
    else a ``reload`` event first). A second subscribe replaces the first."""

    after: Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)] | None = None


ClientFrame = AuthFrame | ChatFrame | CancelFrame | ResumeFrame | PingFrame | SubscribeFrame | ApprovalFrame


class Pong(msgspec.Struct, tag_field="type", tag="pong", frozen=True):
    pass


class ErrorFrame(msgspec.Struct, tag_field="type", tag="error", frozen=True, omit_defaults=True):
    """A refused frame; ``run_id`` when the refusal concerns a run."""

    code: str
    message: str
    run_id: str | None = None


class ApprovalWaiting(msgspec.Struct, tag_field="type", tag="approval_waiting", frozen=True):
    """A decision recorded; the run's continuation starts once these calls are decided too."""

    run_id: str
    waiting_for: list[str]


class Subscribed(msgspec.Struct, tag_field="type", tag="subscribed", frozen=True):
    """The feed is on: every change from now on (after ``after``, when given) follows."""


ServerFrame = Pong | ErrorFrame | Subscribed | ApprovalWaiting

@runtime_checkable  # Litestar checks a dependency's type
class TokenVerifier(Protocol):
    async def user_of(self, token: str) -> str:
        """The user a token names; ``AuthError`` or ``KeysUnavailable`` otherwise."""


_decode_frame = msgspec.json.Decoder(ClientFrame).decode
_encode = msgspec.json.Encoder().encode


class SocketClosed(Exception):
    """The socket closed under a send: the client left, this server closed it (a client that
    stopped reading), or uvicorn did. The end of whatever was sending, never an error."""


class SocketSession:
    """One authenticated socket: its receive loop, its sends, and one forwarding task per
    stream it follows (a run here; a request on the AI SDK's socket).

    Every task the session starts is retrieved when it ends (a failure is logged, never left
    to "Task exception was never retrieved") and awaited before ``serve`` returns."""

    def __init__(self, socket: WebSocket, user: str, runs: RunManager):
        self.socket = socket
        self.user = user
        self.runs = runs
        self._forwarders: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every task started here that runs still
        self._closed = False  # the socket closed (by this server, or under it): sends end at once
        self._one_send_per_batch = SEND_TEXTS in (socket.scope.get("extensions") or {})

    async def send(self, frames: list[bytes]) -> None:
        """Send whole frames; ``SocketClosed`` when the socket is gone (or goes, for a client
        that takes no bytes for the send timeout: what it does not read piles up in memory)."""
        # No lock: each send is whole frames, and each stream has one forwarder, so a stream's
        # frames stay in order while several share the socket.
        if self._closed:
            raise SocketClosed
        try:
            async with asyncio.timeout(self.runs.limits.send_timeout_s):
                if self._one_send_per_batch:
                    await self.socket.send({"type": SEND_TEXTS, "texts": frames})  # type: ignore[typeddict-item]
                    return
                for frame in frames:
                    await self.socket.send({"type": "websocket.send", "text": frame.decode()})
        except TimeoutError:  # before OSError, which it is: caught as one, no client was ever dropped
            await self.close(TRY_AGAIN_LATER, "The client stopped reading.")
            raise SocketClosed from None
        except (OSError, WebSocketDisconnect, RuntimeError) as exc:
            # uvicorn's ClientDisconnected is an OSError. Once a close went out, uvicorn refuses
            # a send with a RuntimeError, and it sends one itself when a client does not answer
            # its keepalive ping in time (slow readers): the receive loop hears of that only when
            # the connection is gone, while the forwarders go on sending.
            self._closed = True
            raise SocketClosed from exc

    async def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True  # before the close is sent: sends from now on end at once
        # Gone already, or (a client that reads nothing) the close waits behind what it did not
        # read: given up after the send timeout (TimeoutError is an OSError).
        with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
            async with asyncio.timeout(self.runs.limits.send_timeout_s):
                await self.socket.close(code=code, reason=reason)

    async def serve(self) -> None:
        try:
            while True:
                frame = await self.socket.receive()
                if frame["type"] == "websocket.disconnect":
                    return
                data = frame.get("text")
                if data is None:
                    data = frame.get("bytes") or b""
                await self.handle(data)
        except SocketClosed:
            return  # an answer found the socket gone
        finally:
            for task in self._forwarders.values():
                task.cancel()
            # Cancelled, each closes its subscription and ends: nothing started here outlives
            # the socket. (A forwarder ending adds the close of its subscription.)
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def handle(self, data: str | bytes) -> None:
        raise NotImplementedError

    def decode(self, decoder: Callable[[str | bytes], T], data: str | bytes) -> T:
        """A client frame, or ``InvalidFrame`` saying why it is not one."""
        try:
            self.runs.limits.check_frame(len(data.encode() if isinstance(data, str) else data))
            return decoder(data)
        except ChatError as exc:
            raise InvalidFrame(exc.code, exc.message) from None
        except msgspec.DecodeError as exc:
            raise InvalidFrame("invalid_frame", f"Invalid frame: {exc}") from None
        except (UnicodeDecodeError, RecursionError) as exc:  # bytes that are not UTF-8; too deep
            reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply"
            raise InvalidFrame("invalid_frame", f"Invalid frame: {reason}") from None

    def forward(self, key: str, subscription: Subscription | FeedReader, frames: Frames,
                events_of: Transport | None = None) -> None:
        """Send ``frames`` read from ``subscription``, one task per key (a second replaces it);
        with ``events_of``, each frame is a chat event, counted as that transport's."""
        self.stop_forwarding(key)
        task = self._start(self._forward(subscription, frames, events_of))
        self._forwarders[key] = task
        task.add_done_callback(functools.partial(self._forwarder_ended, key, subscription))

    def forwarding(self, key: str) -> bool:
        return key in self._forwarders

    def stop_forwarding(self, key: str) -> None:
        previous = self._forwarders.pop(key, None)
        if previous is not None:
            previous.cancel()

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("websocket task failed", exc_info=error)

    def _forwarder_ended(self, key: str, subscription: Subscription | FeedReader, task: asyncio.Task[None]) -> None:
        if self._forwarders.get(key) is task:
            del self._forwarders[key]
        # Cancelled before its first step, the task never ran its finally: close it here too
        # (closing is idempotent).
        self._start(subscription.aclose())

    async def _forward(self, subscription: Subscription | FeedReader, frames: Frames,
                       events_of: Transport | None) -> None:
        streamed = self.runs.observer.streamed
        try:
            async for batch in frames:
                if events_of is not None:
                    streamed(events_of, len(batch))
                await self.send(batch)
        except SocketClosed:
            pass  # the socket went away; the run goes on
        finally:
            await frames.aclose()
            await subscription.aclose()


class InvalidFrame(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message


class _Session(SocketSession):
    """This server's own protocol: chat events of every run followed, each a frame."""

    async def error(self, code: str, message: str, run_id: str | None = None) -> None:
        await self.send([_encode(ErrorFrame(code=code, message=message, run_id=run_id))])

    async def handle(self, data: str | bytes) -> None:
        try:
            frame = self.decode(_decode_frame, data)
        except InvalidFrame as exc:
            await self.error(exc.code, exc.message)
            return
        try:
            if isinstance(frame, ChatFrame):
                try:
                    run = await self.runs.start(self.user, frame.message, frame.conversation_id, again=frame.again,
                                                client_message_id=frame.client_message_id, transport="websocket")
                    self.follow(self.runs.subscribe(run, on_leave="continue", idle=False))
                except AlreadyStarted as sent:
                    self.follow(await self.runs.follow(self.user, sent.run_id, idle=False))
            elif isinstance(frame, CancelFrame):
                await self.runs.cancel(self.user, frame.run_id)
            elif isinstance(frame, ResumeFrame):
                self.follow(await self.runs.follow(self.user, frame.run_id, frame.after, idle=False))
            elif isinstance(frame, ApprovalFrame):
                decision = Decision(frame.call_id, frame.approve, frame.reason)
                decided = await self.runs.decide(self.user, frame.run_id, decision, transport="websocket")
                if isinstance(decided, list):
                    await self.send([_encode(ApprovalWaiting(run_id=frame.run_id, waiting_for=decided))])
                else:  # the continuation: its events on this socket
                    self.follow(self.runs.subscribe(decided, on_leave="continue", idle=False))
            elif isinstance(frame, PingFrame):
                await self.send([_encode(Pong())])
            elif isinstance(frame, SubscribeFrame):
                await self.subscribe(frame.after)
            else:
                await self.error("invalid_frame", "Already authenticated.")
        except InvalidInput as exc:
            # Said as msgspec says a frame's invalid field, as every other invalid frame is.
            await self.error("invalid_frame", f"Invalid frame: {exc.message} - at `$.{exc.field}`")
        except ChatError as exc:
            await self.error(exc.code, exc.message, getattr(frame, "run_id", None))

    def follow(self, subscription: Subscription) -> None:
        self.forward(subscription.run_id, subscription, subscription, events_of="websocket")

    async def subscribe(self, after: str | None) -> None:
        """The user's feed on this socket (a second subscribe replaces the first)."""
        self.stop_forwarding(FEED)
        reader = self.runs.feed.subscribe(self.user, after)
        try:
            await self.send([_encode(Subscribed())])
        except BaseException:
            await reader.aclose()
            raise
        self.forward(FEED, reader, feed_frames(reader))


FEED = "feed"  # the feed's forwarder, beside those of runs (keyed by run id)


async def feed_frames(reader: FeedReader) -> AsyncGenerator[list[bytes], None]:
    async for batch in reader:
        yield [event for _, event in batch]


async def _authenticate(socket: WebSocket, authenticator: TokenVerifier, user_id: str) -> bool:
    """Token from ``?token=`` or a first ``auth`` frame; closes with 1008 on failure."""
    token = socket.query_params.get("token")
    if token is None:
        try:
            frame = _decode_frame(await asyncio.wait_for(socket.receive_data(mode="text"), AUTH_TIMEOUT_S))
            if not isinstance(frame, AuthFrame):
                raise AuthError("Authenticate first: ?token=… or a {\"type\":\"auth\",\"token\":…} frame.")
            token = frame.token
        except (AuthError, msgspec.DecodeError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, AuthError) else "Authentication required."
            await socket.close(code=POLICY_VIOLATION, reason=reason)
            return False
    return await token_accepted(socket, authenticator, user_id, token)


async def token_accepted(socket: WebSocket, authenticator: TokenVerifier, user_id: str, token: str) -> bool:
    """Whether ``token`` names the path's user; if not, the socket is closed saying why."""
    try:
        if await authenticator.user_of(token) != user_id:
            raise AuthError("This token belongs to another user.")
        return True
    except AuthError as exc:
        await socket.close(code=POLICY_VIOLATION, reason=exc.message)
    except KeysUnavailable as exc:
        await socket.close(code=TRY_AGAIN_LATER, reason=exc.message)
    return False


@websocket("/ws")
async def chat_socket(
    socket: WebSocket,
    user_id: FromPath[str],
    runs: NamedDependency[RunManager],
    authenticator: NamedDependency[TokenVerifier],
) -> None:
    # Accept first: a close code sent before accept() reaches the browser as a bare HTTP 403.
    await socket.accept()
    try:
        if await _authenticate(socket, authenticator, user_id):
            await _Session(socket, user_id, runs).serve()
    except Exception:
        log.exception("websocket session failed")
        with contextlib.suppress(Exception):
            await socket.close(code=1011)
