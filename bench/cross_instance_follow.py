"""Cross-instance follower delay: a reply runs on instance A, a follower reads it on instance B.

    .venv/bin/python -m bench.cross_instance_follow --database postgresql://postgres@127.0.0.1:5432/test \\
        --redis redis://127.0.0.1:6379/0 [--replies 20] [--before-ref REF]

For each broker (Redis, then PostgreSQL LISTEN/NOTIFY) it starts two servers sharing the
database and runs ``--replies`` replies, one at a time, each started on A's WebSocket and
followed on B (``GET /runs/{id}/events``). Per event it measures B's receive time minus A's:
A's WebSocket shows an event right after its commit (durable before visible), so this is
how long after the commit B's follower got it. Events B replayed on connecting are left out.

With ``--before-ref`` (a git commit, e.g. the one before push notices) the same is measured
in the same run on that commit's code (extracted to a temporary directory): the "before".
The database is used as is: point it at a scratch one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import websockets

from bench.server import percentile, running_server, token
from bench.workload import long_message

HERE = Path(__file__).resolve().parent.parent


async def follow_one(url_a: str, url_b: str, ws: websockets.ClientConnection, http_b: httpx.AsyncClient,
                     words: int) -> list[float]:
    seen_a: dict[int, float] = {}
    seen_b: dict[int, float] = {}
    await ws.send(json.dumps({"type": "chat", "message": long_message(words)}))
    start = json.loads(await ws.recv())
    seen_a[start["seq"]] = time.perf_counter()
    opened = asyncio.get_running_loop().create_future()

    async def on_b() -> None:
        async with http_b.stream("GET", f"/api/bench/runs/{start['run_id']}/events") as response:
            assert response.status_code == 200, response.status_code
            opened.set_result(time.perf_counter())
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    seen_b[event["seq"]] = time.perf_counter()
                    if event["type"] == "done":
                        return

    follower = asyncio.create_task(on_b())
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        seen_a[event["seq"]] = time.perf_counter()
        if event["type"] == "done":
            break
    await asyncio.wait_for(follower, 30)
    live_from = opened.result()
    assert sorted(seen_b) == sorted(seen_a), "the follower missed events"
    return [(seen_b[seq] - at) * 1000 for seq, at in seen_a.items() if at > live_from]


async def measure(url_a: str, url_b: str, replies: int, words: int) -> list[float]:
    delays: list[float] = []
    ws_url = url_a.replace("http", "ws") + f"/api/bench/ws?token={token('bench')}"
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(
        base_url=url_b, headers={"Authorization": f"Bearer {token('bench')}"}, timeout=30
    ) as http_b:
        for _ in range(replies):
            delays += await follow_one(url_a, url_b, ws, http_b, words)
    return delays


def run(source: str, database: str, redis: str, replies: int, words: int) -> list[float]:
    env = {"DATABASE_URL": database, "REDIS_URL": redis, "OFFLINE_TOKEN_DELAY_MS": "20"}
    with contextlib.ExitStack() as stack:
        url_a, _ = stack.enter_context(running_server(cwd=source, **env))
        url_b, _ = stack.enter_context(running_server(cwd=source, **env))
        return asyncio.run(measure(url_a, url_b, replies, words))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--words", type=int, default=40, help="text events per reply ≈ words + 15")
    parser.add_argument("--before-ref", default="", help="a git commit to measure too, as the before")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chat-before-") as before_dir:
        sources = [("after", str(HERE))]
        if args.before_ref:
            archive = subprocess.run(["git", "-C", str(HERE), "archive", args.before_ref],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", before_dir], input=archive, check=True)
            sources.insert(0, (f"before ({args.before_ref})", before_dir))
        rows = []
        for label, source in sources:
            for broker, redis in (("redis", args.redis), ("postgresql", "")):
                delays = run(source, args.database, redis, args.replies, args.words)
                rows.append((label, broker, delays))
                print(f"  {label} {broker}: {len(delays)} events", flush=True)
    print(f"\ncross-instance follower delay, B's receive - A's receive, {args.replies} replies of "
          f"≈ {args.words + 15} events at 50 events/s (ms):")
    for label, broker, delays in rows:
        print(f"  {label:<22} {broker:<11} p50 {percentile(delays, 50):7.2f}  p99 {percentile(delays, 99):7.2f}  "
              f"max {max(delays):7.2f}  (n={len(delays)})")


if __name__ == "__main__":
    main()
