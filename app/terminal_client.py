"""``chat-server chat``: talk to a running server from a terminal, over plain SSE or the WebSocket.

Each line read from stdin is a message; the reply is printed as it streams and tool calls show
on a dim line. A tool that needs approval is asked about (y/n) before it runs. Ctrl-C during a
reply stops that reply (an explicit cancel, so the server saves it as stopped), not the
program; Ctrl-D quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import quote

import httpx
import jwt
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from app.settings import Settings, load_settings
from domain import events
from domain.events import Event

DEFAULT_USER = "demo"  # the user of the dev-mode link the server prints


class ClientError(Exception):
    """A problem to tell the user; ``fatal`` ones (a refused token) end the program."""

    def __init__(self, message: str, *, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


# ---- the token --------------------------------------------------------------------------------


def resolve_token(token: str | None, user: str | None, settings: Settings) -> tuple[str, str]:
    """``(token, user)``: the token given or ``CHAT_TOKEN``, else one signed here with the
    server's secret (``JWT_SECRET`` or the dev-mode secret in the data directory)."""
    token = token or os.environ.get("CHAT_TOKEN") or None
    if token:
        try:
            subject = jwt.decode(token, options={"verify_signature": False}).get("sub")
        except jwt.InvalidTokenError:
            raise ClientError("the token is not a JWT", fatal=True) from None
        return token, user or subject or DEFAULT_USER
    user = user or DEFAULT_USER
    # Never create a dev secret here: one the server does not share would sign useless tokens.
    if not settings.jwt_secret and not (Path(settings.data_dir) / "jwt_secret").is_file():
        raise ClientError(
            "no token: pass --token, set CHAT_TOKEN, or run this where the server's JWT_SECRET "
            "or data directory is (see `chat-server token USER`)", fatal=True,
        )
    from app.auth import AuthError, Authenticator

    try:
        return Authenticator.from_settings(settings).issue(user), user
    except AuthError as exc:
        raise ClientError(f"{exc.message} Pass --token.", fatal=True) from None


# ---- transports -------------------------------------------------------------------------------


class Transport(Protocol):
    def reply(self, message: str, conversation_id: str | None) -> AsyncIterator[Event]: ...

    def decide(self, run_id: str, call_id: str, approve: bool) -> AsyncIterator[Event]:
        """The user's decision on a call the run waits for: the continuation's events once it
        was the last decision, else none."""

    async def cancel(self, run_id: str) -> None: ...

    async def aclose(self) -> None: ...


def _http_error(response: httpx.Response) -> ClientError:
    try:
        detail = response.json().get("detail") or response.reason_phrase
    except ValueError:
        detail = response.reason_phrase
    if response.status_code == 401:
        return ClientError(f"the server refused the token: {detail}", fatal=True)
    retry = response.headers.get("Retry-After")
    return ClientError(f"{detail} (HTTP {response.status_code}{f', retry in {retry} s' if retry else ''})")


class SSETransport:
    """``POST /chat/stream``; Stop is ``POST /runs/{id}/cancel`` and the stream then ends
    with ``done{cancelled}``."""

    def __init__(self, url: str, user: str, token: str):
        self.url = url
        self.http = httpx.AsyncClient(
            base_url=f"{url}/api/{quote(user, safe='')}", headers={"Authorization": f"Bearer {token}"},
            # The server pings idle streams, but a tool may take its time: no read timeout.
            timeout=httpx.Timeout(30.0, read=None),
        )

    def reply(self, message: str, conversation_id: str | None) -> AsyncIterator[Event]:
        return self._events("/chat/stream", {"message": message, "conversation_id": conversation_id})

    def decide(self, run_id: str, call_id: str, approve: bool) -> AsyncIterator[Event]:
        return self._events(f"/runs/{quote(run_id, safe='')}/approvals", {"call_id": call_id, "approve": approve})

    async def _events(self, path: str, body: dict[str, Any]) -> AsyncIterator[Event]:
        try:
            async with self.http.stream("POST", path, json=body) as response:
                if response.is_error:
                    await response.aread()
                    raise _http_error(response)
                async for line in response.aiter_lines():  # none after a 202: other calls still wait
                    if line.startswith("data: "):
                        yield events.decode(line[6:])
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None

    async def cancel(self, run_id: str) -> None:
        response = await self.http.post(f"/runs/{quote(run_id, safe='')}/cancel")
        if response.is_error and response.status_code != 409:  # 409: it finished meanwhile
            raise _http_error(response)

    async def aclose(self) -> None:
        await self.http.aclose()


class _Refused(msgspec.Struct, tag_field="type", tag="error"):
    """The WebSocket's answer to a frame it refused (a run's own error event has a ``seq``)."""

    code: str
    message: str
    run_id: str | None = None


class _Pong(msgspec.Struct, tag_field="type", tag="pong"):
    pass


class _Waiting(msgspec.Struct, tag_field="type", tag="approval_waiting"):
    """A decision recorded while other calls of the run still wait."""

    run_id: str


_decode_reply = msgspec.json.Decoder(_Refused | _Pong | _Waiting).decode


def _decode_frame(data: str | bytes) -> Event | _Refused | _Pong | _Waiting:
    try:
        return events.decode(data)
    except msgspec.ValidationError:
        return _decode_reply(data)


class WebSocketTransport:
    """One socket for the session, opened on first use and again after it drops; Stop is a
    ``cancel`` frame."""

    def __init__(self, url: str, user: str, token: str):
        self.url = url.replace("http", "ws", 1) + f"/api/{quote(user, safe='')}/ws"
        self.token = token
        self.socket: ClientConnection | None = None

    async def _connected(self) -> ClientConnection:
        if self.socket is None or self.socket.state is not State.OPEN:
            try:
                socket = await connect(self.url)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                raise ClientError(f"cannot reach {self.url}: {exc}") from None
            # The token goes in the first frame rather than the URL, which servers log.
            await socket.send(json.dumps({"type": "auth", "token": self.token}))
            self.socket = socket
        return self.socket

    def reply(self, message: str, conversation_id: str | None) -> AsyncIterator[Event]:
        return self._events({"type": "chat", "message": message, "conversation_id": conversation_id})

    def decide(self, run_id: str, call_id: str, approve: bool) -> AsyncIterator[Event]:
        return self._events({"type": "approval", "run_id": run_id, "call_id": call_id, "approve": approve}, run_id)

    async def _events(self, request: dict[str, Any], about: str | None = None) -> AsyncIterator[Event]:
        """The events of the run ``request`` starts; ``about``: the run a refusal may name."""
        socket = await self._connected()
        run_id: str | None = None
        try:
            await socket.send(json.dumps(request))
            async for data in socket:
                frame = _decode_frame(data)
                if isinstance(frame, _Pong):
                    continue
                if isinstance(frame, _Waiting):
                    return
                if isinstance(frame, _Refused):
                    if frame.code == "run_finished":  # a Stop that came too late: done is on its way
                        continue
                    if frame.run_id in (None, run_id, about):
                        raise ClientError(f"{frame.message} ({frame.code})")
                    continue
                if run_id is None and isinstance(frame, events.Start):
                    run_id = frame.run_id
                if frame.run_id == run_id:
                    yield frame
                    if isinstance(frame, events.Done):
                        return
            self.socket = None
            raise ClientError("the server closed the connection")
        except ConnectionClosed as exc:
            self.socket = None
            if exc.rcvd is not None and exc.rcvd.code == 1008:
                raise ClientError(f"the server refused the token: {exc.rcvd.reason}", fatal=True) from None
            raise ClientError("the connection to the server was lost") from None

    async def cancel(self, run_id: str) -> None:
        if self.socket is not None:
            await self.socket.send(json.dumps({"type": "cancel", "run_id": run_id}))

    async def aclose(self) -> None:
        if self.socket is not None:
            await self.socket.close()


async def today_usage(url: str, user: str, token: str) -> str:
    """``GET /usage`` in one line: today's tokens, and what the quota leaves of them."""
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            response = await http.get(f"{url}/api/{quote(user, safe='')}/usage",
                                      headers={"Authorization": f"Bearer {token}"})
    except httpx.TransportError as exc:
        raise ClientError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if response.is_error:
        raise _http_error(response)
    usage = response.json()
    line = f"Tokens today (UTC): {usage['input_tokens']} in, {usage['output_tokens']} out"
    return line if usage["tokens_left_today"] is None else f"{line}; {usage['tokens_left_today']} left"


# ---- printing ---------------------------------------------------------------------------------


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Printer:
    """The reply as it streams; side lines (tools, status) dim when the output is a terminal."""

    def __init__(self, out: TextIO, color: bool):
        self.out = out
        self.color = color
        self.at_line_start = True

    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.at_line_start = text.endswith("\n")

    def line(self, text: str, dim: bool = True) -> None:
        if not self.at_line_start:
            self.write("\n")
        self.write(f"\x1b[2m{text}\x1b[0m\n" if dim and self.color else f"{text}\n")

    def error(self, text: str) -> None:
        if not self.at_line_start:
            self.write("\n")
        print(text, file=sys.stderr, flush=True)

    def event(self, event: Event) -> None:
        if isinstance(event, events.Text):
            self.write(event.content)
        elif isinstance(event, events.ToolCall):
            self.line(f"⚙ {event.name} {_short(event.arguments)}")
        elif isinstance(event, events.ToolResult):
            self.line(f"  → {_short(event.result)}")
        elif isinstance(event, events.Error):
            self.line(f"error: {event.message} ({event.code})", dim=False)
        elif isinstance(event, events.Done):
            labels = {"cancelled": "[stopped]", "interrupted": "[interrupted: the server stopped]",
                      "failed": "[failed]", "awaiting_approval": "[waiting for your decision]"}
            if event.status in labels:
                self.line(labels[event.status])
            elif not self.at_line_start:
                self.write("\n")


# ---- the session ------------------------------------------------------------------------------


class ChatSession:
    """Reads lines, sends each as a message of one conversation, prints the reply; SIGINT
    during a reply cancels that reply."""

    def __init__(self, transport: Transport, printer: Printer, prompt: str = "",
                 usage: Callable[[], Awaitable[str]] | None = None):
        self.transport = transport
        self.usage = usage  # what ``/usage`` prints
        self.printer = printer
        self.prompt = prompt
        self.conversation_id: str | None = None
        self.replying = False
        self.run_id: str | None = None
        self.stop_requested = False
        self._cancels: set[asyncio.Task[None]] = set()
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()

    async def run(self, lines: asyncio.Queue[str | None]) -> int:
        self.lines = lines
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.interrupt)
        try:
            while True:
                self.printer.write(self.prompt)
                line = await lines.get()
                if line is None:
                    if self.prompt:
                        self.printer.write("\n")
                    return 0
                if self.prompt:
                    self.printer.at_line_start = True  # the Enter the terminal echoed
                if not line.strip():
                    continue
                try:
                    if line.strip() == "/usage" and self.usage is not None:
                        self.printer.line(await self.usage())
                    else:
                        await self.reply(line.strip())
                except ClientError as exc:
                    self.printer.error(f"chat: {exc}")
                    if exc.fatal:
                        return 1
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await self.transport.aclose()

    async def reply(self, message: str) -> None:
        asked = await self._follow(self.transport.reply(message, self.conversation_id))
        # A tool that needs the user's yes: ask about each call, then follow what comes of it
        # (which may ask again).
        while asked:
            run_id, requests = asked
            asked = None
            for request in requests:
                approve = await self._ask(f"Allow {request.name} {_short(request.arguments)}? [y/N] ")
                asked = await self._follow(self.transport.decide(run_id, request.call_id, approve)) or asked

    async def _ask(self, question: str) -> bool:
        self.printer.write(question)
        answer = await self.lines.get()
        if answer is None:
            return False
        self.printer.at_line_start = True
        return answer.strip().lower() in ("y", "yes")

    async def _follow(self, stream: AsyncIterator[Event]) -> tuple[str, list[events.ApprovalRequest]] | None:
        """Print a reply; the calls it waits on, if it ended waiting for approval."""
        self.replying, self.run_id, self.stop_requested = True, None, False
        requests: list[events.ApprovalRequest] = []
        try:
            async for event in stream:
                if isinstance(event, events.Start):
                    self.conversation_id, self.run_id = event.conversation_id, event.run_id
                    if self.stop_requested:
                        self._cancel()
                elif isinstance(event, events.ApprovalRequest):
                    requests.append(event)
                elif isinstance(event, events.Done) and event.status == "awaiting_approval":
                    return event.run_id, requests
                self.printer.event(event)
            return None
        finally:
            self.replying, self.run_id = False, None

    def interrupt(self) -> None:
        if not self.replying:
            self.printer.line("(Ctrl-D quits)")
            self.printer.write(self.prompt)
        elif not self.stop_requested:
            self.stop_requested = True
            if self.run_id is not None:
                self._cancel()

    def _cancel(self) -> None:
        task = asyncio.ensure_future(self.transport.cancel(self.run_id or ""))
        self._cancels.add(task)
        task.add_done_callback(self._cancel_done)

    def _cancel_done(self, task: asyncio.Task[None]) -> None:
        self._cancels.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self.printer.error(f"chat: could not stop the reply: {error}")


def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None], stdin: TextIO) -> None:
    # A thread, because stdin may be a terminal, a pipe or a file; daemon, so it never holds exit.
    for line in iter(stdin.readline, ""):
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def chat(url: str, user: str, token: str, transport_name: str) -> int:
    make = WebSocketTransport if transport_name == "ws" else SSETransport
    transport = make(url.rstrip("/"), user, token)
    interactive = sys.stdin.isatty()
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    printer = Printer(sys.stdout, color)
    usage = partial(today_usage, url.rstrip("/"), user, token)
    if interactive:
        printer.line(f"{user} at {url} over {'WebSocket' if make is WebSocketTransport else 'SSE'}. "
                     "Ctrl-C stops a reply, Ctrl-D quits, /usage shows today's tokens.")
        with contextlib.suppress(ClientError):  # the first reply will say what is wrong
            printer.line(await usage())
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_read_lines, args=(loop, lines, sys.stdin), daemon=True, name="stdin").start()
    return await ChatSession(transport, printer, prompt="› " if interactive else "", usage=usage).run(lines)


def main(url: str | None, user: str | None, transport: str, token: str | None) -> int:
    settings = load_settings()
    try:
        token, user = resolve_token(token, user, settings)
    except ClientError as exc:
        print(f"chat-server chat: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(chat(url or settings.public_url, user, token, transport))
