"""The provider path: a real-model reply through the ``openai`` client, stock and fast decoding.

    .venv/bin/python -m bench.provider_path [--api both|chat_completions|responses|none] [--deltas 300]
        [--concurrency 10] [--replies 3] [--rounds 6] [--paced 25,50,100,150,200,300] [--before-ref REF] [--json]

A local fake provider (``bench.fake_provider``: the tests' fake OpenAI server, a process of its
own) streams every request a text reply of ``--deltas`` pieces. For each wire API, in one run:

- **SDK alone**: ``Runner.run_streamed`` with the SDK's own model class, on the stock ``openai``
  client and on the fast one, no server (in this process; ``time.process_time``);
- **server, stock** (``PROVIDER_FAST_PATH=0``) and **server, fast**: ``chat-server serve`` (one
  worker, SQLite), ``chat/stream`` over SSE, server CPU from ``/proc``;

``--concurrency`` streams at once, each asking for ``--replies`` replies one after another on one
kept-alive connection, a round; ``--rounds`` rounds after a warm-up round, the paths in turn round by round: CPU µs per
text delta, the median round. With ``--before-ref`` the server's fast path at that git commit
(extracted to a temporary directory) is measured too, in the same rounds: the "before". (The server's CPU is read from ``/proc`` in 10 ms ticks: a round
of 10 × 3 replies of 300 deltas reads to ≈ 1 µs a delta.) Then **paced capacity** on the
server (fast path, then stock): N replies started within one second through a fake provider
pacing 50 deltas/s; the largest N whose replies reach ≥ 95 % of 50 deltas/s with a gap p99
under 50 ms and no errors. The fake provider runs on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from bench.client import SSESession, sse_chat
from bench.procstat import cpu_seconds
from bench.server import percentile, running_server, token

MODEL = "fake-model"
PACED_INTERVAL_MS = 20  # 50 text deltas per second


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def fake_provider(deltas: int, interval_ms: float = 0.0) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_provider", "--deltas", str(deltas), "--interval-ms", str(interval_ms)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the SDK alone and the server, stock and fast, rounds taken in turn ---------------------------
#
# Other work on the machine moves CPU per delta by 10-30 % from one minute to the next, so the
# paths are measured round by round in turn (stock, fast, stock, fast…) and each is read as the
# median of its rounds.


async def sdk_alone(base_url: str, api: str, concurrency: int, replies: int, rounds: int) -> dict[str, dict[str, Any]]:
    from agents import RunConfig, Runner, set_tracing_disabled
    from agents.stream_events import RawResponsesStreamEvent
    from openai.types.responses import ResponseTextDeltaEvent

    from app.gc_tuning import tune_gc
    from domain.agent import todo_agent
    from domain.models import ModelConfig, build_model, close_model

    tune_gc()  # as a serving process does
    set_tracing_disabled(True)
    config = RunConfig(tracing_disabled=True, trace_include_sensitive_data=False)
    agents, models = {}, []
    for name, fast in (("sdk_stock", False), ("sdk_fast", True)):
        model, model_settings, _ = build_model(ModelConfig(
            api_key="sk-bench", base_url=base_url, model=MODEL, api=api, fast_path=fast,
        ))
        models.append(model)
        agents[name] = todo_agent(model, model_settings)

    async def one(agent) -> int:
        # The tools are never called (the reply is text), so no database is needed.
        texts = 0
        for _ in range(replies):
            result = Runner.run_streamed(copy.copy(agent), "hello", context=None, max_turns=10, run_config=config)
            async for event in result.stream_events():
                if isinstance(event, RawResponsesStreamEvent) and isinstance(event.data, ResponseTextDeltaEvent):
                    texts += 1
        return texts

    async def round_(agent) -> tuple[float, int]:
        cpu = time.process_time()
        texts = sum(await asyncio.gather(*(one(agent) for _ in range(concurrency))))
        return time.process_time() - cpu, texts

    for agent in agents.values():
        await round_(agent)  # warm up
    measured: dict[str, list] = {name: [] for name in agents}
    for _ in range(rounds):
        for name, agent in agents.items():
            measured[name].append(await round_(agent))
    for model in models:
        await close_model(model)
    return {name: _summary(rounds_) for name, rounds_ in measured.items()}


def _summary(rounds: list[tuple[float, int]]) -> dict[str, Any]:
    per_delta = sorted(cpu / texts * 1e6 for cpu, texts in rounds)
    return {"text_deltas": sum(t for _, t in rounds), "cpu_s": sum(c for c, _ in rounds),
            "cpu_us_per_delta": percentile(per_delta, 50), "rounds_us_per_delta": per_delta}


def _server_env(base_url: str, api: str, fast_path: bool) -> dict[str, str]:
    return {"OPENAI_BASE_URL": base_url, "OPENAI_API": api, "CHAT_MODEL": MODEL,
            "PROVIDER_FAST_PATH": "1" if fast_path else "0", "MAX_ACTIVE_RUNS_PER_USER": "1000"}


async def servers_hot(urls: dict[str, tuple[str, int]], concurrency: int, replies: int,
                      rounds: int) -> dict[str, dict[str, Any]]:
    users = [(f"u{i}", token(f"u{i}")) for i in range(concurrency)]
    errors: dict[str, list] = {name: [] for name in urls}

    async def replies_of(url: str, user: str, tok: str) -> list:
        # One kept-alive connection per stream, as browsers and the AI SDK's transports keep
        # theirs (a new TCP connection costs the server ≈ 1 ms of CPU, 3 µs a delta here).
        session = SSESession(url, user, tok)
        try:
            return [await session.chat("hello") for _ in range(replies)]
        finally:
            session.close()

    async def round_(name: str) -> tuple[float, int]:
        url, pid = urls[name]
        cpu = cpu_seconds(pid)
        streams = [s for each in await asyncio.gather(*(replies_of(url, u, t) for u, t in users)) for s in each]
        errors[name] += [s.error or s.status for s in streams if s.error or s.status != "completed"]
        return cpu_seconds(pid) - cpu, sum(s.texts for s in streams)

    for name in urls:
        await round_(name)  # warm up
    measured: dict[str, list] = {name: [] for name in urls}
    for _ in range(rounds):
        for name in urls:
            measured[name].append(await round_(name))
    return {name: {**_summary(rounds_), "error_count": len(errors[name]), "errors": errors[name][:3]}
            for name, rounds_ in measured.items()}


async def server_paced(url: str, pid: int, n: int) -> dict[str, Any]:
    users = [(f"p{n}-{i}", token(f"p{n}-{i}")) for i in range(n)]

    async def one(i: int, user: str, tok: str):
        await asyncio.sleep(i / n)  # all started within one second
        return await sse_chat(url, user, tok, "hello")

    cpu, wall = cpu_seconds(pid), time.perf_counter()
    streams = await asyncio.wait_for(asyncio.gather(*(one(i, u, t) for i, (u, t) in enumerate(users))), 300)
    cpu, wall = cpu_seconds(pid) - cpu, time.perf_counter() - wall
    rates = [r for s in streams if (r := s.text_rate) is not None]
    gaps = [g * 1000 for s in streams for g in s.gaps]
    texts = sum(s.texts for s in streams)
    errors = [s.error or s.status for s in streams if s.error or s.status != "completed"]
    pct = 100 * sum(rates) / max(len(rates), 1) / (1000 / PACED_INTERVAL_MS)
    return {"n": n, "achieved_pct_of_ideal": pct, "gap_p50_ms": percentile(gaps, 50),
            "gap_p99_ms": percentile(gaps, 99), "server_cpu_pct": 100 * cpu / wall,
            "cpu_us_per_delta": cpu / max(texts, 1) * 1e6, "error_count": len(errors),
            "ok": pct >= 95 and percentile(gaps, 99) < 50 and not errors}


async def paced_series(url: str, pid: int, ns: list[int], label: str, api: str) -> list[dict[str, Any]]:
    """One server for the whole series, warmed by a reply first (its first reply builds the
    ``openai`` types' validators, and a stall there would read as a gap)."""
    await sse_chat(url, "warm", token("warm"), "hello")
    series = []
    for n in ns:
        measured = await server_paced(url, pid, n)
        series.append(measured)
        say(f"paced {api} {label} N={n}: {measured['achieved_pct_of_ideal']:.1f}% of ideal, "
            f"gap p99 {measured['gap_p99_ms']:.1f} ms, {measured['cpu_us_per_delta']:.0f} µs/delta, "
            f"server CPU {measured['server_cpu_pct']:.0f}%, {measured['error_count']} errors")
        if not measured["ok"]:
            break
    return series


# -- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[str | None]:
    """The code at git commit ``ref`` in a temporary directory (None without a ref)."""
    if not ref:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="chat-before-") as directory:
        here = Path(__file__).resolve().parent.parent
        archive = subprocess.run(["git", "-C", str(here), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
        yield directory


def run(args: argparse.Namespace) -> dict[str, Any]:
    apis = {"both": ["chat_completions", "responses"], "none": []}.get(args.api, [args.api])
    result: dict[str, Any] = {"deltas": args.deltas, "concurrency": args.concurrency, "replies": args.replies,
                              "rounds": args.rounds}
    before_ref = getattr(args, "before_ref", "")
    names = ["sdk_stock", "sdk_fast", "server_stock", "server_fast"] + (["server_fast_before"] if before_ref else [])
    for api in apis:
        row: dict[str, Any] = {}
        with fake_provider(args.deltas) as base_url, checkout(before_ref) as before, contextlib.ExitStack() as servers:
            row.update(uvloop.run(sdk_alone(base_url, api, args.concurrency, args.replies, args.rounds)))
            urls = {}
            for name, fast, cwd in (("server_stock", False, None), ("server_fast", True, None),
                                    ("server_fast_before", True, before)):
                if name in names:
                    url, process = servers.enter_context(running_server(cwd=cwd, **_server_env(base_url, api, fast)))
                    urls[name] = (url, process.pid)
            row.update(uvloop.run(servers_hot(urls, args.concurrency, args.replies, args.rounds)))
        if before_ref:
            row["server_fast_before"]["ref"] = before_ref
        for name in names:
            rounds = ", ".join(f"{x:.0f}" for x in row[name]["rounds_us_per_delta"])
            say(f"{api} {name}: {row[name]['cpu_us_per_delta']:.1f} µs/delta (median; rounds {rounds})"
                + (f", {row[name]['error_count']} errors" if "error_count" in row[name] else ""))
        row["server_fast_over_sdk_stock"] = row["server_fast"]["cpu_us_per_delta"] / row["sdk_stock"]["cpu_us_per_delta"]
        say(f"{api}: server fast / SDK stock = {row['server_fast_over_sdk_stock']:.2f}")
        result[api] = row
    if args.paced:
        ns = [int(n) for n in args.paced.split(",")]
        with fake_provider(args.paced_deltas, PACED_INTERVAL_MS) as base_url:
            for label, fast in (("fast", True), ("stock", False)):
                with running_server(**_server_env(base_url, args.paced_api, fast)) as (url, process):
                    series = uvloop.run(paced_series(url, process.pid, ns, label, args.paced_api))
                capacity = max((m["n"] for m in series if m["ok"]), default=0)
                result[f"paced_{label}"] = {"api": args.paced_api, "series": series, "capacity": capacity}
                say(f"paced capacity, {label}: N = {capacity}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=["chat_completions", "responses", "both", "none"], default="both",
                        help="the wire APIs of the CPU comparison (none: paced capacity only)")
    parser.add_argument("--deltas", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--replies", type=int, default=3, help="replies per stream per round, one after another")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--paced", default="", help="comma list of N for paced capacity (empty: skip)")
    parser.add_argument("--paced-api", choices=["chat_completions", "responses"], default="chat_completions")
    parser.add_argument("--paced-deltas", type=int, default=300)
    parser.add_argument("--before-ref", default="", help="a git commit whose fast path is measured too, as the before")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else json.dumps(result))


if __name__ == "__main__":
    main()
