"""The Vercel AI SDK's ``WebSocketChatTransport`` protocol: ``/api/{user_id}/ai-sdk/ws``.

Several UI message streams share one socket, each its client's ``requestId``. Client frames:
``send`` (what ``DefaultChatTransport`` posts, plus the request's headers), ``resume`` (the chat's
running reply, replayed from its first chunk, or ``no-active``) and ``abort``, which is Stop.
Server frames: ``start``, ``chunk`` (numbered from 0 per request), ``end``, ``error``,
``no-active``. A dropped socket is not Stop: the reply goes on, and ``resume`` replays it.

Auth: ``?token=`` at connect (what a browser can do), or the ``Authorization`` header the
transport puts in each request frame. A refused frame gets an ``error`` frame for its request;
the socket stays open.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import msgspec
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.params import FromPath

from domain import events
from domain.errors import AuthError, ChatError, InvalidInput, RunFinished
from domain.limits import MAX_SEQ
from domain.runs import RunManager, Subscription
from transports.ai_sdk import Chunk, ChunkTranslator, ClientId, Trigger, UIMessage, running_reply, start_reply
from transports.websocket import InvalidFrame, SocketSession, TokenVerifier, token_accepted

log = logging.getLogger(__name__)

RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


# -- what the client sends ---------------------------------------------------------------

class _Request(msgspec.Struct, tag_field="type", rename="camel", frozen=True):
    request_id: RequestId


class SendRequest(_Request, tag="send"):
    id: ClientId
    messages: list[UIMessage]
    trigger: Trigger = "submit-message"
    message_id: str | None = None
    headers: dict[str, str] = {}
    body: dict[str, Any] = {}  # the transport's extra data: read by nothing here
    metadata: Any = None


class ResumeRequest(_Request, tag="resume"):
    id: ClientId
    last_sequence: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)] | None = None
    headers: dict[str, str] = {}
    body: dict[str, Any] = {}
    metadata: Any = None


class AbortRequest(_Request, tag="abort"):
    pass


Request = SendRequest | ResumeRequest | AbortRequest


class _RequestIdOnly(msgspec.Struct):
    requestId: str = ""  # noqa: N815 (the wire's name)


# -- what the server sends ---------------------------------------------------------------

class _Response(msgspec.Struct, tag_field="type", rename="camel", frozen=True, omit_defaults=True):
    request_id: str


class Started(_Response, tag="start"):
    pass


class ChunkFrame(_Response, tag="chunk"):
    sequence: int
    chunk: Chunk


class Ended(_Response, tag="end"):
    pass


class Failed(_Response, tag="error"):
    error_text: str | None = None


class NoActive(_Response, tag="no-active"):
    pass


Response = Started | ChunkFrame | Ended | Failed | NoActive

_decode_request = msgspec.json.Decoder(Request).decode
_decode_request_id = msgspec.json.Decoder(_RequestIdOnly).decode
_encode = msgspec.json.Encoder().encode


def bearer(headers: dict[str, str]) -> str | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class _UISession(SocketSession):
    def __init__(self, socket: WebSocket, user: str, runs: RunManager, verifier: TokenVerifier, *, signed_in: bool):
        super().__init__(socket, user, runs)
        self._verifier = verifier
        self._signed_in = signed_in  # by ?token= at connect: frames need no header
        self._run_of: dict[str, str] = {}  # request id -> the run it streams

    async def fail(self, request_id: str, message: str) -> None:
        await self.send([_encode(Failed(request_id=request_id, error_text=message))])

    async def handle(self, data: str | bytes) -> None:
        try:
            request = self.decode(_decode_request, data)
        except InvalidFrame as exc:
            await self.fail(self._request_id_in(data), exc.message)
            return
        try:
            if isinstance(request, AbortRequest):
                await self._abort(request.request_id)
                return
            if self.forwarding(request.request_id):
                raise InvalidInput("This requestId is already streaming.", field="requestId")
            await self._authorize(request.headers)
            if isinstance(request, SendRequest):
                subscription, translator = await start_reply(self.runs, self.user, request.id, request.messages,
                                                             request.trigger, on_leave="continue", idle=False,
                                                             transport="ai_sdk_ws")
                if subscription is None:  # approval answers recorded; the run waits for more
                    await self.send(self._whole(request.request_id, translator.still_waiting()))
                    return
                self._stream(request.request_id, subscription, translator, after=-1)
            else:
                subscription = await running_reply(self.runs, self.user, request.id, idle=False)
                if subscription is None:
                    await self.send([_encode(NoActive(request_id=request.request_id))])
                    return
                last = -1 if request.last_sequence is None else request.last_sequence
                self._stream(request.request_id, subscription, ChunkTranslator(), after=last)
        except InvalidInput as exc:
            await self.fail(request.request_id, f"{exc.message} (at `$.{exc.field}`)")
        except ChatError as exc:
            await self.fail(request.request_id, exc.message)

    def _request_id_in(self, data: str | bytes) -> str:
        """The request a refused frame names, if it names one (its ``error`` goes there)."""
        try:
            return _decode_request_id(data).requestId
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return ""

    async def _authorize(self, headers: dict[str, str]) -> None:
        token = bearer(headers)
        if token is None:
            if self._signed_in:
                return
            raise AuthError("Missing bearer token: connect with ?token= or send an Authorization header.")
        if await self._verifier.user_of(token) != self.user:
            raise AuthError("This token belongs to another user.")

    async def _abort(self, request_id: str) -> None:
        run_id = self._run_of.pop(request_id, None)
        if run_id is None or not self.forwarding(request_id):
            await self.fail(request_id, "No such request is streaming.")
            return
        self.stop_forwarding(request_id)
        with contextlib.suppress(RunFinished):  # it ended as the abort came: nothing to stop
            await self.runs.cancel(self.user, run_id)

    def _stream(self, request_id: str, subscription: Subscription, translator: ChunkTranslator, after: int) -> None:
        self._run_of[request_id] = subscription.run_id
        self.forward(request_id, subscription, self._frames(request_id, subscription, translator, after))

    @staticmethod
    def _whole(request_id: str, chunks: list[Chunk]) -> list[bytes]:
        """A stream known whole: its start, its chunks numbered from 0, its end."""
        numbered = (ChunkFrame(request_id=request_id, sequence=n, chunk=chunk) for n, chunk in enumerate(chunks))
        return [_encode(Started(request_id=request_id)), *map(_encode, numbered), _encode(Ended(request_id=request_id))]

    async def _frames(self, request_id: str, subscription: Subscription, translator: ChunkTranslator,
                      after: int) -> AsyncGenerator[list[bytes], None]:
        """The run's chunks numbered from 0; those up to ``after`` the client has already."""
        sequence, streamed = -1, self.runs.observer.streamed
        try:
            yield [_encode(Started(request_id=request_id))]
            async for batch in subscription:
                streamed("ai_sdk_ws", len(batch))
                frames = []
                for payload in batch:
                    for chunk in translator.translate(events.decode(payload)):
                        sequence += 1
                        if sequence > after:
                            frames.append(_encode(ChunkFrame(request_id=request_id, sequence=sequence, chunk=chunk)))
                if frames:
                    yield frames
            yield [_encode(Ended(request_id=request_id))]
        finally:
            self._run_of.pop(request_id, None)


@websocket("/ai-sdk/ws")
async def ai_sdk_socket(
    socket: WebSocket,
    user_id: FromPath[str],
    runs: NamedDependency[RunManager],
    authenticator: NamedDependency[TokenVerifier],
) -> None:
    # Accept first: a close code sent before accept() reaches the browser as a bare HTTP 403.
    await socket.accept()
    try:
        token = socket.query_params.get("token")
        if token is not None and not await token_accepted(socket, authenticator, user_id, token):
            return
        await _UISession(socket, user_id, runs, authenticator, signed_in=token is not None).serve()
    except Exception:
        log.exception("AI SDK websocket session failed")
        with contextlib.suppress(Exception):
            await socket.close(code=1011)
