"""Cancel latency: from sending Stop to receiving ``done{cancelled}``.

    .venv/bin/python -m bench.cancel_latency [--cancels 100]

Starts the server itself (offline model, 20 ms between text pieces, temporary SQLite
database), then for each cancel starts a reply over a WebSocket, waits for its first text,
and stops it: by a WebSocket ``cancel`` frame, or by ``POST /runs/{id}/cancel``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import websockets

from bench.server import percentile, running_server, token


async def _one(ws, http: httpx.AsyncClient | None) -> float:
    await ws.send(json.dumps({"type": "chat", "message": "hello"}))
    start = json.loads(await ws.recv())
    while json.loads(await ws.recv())["type"] != "text":
        pass
    sent = time.perf_counter()
    if http is None:
        await ws.send(json.dumps({"type": "cancel", "run_id": start["run_id"]}))
    else:
        response = await http.post(f"/api/bench/runs/{start['run_id']}/cancel")
        assert response.status_code == 202, response.text
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == "done":
            assert event["status"] == "cancelled", event
            return (time.perf_counter() - sent) * 1000


async def measure(url: str, cancels: int) -> dict[str, list[float]]:
    ws_url = url.replace("http", "ws") + f"/api/bench/ws?token={token('bench')}"
    results: dict[str, list[float]] = {"websocket": [], "http": []}
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token('bench')}"}
    ) as http:
        for kind, client in (("websocket", None), ("http", http)):
            for n in range(cancels):
                results[kind].append(await asyncio.wait_for(_one(ws, client), 30))
                if (n + 1) % 25 == 0:
                    print(f"  {kind}: {n + 1}/{cancels}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cancels", type=int, default=100)
    args = parser.parse_args()
    with running_server(OFFLINE_TOKEN_DELAY_MS="20") as (url, _):
        results = asyncio.run(measure(url, args.cancels))
    print(f"\ncancel latency over {args.cancels} cancels each (ms):")
    print(f"{'via':<10} {'p50':>8} {'p99':>8} {'max':>8}")
    for kind, values in results.items():
        print(f"{kind:<10} {percentile(values, 50):8.2f} {percentile(values, 99):8.2f} {max(values):8.2f}")


if __name__ == "__main__":
    main()
