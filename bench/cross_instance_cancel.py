"""Cross-instance cancel latency: a reply runs on instance A, Stop is sent to instance B.

    .venv/bin/python -m bench.cross_instance_cancel --database postgresql://postgres@127.0.0.1:5432/test \\
        [--redis redis://127.0.0.1:6379/0] [--cancels 100]

Starts two servers sharing the database (and Redis, if given; otherwise the PostgreSQL
LISTEN/NOTIFY broker), then measures from the ``POST /runs/{id}/cancel`` on B to the
``done{cancelled}`` on A's WebSocket. The database is used as is: point it at a scratch one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

import httpx
import websockets

from bench.server import percentile, running_server, token


async def measure(url_a: str, url_b: str, cancels: int) -> list[float]:
    latencies = []
    ws_url = url_a.replace("http", "ws") + f"/api/bench/ws?token={token('bench')}"
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(
        base_url=url_b, headers={"Authorization": f"Bearer {token('bench')}"}
    ) as http_b:
        for n in range(cancels):
            await ws.send(json.dumps({"type": "chat", "message": "hello"}))
            start = json.loads(await ws.recv())
            while json.loads(await ws.recv())["type"] != "text":
                pass
            sent = time.perf_counter()
            response = await http_b.post(f"/api/bench/runs/{start['run_id']}/cancel")
            assert response.status_code == 202, response.text
            while (event := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "done":
                pass
            assert event["status"] == "cancelled", event
            latencies.append((time.perf_counter() - sent) * 1000)
            if (n + 1) % 25 == 0:
                print(f"  {n + 1}/{cancels}", flush=True)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--redis", default="")
    parser.add_argument("--cancels", type=int, default=100)
    args = parser.parse_args()
    env = {"DATABASE_URL": args.database, "REDIS_URL": args.redis, "OFFLINE_TOKEN_DELAY_MS": "20"}
    with contextlib.ExitStack() as stack:
        url_a, _ = stack.enter_context(running_server(**env))
        url_b, _ = stack.enter_context(running_server(**env))
        latencies = asyncio.run(measure(url_a, url_b, args.cancels))
    broker = "redis" if args.redis else "postgresql LISTEN/NOTIFY"
    print(f"\ncross-instance cancel via {broker}, {args.cancels} cancels (ms): "
          f"p50 {percentile(latencies, 50):.2f}  p99 {percentile(latencies, 99):.2f}  max {max(latencies):.2f}")


if __name__ == "__main__":
    main()
