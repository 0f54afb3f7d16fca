"""Transport floor: a bare ASGI app on the same uvicorn (uvloop, httptools) writing
pre-encoded SSE frames, one ASGI send per event, as fast as the client reads them.

    .venv/bin/python -m bench.transport_floor [--events 2000] [--requests 30] [--json]
    .venv/bin/python -m bench.transport_floor --paced 500 [--events 300] [--json]
    .venv/bin/python -m bench.transport_floor --ws [--events 2000] [--requests 30] [--json]

The frames are the bytes the chat server sends for text events. Prints events per second
and the server's CPU microseconds per event: the least any SSE server on this stack costs.

``--paced N`` opens N streams within one second instead, each sending its frames 20 ms
apart (as the paced load does): what one write per event costs when every event wakes the
loop by itself. With the SDK's paced floor it bounds how many paced replies a core can carry.

``--ws`` sends the same event bytes over a WebSocket instead (uvicorn's websockets-sansio, as
the server runs it), one frame per event as the protocol has it: the least a WebSocket reply
costs per event on this stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from bench.client import Stream, sse_get, ws_connect
from bench.procstat import cpu_seconds, raise_fd_limit
from bench.server import free_port, percentile

_RUN_ID = "00000000-0000-4000-8000-000000000000"


def frames(count: int) -> list[bytes]:
    return [
        b'data: {"type":"text","run_id":"%s","seq":%d,"content":"w%d "}\n\n' % (_RUN_ID.encode(), n + 2, n)
        for n in range(count)
    ]


_CACHE: dict[int, list[bytes]] = {}
_START = b'data: {"type":"start","run_id":"%s","seq":1}\n\n' % _RUN_ID.encode()
_DONE = b'data: {"type":"done","run_id":"%s","seq":0,"status":"completed"}\n\n' % _RUN_ID.encode()


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    query = dict(part.split("=") for part in scope["query_string"].decode().split("&") if "=" in part)
    count, delay_s = int(query.get("n", "0")), int(query.get("delay_ms", "0")) / 1000
    body = _CACHE.get(count) or _CACHE.setdefault(count, frames(count))
    loop = asyncio.get_running_loop()
    due = loop.time()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
    ]})
    await send({"type": "http.response.body", "body": _START, "more_body": True})
    for frame in body:
        if delay_s:
            due += delay_s
            await asyncio.sleep(max(0.0, due - loop.time()))
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": _DONE, "more_body": False})


async def _websocket(scope, receive, send) -> None:
    """Each text frame received asks for one reply of ``?n=`` events, sent frame by frame."""
    query = dict(part.split("=") for part in scope["query_string"].decode().split("&") if "=" in part)
    count = int(query.get("n", "0"))
    body = [frame[6:-2] for frame in (_CACHE.get(count) or _CACHE.setdefault(count, frames(count)))]
    start, done = _START[6:-2].decode(), _DONE[6:-2].decode()
    while (message := await receive())["type"] != "websocket.disconnect":
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            continue
        await send({"type": "websocket.send", "text": start})
        for frame in body:
            await send({"type": "websocket.send", "text": frame.decode()})
        await send({"type": "websocket.send", "text": done})


def _serve(port: int) -> None:
    import uvicorn

    from app.cli import uvicorn_options
    from app.settings import Settings

    uvicorn.run("bench.transport_floor:app", host="127.0.0.1", port=port, log_level="warning",
                **uvicorn_options(Settings()))


@contextlib.contextmanager
def running_floor_server() -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.transport_floor", "--serve", str(port)],
                               preexec_fn=raise_fd_limit)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{url}/?n=1", timeout=1)
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the transport floor server did not start")
            time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def measure(url: str, pid: int, events: int, requests: int) -> dict[str, float]:
    for _ in range(3):
        await sse_get(url, f"/?n={events}", "-")
    cpu, wall = cpu_seconds(pid), time.perf_counter()
    received = 0
    for _ in range(requests):
        stream = await sse_get(url, f"/?n={events}", "-")
        if stream.error:
            raise RuntimeError(stream.error)
        received += stream.texts
    cpu, wall = cpu_seconds(pid) - cpu, time.perf_counter() - wall
    return {"requests": requests, "text_events": received, "wall_s": wall, "cpu_s": cpu,
            "cpu_us_per_event": cpu / received * 1e6, "events_per_s": received / wall}


async def measure_ws(url: str, pid: int, events: int, requests: int) -> dict[str, float]:
    connection = await ws_connect(url, "floor", f"-&n={events}")  # the app reads n from the query
    try:
        for _ in range(3):
            await connection.chat("-").finished
        cpu, wall = cpu_seconds(pid), time.perf_counter()
        received = 0
        for _ in range(requests):
            stream = connection.chat("-")
            await stream.finished
            if stream.error:
                raise RuntimeError(stream.error)
            received += stream.texts
        cpu, wall = cpu_seconds(pid) - cpu, time.perf_counter() - wall
    finally:
        connection.close()
    return {"requests": requests, "text_events": received, "wall_s": wall, "cpu_s": cpu,
            "cpu_us_per_event": cpu / received * 1e6, "events_per_s": received / wall}


async def measure_paced(url: str, pid: int, n: int, events: int, delay_ms: int = 20) -> dict[str, float]:
    await sse_get(url, "/?n=10", "-")

    async def one(i: int) -> Stream:
        await asyncio.sleep(i / n)
        return await sse_get(url, f"/?n={events}&delay_ms={delay_ms}", "-")

    cpu, wall = cpu_seconds(pid), time.perf_counter()
    streams = await asyncio.gather(*(one(i) for i in range(n)))
    cpu, wall = cpu_seconds(pid) - cpu, time.perf_counter() - wall
    received = sum(s.texts for s in streams)
    rates = [r for s in streams if (r := s.text_rate) is not None]
    gaps = sorted(g * 1000 for s in streams for g in s.gaps)
    return {"n": n, "text_events": received, "wall_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall,
            "cpu_us_per_event": cpu / received * 1e6,
            "achieved_pct_of_ideal": 100 * sum(rates) / len(rates) / (1000 / delay_ms),
            "gap_p50_ms": percentile(gaps, 50), "gap_p99_ms": percentile(gaps, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="text events per request")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--paced", type=int, default=0, metavar="N", help="N streams at once, 20 ms between frames")
    parser.add_argument("--ws", action="store_true", help="over a WebSocket, one frame per event")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return
    with running_floor_server() as (url, process):
        if args.paced:
            result = asyncio.run(measure_paced(url, process.pid, args.paced, args.events))
        elif args.ws:
            result = asyncio.run(measure_ws(url, process.pid, args.events, args.requests))
        else:
            result = asyncio.run(measure(url, process.pid, args.events, args.requests))
    if args.json:
        print(json.dumps(result))
    elif args.paced:
        print(f"paced transport floor: {args.paced} streams, {result['text_events']} events: "
              f"{result['cpu_us_per_event']:.1f} µs server CPU per event, CPU {result['cpu_pct']:.0f}%, "
              f"{result['achieved_pct_of_ideal']:.1f}% of ideal, gap p99 {result['gap_p99_ms']:.1f} ms")
    else:
        print(f"{'WebSocket ' if args.ws else ''}transport floor: {result['text_events']} events: {result['cpu_us_per_event']:.1f} µs server CPU "
              f"per event, {result['events_per_s']:,.0f} events/s")


if __name__ == "__main__":
    main()
