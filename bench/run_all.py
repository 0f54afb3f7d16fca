"""The whole benchmark: floors, hot stream, replay, paced load, idle connections, cancel
latency, persistence and the provider path, written to ``bench/RESULTS.md``, ``bench/results.json`` and
``bench/results.png``.

    .venv/bin/pip install -e '.[bench]'          # matplotlib, for the plot
    .venv/bin/python -m bench.run_all [--quick] [--baseline bench/results-before.json]   # ~6 min; --quick ~2

Loopback only. It starts every server itself (``chat-server serve`` on 127.0.0.1, offline
model, a temporary SQLite database, or a scratch PostgreSQL database it creates and drops on
``--postgres``), prints progress, and stops by itself: every phase has a time limit and the
whole run stops at ``--max-minutes``. ``--quick`` runs a smaller set (a few minutes).
Figures measured on a shared 2-core machine move by 10-20% between runs; the floors are
measured in the same run so that ratios hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from bench import cancel_latency, provider_path
from bench.client import SSESession, Stream, sse_chat, sse_get, sse_open, ws_chat, ws_connect
from bench.procstat import cpu_seconds, raise_fd_limit, rss_bytes
from bench.server import percentile, running_server, token
from bench.workload import SHORT_MESSAGE, long_message

HERE = Path(__file__).parent
PACED_DELAY_MS = 20  # 50 text events per second per reply
_T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {text}", flush=True)


class Plan:
    def __init__(self, quick: bool):
        self.quick = quick
        self.floor_runs = 20 if quick else 60
        self.hot_words = 500
        self.hot_runs = 20 if quick else 60  # CPU comes in 10 ms ticks: enough of them
        self.replay_words = 2000
        self.replays = 40 if quick else 120  # enough CPU ticks (10 ms each) to read µs per event
        self.ttft_runs = 20 if quick else 50
        self.paced_ns = [100, 250] if quick else [100, 250, 500, 1000]
        self.provider_rounds = 3 if quick else 6  # bench.provider_path: each 10 streams × 3 replies
        self.provider_paced_ns = [] if quick else [50, 100, 150, 200, 250, 300]
        self.paced_words = 150 if quick else 300  # 3 s or 6 s at 50 events/s
        self.workers_2_ns = [250] if quick else [250, 500, 1000]
        self.persistence_ns = [100] if quick else [100, 500]
        self.idle_levels = [1000] if quick else [1000, 5000, 10000]
        self.cancels = 50 if quick else 200


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _users(prefix: str, n: int) -> list[tuple[str, str]]:
    return [(f"{prefix}-{i}", token(f"{prefix}-{i}")) for i in range(n)]


class Measured:
    """Server CPU over a block, and the bench's own CPU (the load client)."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self) -> Measured:
        self.cpu0, self.client0, self.wall0 = cpu_seconds(self.pid), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self.wall0
        self.cpu_s = cpu_seconds(self.pid) - self.cpu0
        self.client_cpu_s = time.process_time() - self.client0


# -- floors --------------------------------------------------------------------------------


def floors(plan: Plan) -> dict[str, Any]:
    say("SDK floor: Runner.run_streamed on the offline model, no server")
    sdk = json.loads(subprocess.run(
        [sys.executable, "-m", "bench.sdk_floor", "--json", "--runs", str(plan.floor_runs),
         "--words", str(plan.hot_words)], check=True, capture_output=True, text=True, timeout=300,
    ).stdout)
    say(f"  {sdk['cpu_us_per_event']:.1f} µs CPU per text event, {sdk['events_per_s']:,.0f} events/s")
    say("transport floor: bare ASGI app on uvicorn writing pre-encoded SSE frames")
    transport = json.loads(subprocess.run(
        [sys.executable, "-m", "bench.transport_floor", "--json", "--events", str(plan.replay_words + 20),
         "--requests", str(plan.replays)], check=True, capture_output=True, text=True, timeout=300,
    ).stdout)
    say(f"  {transport['cpu_us_per_event']:.2f} µs server CPU per event, {transport['events_per_s']:,.0f} events/s")
    n = max(x for x in plan.paced_ns if x <= 500)
    say(f"paced SDK floor: {n} replies at once in a bare script, 50 text events/s each")
    paced = json.loads(subprocess.run(
        [sys.executable, "-m", "bench.sdk_floor", "--json", "--paced", str(n), "--words", str(plan.paced_words)],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout)
    paced["n"] = n
    say(f"  {paced['cpu_us_per_event']:.1f} µs CPU per text event, CPU {paced['cpu_pct']:.0f}%, "
        f"{paced['achieved_pct_of_ideal']:.1f}% of ideal, gap p99 {paced['gap_p99_ms']:.1f} ms")
    say(f"paced transport floor: {n} streams of pre-encoded SSE frames on a bare ASGI app, 50 frames/s each")
    transport_paced = json.loads(subprocess.run(
        [sys.executable, "-m", "bench.transport_floor", "--json", "--paced", str(n), "--events", str(plan.paced_words)],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout)
    say(f"  {transport_paced['cpu_us_per_event']:.1f} µs server CPU per event, CPU {transport_paced['cpu_pct']:.0f}%, "
        f"gap p99 {transport_paced['gap_p99_ms']:.1f} ms")
    return {"sdk": sdk, "transport": transport, "sdk_paced": paced, "transport_paced": transport_paced}


def paced_floor_cores(floors: dict[str, Any]) -> float:
    """Cores that N paced replies need at the floors' CPU per event (SDK + transport alone)."""
    n = floors["sdk_paced"]["n"]
    per_event_s = (floors["sdk_paced"]["cpu_us_per_event"] + floors["transport_paced"]["cpu_us_per_event"]) / 1e6
    return n * 1000 / PACED_DELAY_MS * per_event_s


# -- hot stream, replay, idle TTFT -----------------------------------------------------------


async def hot_stream(url: str, pid: int, transport: str, plan: Plan) -> dict[str, Any]:
    """One long reply after another: ``sse`` and ``ws`` each on one connection (as a browser's
    pool and a WebSocket app send them), ``sse-new`` on a new TCP connection per reply."""
    user, tok = "hot", token("hot")
    message = long_message(plan.hot_words)
    socket = await ws_connect(url, user, tok) if transport == "ws" else None
    session = SSESession(url, user, tok) if transport == "sse" else None

    async def one() -> Stream:
        if session is not None:
            return await session.chat(message)
        if socket is None:
            return await sse_chat(url, user, tok, message)
        stream = socket.chat(message)
        await stream.finished
        return stream

    try:
        # A fresh server's first replies cost more (first calls, caches): the first transport
        # measured after 2 read ≈ 7% more than the same one measured later.
        for _ in range(10):
            await one()
        streams = []
        with Measured(pid) as m:
            for _ in range(plan.hot_runs):
                streams.append(await asyncio.wait_for(one(), 60))
    finally:
        for connection in (socket, session):
            if connection is not None:
                connection.close()
    texts = sum(s.texts for s in streams)
    events = sum(s.events for s in streams)
    errors = [s.error or s.status for s in streams if s.error or s.status != "completed"]
    return {
        "transport": transport, "runs": plan.hot_runs, "text_events": texts, "events": events,
        "wall_s": m.wall_s, "server_cpu_s": m.cpu_s, "client_cpu_s": m.client_cpu_s,
        "events_per_s": texts / m.wall_s, "cpu_us_per_event": m.cpu_s / texts * 1e6, "errors": errors[:5],
        "error_count": len(errors),
    }


async def replay(url: str, pid: int, plan: Plan) -> dict[str, Any]:
    user, tok = "replay", token("replay")
    run = await sse_chat(url, user, tok, long_message(plan.replay_words))
    assert run.run_id and run.status == "completed", (run.error, run.status)
    await asyncio.sleep(0.5)  # the run is saved before done is sent; let the loop settle
    path = f"/api/{user}/runs/{run.run_id}/events?after=0"
    for _ in range(3):
        await sse_get(url, path, tok)
    streams = []
    with Measured(pid) as m:
        for _ in range(plan.replays):
            streams.append(await asyncio.wait_for(sse_get(url, path, tok), 60))
    events = sum(s.events for s in streams)
    bad = [s.error for s in streams if s.error or s.events != run.events]
    return {
        "requests": plan.replays, "events_per_request": run.events, "events": events, "wall_s": m.wall_s,
        "server_cpu_s": m.cpu_s, "events_per_s": events / m.wall_s, "cpu_us_per_event": m.cpu_s / events * 1e6,
        "error_count": len(bad), "errors": bad[:5],
    }


async def idle_ttft(url: str, plan: Plan) -> dict[str, Any]:
    """One conversation at a time on an otherwise idle server."""
    result = {}
    for name, message in (("short", SHORT_MESSAGE), ("long", long_message(plan.hot_words))):
        firsts, starts = [], []
        for n, (user, tok) in enumerate(_users(f"ttft-{name}", plan.ttft_runs + 3)):
            stream = await asyncio.wait_for(sse_chat(url, user, tok, message), 60)
            if n >= 3 and stream.ttft_ms is not None and stream.first_event_at is not None:
                firsts.append(stream.ttft_ms)
                starts.append((stream.first_event_at - stream.sent_at) * 1000)
        result[name] = {"runs": len(firsts), "ttft_p50_ms": percentile(firsts, 50),
                        "ttft_p99_ms": percentile(firsts, 99), "start_p50_ms": percentile(starts, 50)}
    return result


# -- paced load ------------------------------------------------------------------------------


async def paced(url: str, pid: int, transport: str, n: int, plan: Plan, ramp_s: float = 1.0) -> dict[str, Any]:
    """``n`` conversations started within ``ramp_s``, each a long reply at 50 text events/s."""
    users = _users(f"p{n}{transport}", n)
    message = long_message(plan.paced_words)
    chat = ws_chat if transport == "ws" else sse_chat
    limit = 60 + plan.paced_words * PACED_DELAY_MS / 1000 * 4

    async def one(i: int, user: str, tok: str) -> Stream:
        await asyncio.sleep(i * ramp_s / n)
        return await chat(url, user, tok, message)

    with Measured(pid) as m:
        tasks = [asyncio.ensure_future(one(i, u, t)) for i, (u, t) in enumerate(users)]
        done, pending = await asyncio.wait(tasks, timeout=limit)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    streams = [t.result() for t in done if not t.exception()]
    errors = [s.error or f"status {s.status}" for s in streams if s.error or s.status != "completed"]
    errors += ["timed out"] * len(pending) + [repr(t.exception()) for t in done if t.exception()]
    gaps = sorted(g * 1000 for s in streams for g in s.gaps)
    ttfts = [s.ttft_ms for s in streams if s.ttft_ms is not None]
    rates = [r for s in streams if (r := s.text_rate) is not None]
    texts = sum(s.texts for s in streams)
    ideal_rate = 1000 / PACED_DELAY_MS
    # Starts that queue spread the replies out: how many were streaming at the same moment.
    edges = sorted([(s.first_text_at, 1) for s in streams if s.first_text_at]
                   + [(s.last_text_at, -1) for s in streams if s.first_text_at])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return {
        "transport": transport, "n": n, "peak_streaming": peak, "text_events": texts, "wall_s": m.wall_s,
        "ideal_events_per_s": n * ideal_rate, "achieved_events_per_s": sum(rates),
        "achieved_pct_of_ideal": 100 * _mean(rates) / ideal_rate,
        "ttft_min_ms": min(ttfts, default=float("nan")), "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p99_ms": percentile(ttfts, 99),
        "gap_p50_ms": percentile(gaps, 50), "gap_p99_ms": percentile(gaps, 99), "gap_max_ms": max(gaps, default=0),
        "server_cpu_pct": 100 * m.cpu_s / m.wall_s, "server_cpu_us_per_event": m.cpu_s / max(texts, 1) * 1e6,
        "client_cpu_pct": 100 * m.client_cpu_s / m.wall_s, "error_count": len(errors), "errors": errors[:5],
    }


async def paced_series(url: str, pid: int, ns: list[int], transports: list[str], plan: Plan, label: dict,
                       pg_url: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for n in ns:
        for transport in transports:
            commits = await _pg_commits(pg_url) if pg_url else None
            row = {**label, **await paced(url, pid, transport, n, plan)}
            if pg_url:
                await asyncio.sleep(1.5)  # backends report their statistics at most once a second
                row["pg_transactions"] = await _pg_commits(pg_url) - commits
                row["pg_transactions_per_text_event"] = row["pg_transactions"] / max(row["text_events"], 1)
            rows.append(row)
            say(f"  {label.get('name', '')} {transport} N={n}: {row['peak_streaming']} streaming at once, "
                f"{row['achieved_pct_of_ideal']:.1f}% of ideal, "
                f"TTFT min/p50/p99 {row['ttft_min_ms']:.0f}/{row['ttft_p50_ms']:.1f}/{row['ttft_p99_ms']:.1f} ms, "
                f"gap p50/p99 {row['gap_p50_ms']:.1f}/{row['gap_p99_ms']:.1f} ms, "
                f"server CPU {row['server_cpu_pct']:.0f}% ({row['server_cpu_us_per_event']:.0f} µs/event), "
                f"client CPU {row['client_cpu_pct']:.0f}%, "
                f"errors {row['error_count']}")
            await asyncio.sleep(1)
    return rows


# -- idle connections --------------------------------------------------------------------------


async def idle_connections(url: str, pid: int, levels: list[int]) -> list[dict[str, Any]]:
    """Open SSE streams that only receive pings: readers (resume) of replies that wait on a
    silent model, about 1,000 readers per reply."""
    runs = []
    for user, tok in _users("idle", math.ceil(max(levels) / 1000)):
        stream, transport = await sse_open(url, f"/api/{user}/chat/stream", tok,
                                           {"message": SHORT_MESSAGE, "on_disconnect": "continue"})
        for _ in range(500):
            if stream.run_id or stream.error:
                break
            await asyncio.sleep(0.01)
        assert stream.run_id, stream.error
        runs.append((user, tok, stream.run_id, transport))
    readers: list[tuple[Stream, asyncio.Transport | None]] = []
    gate = asyncio.Semaphore(200)

    async def open_reader(k: int) -> None:
        user, tok, run_id, _ = runs[k % len(runs)]
        async with gate:
            stream, transport = await sse_open(url, f"/api/{user}/runs/{run_id}/events?after=0", tok)
            readers.append((stream, transport))
            for _ in range(1000):
                if stream.events or stream.error:
                    break
                await asyncio.sleep(0.01)

    rows = []
    try:
        await asyncio.gather(*(open_reader(k) for k in range(200)))  # warm up, then close them
        for stream, transport in readers:
            if transport:
                transport.close()
        readers.clear()
        await asyncio.sleep(2)
        base = rss_bytes(pid)
        for level in levels:
            await asyncio.wait_for(asyncio.gather(*(open_reader(k) for k in range(len(readers), level))), 300)
            await asyncio.sleep(6)  # one ping interval: every stream has been pinged at least once
            with Measured(pid) as m:
                await asyncio.sleep(5)
            rss = rss_bytes(pid)
            failed = sum(1 for s, _ in readers if s.error)
            rows.append({
                "streams": level, "open": len(readers) - failed, "failed": failed, "rss_base_mib": base / 2**20,
                "rss_mib": rss / 2**20, "rss_per_stream_kib": (rss - base) / level / 1024,
                "server_cpu_pct_idle": 100 * m.cpu_s / m.wall_s,
            })
            say(f"  {level} open streams: {rows[-1]['rss_per_stream_kib']:.1f} KiB RSS each, "
                f"{failed} failed, server CPU while idle {rows[-1]['server_cpu_pct_idle']:.0f}%")
    finally:
        for _, transport in readers:
            if transport:
                transport.close()
        for *_, transport in runs:
            if transport:
                transport.close()
    return rows


# -- PostgreSQL scratch database --------------------------------------------------------------


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    name = f"chat_bench_{os.getpid()}_{int(time.time())}"

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _reachable(url: str) -> bool:
    async def probe() -> None:
        connection = await asyncpg.connect(url, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
        return True
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


async def _pg_commits(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ) - 1  # this query's own transaction
    finally:
        await connection.close()


# -- report -----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def hot_rows(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = {row["transport"]: row for row in r.get("hot", [])}
    if "sse-new" not in rows and "sse" in rows:
        # Measured before SSE kept its connection: that "sse" row opened one per reply.
        rows = {"sse-new": rows["sse"], **({"ws": rows["ws"]} if "ws" in rows else {})}
    return rows


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    sdk = r["floors"]["sdk"]
    out: list[tuple[str, str, bool | None]] = []
    for name, hot in hot_rows(r).items():
        # Judged on kept-alive connections, as browsers and WebSocket apps use them.
        judged = None if name == "sse-new" else True
        ratio = hot["cpu_us_per_event"] / sdk["cpu_us_per_event"]
        out.append((f"hot {name}: server CPU/event ≤ 1.3× SDK floor", f"{ratio:.2f}×", judged and ratio <= 1.3))
        ratio = hot["events_per_s"] / sdk["events_per_s"]
        out.append((f"hot {name}: events/s ≥ 0.75× SDK floor", f"{ratio:.2f}×", judged and ratio >= 0.75))
    if "replay" in r:
        ratio = r["replay"]["events_per_s"] / r["floors"]["transport"]["events_per_s"]
        out.append(("replay events/s ≥ 0.5× transport floor", f"{ratio:.2f}×", ratio >= 0.5))
    for row in r.get("paced", []):
        if (row["workers"], row["n"]) in ((1, 500), (2, 1000)):
            ok = row["gap_p99_ms"] < 50 and row["achieved_pct_of_ideal"] >= 95 and row["error_count"] == 0
            out.append((f"paced {row['name']} {row['transport']} N={row['n']}: gap p99 < 50 ms, ≥ 95% of ideal",
                        f"{row['gap_p99_ms']:.1f} ms, {row['achieved_pct_of_ideal']:.1f}%", ok))
    if "transport_paced" in r["floors"]:
        out.append((f"  (not a target: the floors alone for {r['floors']['sdk_paced']['n']} paced replies, SDK + "
                    "transport)", f"{paced_floor_cores(r['floors']):.2f} cores", None))
    errors = sum(row["error_count"] for row in r.get("paced", []))
    out.append(("paced: no errors at any N", f"{errors} errors", errors == 0))
    if "ttft_idle" in r:
        v = r["ttft_idle"]["short"]["ttft_p50_ms"]
        out.append(("TTFT p50 < 10 ms on an idle server (direct reply)", f"{v:.1f} ms", v < 10))
        v = r["ttft_idle"]["long"]["ttft_p50_ms"]
        out.append(("  (not a target: the long reply, whose first text follows a tool call)", f"{v:.1f} ms", None))
    for row in r.get("paced", []):
        if row["n"] == 100 and row["workers"] == 1:
            out.append((f"TTFT p99 < 250 ms, 100 conversations in one second ({row['name']}, {row['transport']})",
                        f"{row['ttft_p99_ms']:.1f} ms", row["ttft_p99_ms"] < 250))
    for row in r.get("idle", []):
        if row["streams"] == 10000:
            out.append(("idle: 10,000 SSE streams at ≤ 32 KiB RSS each", f"{row['rss_per_stream_kib']:.1f} KiB",
                        row["rss_per_stream_kib"] <= 32 and row["failed"] == 0))
    if "cancel" in r:
        for kind, values in r["cancel"].items():
            out.append((f"cancel p99 < 50 ms ({kind})", f"{values['p99_ms']:.1f} ms", values["p99_ms"] < 50))
    for api in PROVIDER_APIS:
        if api in r.get("provider", {}):
            ratio = r["provider"][api]["server_fast_over_sdk_stock"]
            out.append((f"provider path ({api}): server CPU per delta ≤ 1/3 of the SDK alone, stock client",
                        f"{ratio:.2f}×", ratio <= 1 / 3))
    return out


PROVIDER_APIS = ("chat_completions", "responses")
PROVIDER_PATHS = (("sdk_stock", "SDK alone, stock `openai` client"), ("sdk_fast", "SDK alone, fast client"),
                  ("server_stock", "server, `PROVIDER_FAST_PATH=0`"), ("server_fast", "server, fast path (default)"))


def write_report(r: dict[str, Any], baseline: dict[str, Any] | None, path: Path) -> None:
    b = baseline or {}
    has_b = bool(baseline)

    def both(get, digits: int = 1) -> str:
        now = _fmt(_try(get, r), digits)
        return f"{_fmt(_try(get, b), digits)} → {now}" if has_b else now

    lines = [
        "# Benchmark results", "",
        f"Command: `{r['meta']['command']}`  ",
        f"Machine: {r['meta']['machine']}; load client on the same machine; {r['meta']['when']}.  ",
        "Offline model; server `chat-server serve` (uvicorn, uvloop, httptools) on 127.0.0.1; "
        "SQLite unless the row says PostgreSQL. Workload: a long reply (`complete w0 … wN`: one tool call, "
        "then about N + 17 text events).",
    ]
    if has_b:
        lines += ["", f"Figures read **before → after** (before: `{b['meta'].get('label', 'baseline')}`, "
                      f"{b['meta']['when']})."]
    lines += ["", "## Floors, hot stream, replay", "",
              "| measure | events/s | CPU µs per event | ratio to its floor |", "|---|---:|---:|---:|"]
    lines.append(f"| SDK floor (Runner.run_streamed, no server) | {both(lambda x: x['floors']['sdk']['events_per_s'], 0)} "
                 f"| {both(lambda x: x['floors']['sdk']['cpu_us_per_event'])} | 1 |")
    lines.append(f"| transport floor (bare ASGI, pre-encoded SSE) | "
                 f"{both(lambda x: x['floors']['transport']['events_per_s'], 0)} | "
                 f"{both(lambda x: x['floors']['transport']['cpu_us_per_event'], 2)} | 1 |")
    for t, label in (("sse", "SSE, one connection"), ("ws", "WebSocket, one connection"),
                     ("sse-new", "SSE, a new TCP connection per reply")):
        def hot(x, t=t):
            return hot_rows(x)[t]
        lines.append(
            f"| hot stream {label} (delay 0, one reply at a time) | {both(lambda x: hot(x)['events_per_s'], 0)} | "
            f"{both(lambda x: hot(x)['cpu_us_per_event'])} | events/s "
            f"{both(lambda x: hot(x)['events_per_s'] / x['floors']['sdk']['events_per_s'], 2)}×, CPU "
            f"{both(lambda x: hot(x)['cpu_us_per_event'] / x['floors']['sdk']['cpu_us_per_event'], 2)}× |")
    lines.append(f"| replay (resume a finished run, {_fmt(_try(lambda x: x['replay']['events_per_request'], r))} events) "
                 f"| {both(lambda x: x['replay']['events_per_s'], 0)} | {both(lambda x: x['replay']['cpu_us_per_event'], 2)} "
                 f"| events/s {both(lambda x: x['replay']['events_per_s'] / x['floors']['transport']['events_per_s'], 2)}× |")
    lines += ["", "CPU per event: server process CPU (all threads) divided by text events delivered "
                  "(the SDK floor: the script's CPU per text event).", "",
              "## Time to first text on an idle server (one conversation at a time, SSE)", "",
              "| reply | TTFT p50 ms | TTFT p99 ms | first event (start) p50 ms |", "|---|---:|---:|---:|"]
    for kind, label in (("short", "direct (\"hello\", no tool)"), ("long", "long (a tool call first)")):
        lines.append(f"| {label} | {both(lambda x: x['ttft_idle'][kind]['ttft_p50_ms'])} | "
                     f"{both(lambda x: x['ttft_idle'][kind]['ttft_p99_ms'])} | "
                     f"{both(lambda x: x['ttft_idle'][kind]['start_p50_ms'])} |")
    lines += ["", "## Paced load (each reply 50 text events/s; conversations start within one second)", "",
              "| server | transport | N | peak streaming | ideal ev/s | achieved % of ideal | TTFT p50 ms | TTFT p99 ms "
              "| gap p50 ms | gap p99 ms | server CPU % | server µs/event | client CPU % | errors |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if "sdk_paced" in r["floors"]:
        sp = r["floors"]["sdk_paced"]
        lines.append(
            f"| SDK alone, no server (bare script) | – | {sp['n']:,} | – | {sp['n'] * 50:,} | "
            f"{both(lambda x: x['floors']['sdk_paced']['achieved_pct_of_ideal'])} | – | – | "
            f"{both(lambda x: x['floors']['sdk_paced']['gap_p50_ms'])} | "
            f"{both(lambda x: x['floors']['sdk_paced']['gap_p99_ms'])} | "
            f"{both(lambda x: x['floors']['sdk_paced']['cpu_pct'], 0)} | "
            f"{both(lambda x: x['floors']['sdk_paced']['cpu_us_per_event'])} | – | – |")
    if "transport_paced" in r["floors"]:
        tp = r["floors"]["transport_paced"]
        lines.append(
            f"| bare ASGI app, pre-encoded frames (no SDK) | SSE | {tp['n']:,} | – | {tp['n'] * 50:,} | "
            f"{tp['achieved_pct_of_ideal']:.1f} | – | – | {tp['gap_p50_ms']:.1f} | {tp['gap_p99_ms']:.1f} | "
            f"{tp['cpu_pct']:.0f} | {tp['cpu_us_per_event']:.1f} | – | – |")
    for row in r.get("paced", []):
        def match(x, row=row):
            return next(p for p in x["paced"] if (p["name"], p["transport"], p["n"]) ==
                        (row["name"], row["transport"], row["n"]))
        lines.append(
            f"| {row['name']} | {row['transport'].upper()} | {row['n']:,} | {both(lambda x: match(x)['peak_streaming'], 0)} "
            f"| {row['ideal_events_per_s']:,.0f} | "
            f"{both(lambda x: match(x)['achieved_pct_of_ideal'])} | {both(lambda x: match(x)['ttft_p50_ms'])} | "
            f"{both(lambda x: match(x)['ttft_p99_ms'])} | {both(lambda x: match(x)['gap_p50_ms'])} | "
            f"{both(lambda x: match(x)['gap_p99_ms'])} | {both(lambda x: match(x)['server_cpu_pct'], 0)} | "
            f"{both(lambda x: match(x)['server_cpu_us_per_event'])} | {both(lambda x: match(x)['client_cpu_pct'], 0)} | "
            f"{both(lambda x: match(x)['error_count'], 0)} |")
    if "transport_paced" in r["floors"]:
        f = r["floors"]
        lines += ["", f"The paced floor: the SDK alone ({f['sdk_paced']['cpu_us_per_event']:.1f} µs per text event) plus "
                      f"a bare ASGI app writing the frames ({f['transport_paced']['cpu_us_per_event']:.1f} µs per event) "
                      f"is {paced_floor_cores(f):.2f} cores for {f['sdk_paced']['n']:,} replies at 50 events/s, before "
                      "any server work (HTTP, authentication, run log, persistence): what one worker has is one core."]
    pg_rows = [row for row in r.get("paced", []) if "pg_transactions_per_text_event" in row]
    if pg_rows:
        lines += ["", "Database writes on PostgreSQL (committed transactions per text event, all queries "
                      "included; a per-token write would be ≥ 1): " + ", ".join(
                          f"{row['name']} {row['transport'].upper()} N={row['n']}: "
                          f"{row['pg_transactions_per_text_event']:.4f}" for row in pg_rows) + "."]
    lines += ["", "## Idle connections (open SSE streams, pings only, every 5 s)", "",
              "| streams | open | server RSS MiB | RSS per stream KiB | server CPU % while idle |",
              "|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(r.get("idle", [])):
        def idle(x, i=i):
            return x["idle"][i]
        lines.append(f"| {row['streams']:,} | {row['open']:,} | {both(lambda x: idle(x)['rss_mib'])} | "
                     f"{both(lambda x: idle(x)['rss_per_stream_kib'])} | {both(lambda x: idle(x)['server_cpu_pct_idle'])} |")
    lines += ["", "Readers of replies whose model is silent (`GET /runs/{id}/events`, about 1,000 readers a reply); "
                  "RSS per stream = (RSS with the streams open − RSS before) / streams.", "",
              "## Cancel latency (Stop sent → `done{cancelled}` received, WebSocket client)", "",
              "| via | cancels | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for kind, values in r.get("cancel", {}).items():
        lines.append(f"| {kind} | {values['count']} | {both(lambda x: x['cancel'][kind]['p50_ms'], 2)} | "
                     f"{both(lambda x: x['cancel'][kind]['p99_ms'], 2)} | {both(lambda x: x['cancel'][kind]['max_ms'], 2)} |")
    if "provider" in r:
        lines += ["", "## The provider path (a model behind an OpenAI-compatible server: `bench.provider_path`)", "",
                  "CPU µs per text delta: 10 streams × 3 replies of 300 deltas a round, the paths in turn round "
                  "by round, the median round.", "",
                  "| path | Chat Completions | Responses |", "|---|---:|---:|"]
        for key, label in PROVIDER_PATHS:
            lines.append(f"| {label} | " + " | ".join(
                both(lambda x, api=api, key=key: x["provider"][api][key]["cpu_us_per_delta"]) for api in PROVIDER_APIS) + " |")
        lines.append("| server fast ÷ SDK alone stock | " + " | ".join(
            both(lambda x, api=api: x["provider"][api]["server_fast_over_sdk_stock"], 2) for api in PROVIDER_APIS) + " |")
        for label in ("fast", "stock"):
            if (paced := r["provider"].get(f"paced_{label}")) is not None:
                series = ", ".join(f"N={m['n']}: {m['achieved_pct_of_ideal']:.1f}% / gap p99 {m['gap_p99_ms']:.1f} ms"
                                   for m in paced["series"])
                lines += ["", f"Paced capacity, {label} path (Chat Completions, 50 deltas/s a reply, one worker): "
                              f"**N = {paced['capacity']}** ({series})."]
    lines += ["", "## Targets", "", "| target | figure | met |", "|---|---|---|"]
    for name, figure, ok in targets(r):
        lines.append(f"| {name} | {figure} | {'–' if ok is None else 'yes' if ok else 'no'} |")
    lines += ["", "Where the time goes, what was changed and why some targets are out of reach: "
                  "[README.md](README.md)."]
    if r.get("notes"):
        lines += ["", "## Notes", "", *r["notes"]]
    path.write_text("\n".join(lines) + "\n")


def _try(get, data: dict) -> Any:
    try:
        return get(data)
    except (KeyError, IndexError, StopIteration, TypeError, ZeroDivisionError):
        return None


def plot(r: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    fig, (ttft_ax, gap_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    series: dict[str, list[dict]] = {}
    for row in r.get("paced", []):
        series.setdefault(f"{row['name']}, {row['transport'].upper()}", []).append(row)
    for label, rows in series.items():
        rows.sort(key=lambda x: x["n"])
        ns = [x["n"] for x in rows]
        line, = ttft_ax.plot(ns, [x["ttft_p50_ms"] for x in rows], marker="o", label=f"{label} p50")
        ttft_ax.plot(ns, [x["ttft_p99_ms"] for x in rows], marker="^", ls="--", color=line.get_color(),
                     label=f"{label} p99")
        line, = gap_ax.plot(ns, [x["gap_p50_ms"] for x in rows], marker="o", label=f"{label} p50")
        gap_ax.plot(ns, [x["gap_p99_ms"] for x in rows], marker="^", ls="--", color=line.get_color(),
                    label=f"{label} p99")
    for ax, title in ((ttft_ax, "time to first text (ms)"), (gap_ax, "gap between text events (ms)")):
        ax.set_xlabel("concurrent conversations (each 50 text events/s)")
        ax.set_title(title)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    gap_ax.axhline(50, color="grey", lw=0.8)
    gap_ax.axhline(PACED_DELAY_MS, color="grey", lw=0.8, ls=":")
    ttft_ax.legend(fontsize=7)
    fig.suptitle("Paced load: TTFT and inter-event gap against load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main -------------------------------------------------------------------------------------


def run(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": {
        "command": " ".join(["python -m bench.run_all", *sys.argv[1:]]), "quick": plan.quick,
        "label": args.label, "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
                   f"load average at start {os.getloadavg()[0]:.1f}",
    }, "notes": []}
    results["floors"] = floors(plan)
    log = str(HERE / "server.log") if args.server_log else None

    say("hot stream, replay, idle TTFT (server: 1 worker, SQLite, no delay)")
    with running_server(OFFLINE_TOKEN_DELAY_MS="0", MAX_ACTIVE_RUNS_PER_USER="1000", log_path=log) as (url, proc):
        results["hot"] = []
        for transport in ("sse", "ws", "sse-new"):
            row = asyncio.run(hot_stream(url, proc.pid, transport, plan))
            results["hot"].append(row)
            say(f"  hot {transport}: {row['events_per_s']:,.0f} events/s, {row['cpu_us_per_event']:.1f} µs server "
                f"CPU per text event, errors {row['error_count']}")
        results["replay"] = asyncio.run(replay(url, proc.pid, plan))
        say(f"  replay: {results['replay']['events_per_s']:,.0f} events/s, "
            f"{results['replay']['cpu_us_per_event']:.2f} µs server CPU per event")
        results["ttft_idle"] = asyncio.run(idle_ttft(url, plan))
        say(f"  idle TTFT p50: {results['ttft_idle']['short']['ttft_p50_ms']:.1f} ms direct, "
            f"{results['ttft_idle']['long']['ttft_p50_ms']:.1f} ms after a tool call")

    say(f"paced load (server: 1 worker, SQLite, {PACED_DELAY_MS} ms between text pieces)")
    paced_env = {"OFFLINE_TOKEN_DELAY_MS": str(PACED_DELAY_MS), "MAX_ACTIVE_RUNS_PER_USER": "1000"}
    with running_server(**paced_env, log_path=log) as (url, proc):
        results["paced"] = asyncio.run(paced_series(url, proc.pid, plan.paced_ns, ["sse", "ws"], plan,
                                                    {"name": "1 worker, SQLite", "workers": 1, "db": "sqlite"}))
        say(f"cancel latency: {plan.cancels} cancels by WebSocket frame, {plan.cancels} by HTTP")
        cancels = asyncio.run(asyncio.wait_for(cancel_latency.measure(url, plan.cancels), 600))
        results["cancel"] = {kind: {"count": len(v), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99),
                                    "max_ms": max(v)} for kind, v in cancels.items()}
        say("  " + ", ".join(f"{k}: p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms"
                             for k, v in results["cancel"].items()))

    say("provider path: a fake OpenAI-compatible provider, the SDK alone and the server, stock and fast")
    results["provider"] = provider_path.run(argparse.Namespace(
        api="both", deltas=300, concurrency=10, replies=3, rounds=plan.provider_rounds,
        paced=",".join(map(str, plan.provider_paced_ns)), paced_api="chat_completions", paced_deltas=300,
    ))

    if args.postgres and not _reachable(args.postgres):
        results["notes"].append(f"- PostgreSQL at `{args.postgres}` was not reachable: no PostgreSQL or "
                                "two-worker figures.")
        say("PostgreSQL is not reachable: skipping the PostgreSQL and two-worker runs")
    elif args.postgres:
        for workers, ns, transports, name in (
            (1, plan.persistence_ns, ["sse"], "1 worker, PostgreSQL"),
            (2, plan.workers_2_ns, ["sse", "ws"], "2 workers, PostgreSQL"),
        ):
            say(f"paced load (server: {name})")
            with scratch_postgres(args.postgres) as pg_url, running_server(
                workers=workers, DATABASE_URL=pg_url, **paced_env, log_path=log
            ) as (url, proc):
                results["paced"] += asyncio.run(paced_series(
                    url, proc.pid, ns, transports, plan,
                    {"name": name, "workers": workers, "db": "postgresql"}, pg_url=pg_url))
    else:
        results["notes"].append("- Run without `--postgres`: no PostgreSQL or two-worker figures.")

    say(f"idle connections: {', '.join(map(str, plan.idle_levels))} open SSE streams")
    with running_server(OFFLINE_TOKEN_DELAY_MS="600000", SSE_PING_INTERVAL_S="5", MAX_RUN_DURATION_S="900",
                        log_path=log) as (url, proc):
        results["idle"] = asyncio.run(idle_connections(url, proc.pid, plan.idle_levels))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller set that runs in a few minutes")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="an admin URL where a scratch database may be created and dropped; '' to skip "
                             "the PostgreSQL and two-worker runs (default: %(default)s)")
    parser.add_argument("--baseline", default=str(HERE / "results-before.json"),
                        help="an earlier results.json: the report shows before → after; '' for none "
                             "(default: bench/results-before.json, measured before the performance work)")
    parser.add_argument("--label", default="", help="a name for this run, kept in results.json")
    parser.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md, results.json, results.png go")
    parser.add_argument("--server-log", action="store_true", help="keep the servers' output in bench/server.log")
    parser.add_argument("--max-minutes", type=float, default=30, help="stop everything after this long")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from results.json")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text())
        baseline = json.loads(Path(args.baseline).read_text()) if args.baseline and Path(args.baseline).exists() else None
        if baseline and baseline["meta"].get("quick") != results["meta"].get("quick"):
            baseline = None
        write_report(results, baseline, args.out / "RESULTS.md")
        return
    raise_fd_limit()
    # Stopped from outside, still stop the servers (context managers) and the scratch database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = Plan(args.quick)
    # A hard stop however a phase behaves: the servers are our children and go with us.
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("--max-minutes reached")))
    signal.alarm(int(args.max_minutes * 60))
    results = run(plan, args)
    signal.alarm(0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline and Path(args.baseline).exists() else None
    if baseline and baseline["meta"].get("quick") != plan.quick:
        baseline = None  # a quick run and a full one measure different sets
    plotted = plot(results, args.out / "results.png")
    if plotted:
        results["notes"].append("- Plot: `results.png` (TTFT and gap p50/p99 against N).")
    write_report(results, baseline, args.out / "RESULTS.md")
    say(f"wrote {args.out / 'RESULTS.md'}, results.json{', results.png' if plotted else ''}")
    for name, figure, ok in targets(results):
        print(f"  {'    ' if ok is None else 'MET ' if ok else 'MISS'} {name}: {figure}")


if __name__ == "__main__":
    main()
