"""ChatKit load: many concurrent ``threads.create`` streams on ``POST /chatkit``.

    .venv/bin/python -m bench.chatkit_load [--streams 100] [--message hello] [--timeout 120]

Starts the server itself (uvicorn on 127.0.0.1, offline model with no delay between text
pieces, temporary SQLite database, JWT_SECRET set), warms it up with one stream, then opens
``--streams`` ChatKit streams at once, each creating a thread. Prints the time from sending
the request to the first text delta (p50/p99) and the events per second delivered to all
clients together. Everything stops after ``--timeout`` seconds at the latest.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import msgspec

from bench.server import percentile, running_server, token


class _Frame(msgspec.Struct):
    type: str
    update: dict | None = None
    message: str | None = None


_decode = msgspec.json.Decoder(_Frame).decode


class StreamResult(msgspec.Struct):
    first_event_ms: float | None
    first_delta_ms: float | None
    events: int
    deltas: int
    last: str
    error: str | None


def create(message: str) -> dict:
    return {"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": message}], "attachments": [], "inference_options": {},
    }}}


async def one_stream(http: httpx.AsyncClient, user: str, message: str) -> StreamResult:
    """One user's stream: the server limits concurrent runs per user, so each stream is its own user."""
    sent = time.perf_counter()
    first: float | None = None
    first_event: float | None = None
    events = deltas = 0
    last = ""
    error: str | None = None
    buffer = b""
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with http.stream("POST", "/chatkit", json=create(message), headers=headers) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                event = _decode(frame.removeprefix(b"data: "))
                events += 1
                if first_event is None:
                    first_event = (time.perf_counter() - sent) * 1000
                last = event.type
                if event.type == "error":
                    error = event.message
                if event.update and event.update.get("type") == "assistant_message.content_part.text_delta":
                    deltas += 1
                    if first is None:
                        first = (time.perf_counter() - sent) * 1000
    return StreamResult(first_event_ms=first_event, first_delta_ms=first, events=events, deltas=deltas, last=last, error=error)


async def measure(url: str, streams: int, message: str) -> tuple[list[StreamResult], float]:
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await one_stream(http, "warm-up", message)  # first agent run, imports, a connection
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(http, f"bench-{n}", message) for n in range(streams)))
        return list(results), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--message", default="hello", help="what each new thread starts with")
    parser.add_argument("--timeout", type=float, default=120, help="give up after this many seconds")
    args = parser.parse_args()
    with running_server(OFFLINE_TOKEN_DELAY_MS="0") as (url, _):
        results, wall_s = asyncio.run(asyncio.wait_for(measure(url, args.streams, args.message), args.timeout))
    firsts = [r.first_delta_ms for r in results if r.first_delta_ms is not None]
    opened = [r.first_event_ms for r in results if r.first_event_ms is not None]
    events = sum(r.events for r in results)
    unfinished = sum(1 for r in results if r.last != "thread.item.done")
    print(f"{args.streams} concurrent ChatKit threads.create streams ({args.message!r}, offline model, no delay)")
    print(f"  time to first text delta: p50 {percentile(firsts, 50):.1f} ms, p99 {percentile(firsts, 99):.1f} ms, "
          f"max {max(firsts, default=float('nan')):.1f} ms")
    print(f"  (time to the first event, thread.created: p50 {percentile(opened, 50):.1f} ms, "
          f"p99 {percentile(opened, 99):.1f} ms)")
    print(f"  events: {events} in {wall_s:.2f} s = {events / wall_s:,.0f} events/s "
          f"({sum(r.deltas for r in results)} text deltas, {events // max(len(results), 1)} events per stream)")
    if unfinished or len(firsts) != len(results):
        errors = sorted({r.error for r in results if r.error})
        print(f"  WARNING: {unfinished} stream(s) did not end with the reply's thread.item.done, "
              f"{len(results) - len(firsts)} had no text; errors: {errors}")


if __name__ == "__main__":
    main()
