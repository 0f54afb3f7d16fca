"""A fake OpenAI-compatible server for tests: 127.0.0.1, a random port, no internet.

It speaks just enough of the two wire APIs the agents SDK uses, streamed the way the real
servers stream them:

- ``POST /v1/chat/completions``: ``chat.completion.chunk`` frames (text deltas, tool calls whose
  arguments arrive in fragments, a usage chunk when ``stream_options.include_usage`` asks for it,
  then ``data: [DONE]``);
- ``POST /v1/responses``: Responses API events (``response.created`` …
  ``response.output_text.delta`` … ``response.function_call_arguments.delta`` …
  ``response.completed`` with the output items and usage).

A test scripts the model's turns with :class:`Reply` values, one per request, and can make a
turn fail: an HTTP status (401, 429, 500…), a stream that breaks mid-way, one that stalls, or
one with a malformed frame in it.
Every request is recorded with its body, and whether the client hung up before the end.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn

# How long a stalled stream waits for the client to give up before ending on its own.
STALL_LIMIT_S = 30.0


@dataclass(frozen=True)
class ToolCall:
    """A function call whose JSON arguments are streamed in ``fragments`` pieces."""

    name: str
    arguments: dict[str, Any]
    fragments: int = 3
    call_id: str | None = None  # None: a fresh id per request, as a real model would give

    def with_id(self) -> ToolCall:
        return self if self.call_id else replace(self, call_id=f"call_{uuid.uuid4().hex[:16]}")

    def argument_pieces(self) -> list[str]:
        text = json.dumps(self.arguments)
        size = max(1, -(-len(text) // self.fragments))
        return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass(frozen=True)
class Reply:
    """One scripted model turn.

    ``break_after`` / ``stall_after`` count streamed deltas (text pieces and argument
    fragments): after that many, the connection is dropped without finishing the body, or the
    server stops sending and waits for the client to hang up. ``stall_after=0`` stalls before
    the response headers. A ``status`` other than 200 answers with an OpenAI-style error body.
    """

    text: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    usage: tuple[int, int] = (10, 5)  # input, output tokens
    status: int = 200
    break_after: int | None = None
    stall_after: int | None = None
    delay_s: float = 0.0  # pause before each delta
    interval_s: float = 0.0  # deltas due this far apart on the fake's own clock, as a provider paces tokens
    recorded: bytes | None = None  # a recorded stream's body, sent as it is, one SSE event per write
    malformed: bytes | None = None  # a frame sent as it is after ``malformed_after`` deltas (not JSON, a wrong shape…)
    malformed_after: int = 0

    @classmethod
    def replay(cls, body: bytes, **options: Any) -> Reply:
        return cls(recorded=body, **options)

    @classmethod
    def say(cls, *pieces: str, **options: Any) -> Reply:
        return cls(text=pieces, **options)

    @classmethod
    def call(cls, name: str, arguments: dict[str, Any], **options: Any) -> Reply:
        return cls(tool_calls=(ToolCall(name, arguments),), **options)


@dataclass
class Received:
    """A request the fake server got, and how its response ended."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes = b""  # the body as sent
    completed: bool = False  # the whole response was sent
    disconnected: threading.Event = field(default_factory=threading.Event)  # client hung up mid-stream


class _BrokenStream(Exception):
    """Raised inside the ASGI app after the response started: uvicorn then drops the socket."""


_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
    403: ("invalid_request_error", "unsupported_country", "Country, region, or territory not supported."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for {model}. Please try again in 20s."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class FakeOpenAI:
    """The ASGI app and its uvicorn server, running in a thread of its own."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._repeat: Reply | None = None
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- scripting --------------------------------------------------------------------

    def script(self, *replies: Reply) -> FakeOpenAI:
        """The next requests get these replies, in order."""
        with self._lock:
            self._script.extend(replies)
        return self

    def repeat(self, reply: Reply) -> FakeOpenAI:
        """Every request after the scripted ones gets this reply."""
        self._repeat = reply
        return self

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self._repeat is not None:
            return self._repeat
        return Reply.say("(the fake model has nothing scripted)")

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # -- server -----------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=0, log_level="critical", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.005)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        record = Received(path=scope["path"], body=json.loads(raw) if raw else {}, headers=headers, raw=raw)
        with self._lock:
            self.requests.append(record)
        reply = self._next_reply()
        try:
            await self._answer(record, reply, receive, send)
        except OSError:  # uvicorn's ClientDisconnected: a send after the client left
            record.disconnected.set()

    async def _answer(self, record: Received, reply: Reply, receive: Any, send: Any) -> None:
        model = record.body.get("model", "")
        reply = replace(reply, tool_calls=tuple(call.with_id() for call in reply.tool_calls))
        if reply.recorded is not None:
            frames = _recorded_frames(reply.recorded)
        elif record.path.endswith("/chat/completions"):
            include_usage = bool((record.body.get("stream_options") or {}).get("include_usage"))
            frames = _chat_frames(reply, model, include_usage)
        elif record.path.endswith("/responses"):
            frames = _responses_frames(reply, model)
        else:
            await _json(send, 404, {"error": {"message": f"Unknown path {record.path}", "type": "invalid_request_error"}})
            return
        if not record.body.get("stream"):
            await _json(send, 400, {"error": {"message": "the fake serves streams only", "type": "invalid_request_error"}})
            return
        hung_up = asyncio.ensure_future(_disconnect(receive))
        try:
            if reply.status != 200:
                kind, code, text = _ERRORS.get(reply.status, ("server_error", None, "Error."))
                key = record.headers.get("authorization", "").removeprefix("Bearer ")
                body = {"error": {"message": text.format(key=key, model=model), "type": kind, "code": code}}
                extra = [(b"retry-after", b"1")] if reply.status == 429 else []
                await _json(send, reply.status, body, extra)
                record.completed = True
                return
            if reply.stall_after == 0:
                await self._stall(record, hung_up)
                return
            await send({
                "type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
            })
            deltas, started = 0, time.monotonic()
            for is_delta, frame in frames:
                if is_delta:
                    if reply.malformed is not None and deltas == reply.malformed_after:
                        await send({"type": "http.response.body", "body": reply.malformed, "more_body": True})
                    if reply.break_after is not None and deltas >= reply.break_after:
                        raise _BrokenStream("the fake model broke its stream on purpose")
                    if reply.stall_after is not None and deltas >= reply.stall_after:
                        await self._stall(record, hung_up)
                        return
                    if reply.delay_s:
                        await asyncio.wait([hung_up], timeout=reply.delay_s)
                    if reply.interval_s and (wait := started + deltas * reply.interval_s - time.monotonic()) > 0:
                        await asyncio.sleep(wait)  # short: a hang-up is seen at the next frame
                    deltas += 1
                if hung_up.done():
                    record.disconnected.set()
                    return
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            record.completed = True
        finally:
            hung_up.cancel()

    @staticmethod
    async def _stall(record: Received, hung_up: asyncio.Future) -> None:
        await asyncio.wait([hung_up], timeout=STALL_LIMIT_S)
        if hung_up.done():
            record.disconnected.set()


async def _disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _json(send: Any, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": data})


def _sse(payload: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def _recorded_frames(body: bytes) -> list[tuple[bool, bytes]]:
    """A recorded body cut after each blank line (LF or CRLF), so each event is its own write."""
    separator = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    pieces = body.split(separator)
    frames = [piece + separator for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    return [(True, frame) for frame in frames]


# -- Chat Completions ------------------------------------------------------------------


def _chat_frames(reply: Reply, model: str, include_usage: bool) -> list[tuple[bool, bytes]]:
    """(is a delta, frame) pairs of one streamed chat completion."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_fake"}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    frames = [(False, chunk({"role": "assistant", "content": ""}))]
    frames += [(True, chunk({"content": piece})) for piece in reply.text]
    for index, call in enumerate(reply.tool_calls):
        frames.append((False, chunk({"tool_calls": [{
            "index": index, "id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": ""},
        }]})))
        frames += [
            (True, chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
            for piece in call.argument_pieces()
        ]
    frames.append((False, chunk({}, "tool_calls" if reply.tool_calls else "stop")))
    if include_usage:
        prompt, completion = reply.usage
        frames.append((False, _sse({**base, "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        }})))
    frames.append((False, b"data: [DONE]\n\n"))
    return frames


# -- Responses API -----------------------------------------------------------------------


def _responses_frames(reply: Reply, model: str) -> list[tuple[bool, bytes]]:
    response_id = f"resp_{uuid.uuid4().hex[:16]}"
    sequence = iter(range(1_000_000))
    frames: list[tuple[bool, bytes]] = []

    def event(kind: str, streamed: bool = False, **fields: Any) -> None:
        frames.append((streamed, _sse({"type": kind, "sequence_number": next(sequence), **fields}, kind)))

    def response(status: str, output: list[dict], usage: dict | None) -> dict:
        return {
            "id": response_id, "object": "response", "created_at": int(time.time()), "model": model,
            "status": status, "output": output, "usage": usage, "error": None, "incomplete_details": None,
            "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0,
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "text": {"format": {"type": "text"}},
            "truncation": "disabled", "reasoning": {"effort": None, "summary": None},
        }

    event("response.created", response=response("in_progress", [], None))
    event("response.in_progress", response=response("in_progress", [], None))
    output: list[dict] = []
    if reply.text:
        index, item_id, text = len(output), f"msg_{uuid.uuid4().hex[:16]}", "".join(reply.text)
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        event("response.output_item.added", output_index=index, item=item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        event("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=part)
        for piece in reply.text:
            event("response.output_text.delta", True, item_id=item_id, output_index=index, content_index=0,
                  delta=piece, logprobs=[])
        event("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text,
              logprobs=[])
        part = {**part, "text": text}
        event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part)
        item = {**item, "status": "completed", "content": [part]}
        event("response.output_item.done", output_index=index, item=item)
        output.append(item)
    for call in reply.tool_calls:
        index, item_id = len(output), f"fc_{uuid.uuid4().hex[:16]}"
        item = {"id": item_id, "type": "function_call", "call_id": call.call_id, "name": call.name,
                "arguments": "", "status": "in_progress"}
        event("response.output_item.added", output_index=index, item=item)
        for piece in call.argument_pieces():
            event("response.function_call_arguments.delta", True, item_id=item_id, output_index=index, delta=piece)
        arguments = json.dumps(call.arguments)
        event("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments,
              name=call.name)
        item = {**item, "arguments": arguments, "status": "completed"}
        event("response.output_item.done", output_index=index, item=item)
        output.append(item)
    prompt, completion = reply.usage
    usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens": completion,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}
    event("response.completed", response=response("completed", output, usage))
    return frames


# A model that adds two tasks, then calls delete_task on both in one turn (parallel calls):
# what the approval tests of every transport script.
TWO_TASKS_THEN_BOTH_DELETED_IN_ONE_TURN = (
    Reply.call("add_task", {"title": "buy milk"}), Reply.say("Added."),
    Reply.call("add_task", {"title": "walk the dog"}), Reply.say("Added."),
    Reply(tool_calls=(ToolCall("delete_task", {"title": "buy milk"}), ToolCall("delete_task", {"title": "walk the dog"}))),
    Reply.say("Deleted what you allowed."),
)
