"""SDK floor: the offline model driven by ``Runner.run_streamed`` in a bare script, no server.

    .venv/bin/python -m bench.sdk_floor [--runs 20] [--words 500] [--json]
    .venv/bin/python -m bench.sdk_floor --paced 500 [--words 300] [--json]

The same agent, tools and reply as the server's benchmark (a temporary SQLite database
for the tool's read), no delay between text pieces, one run after another on uvloop.
Prints CPU microseconds per text event and text events per second: what the agents SDK
costs by itself, which the server can only add to.

``--paced N`` runs N replies at once instead, started within one second, with 20 ms
between text pieces (as the paced load does): the SDK's own cost when every text piece
wakes the event loop by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import tempfile
import time

import uvloop
from agents import RunConfig, Runner, set_tracing_disabled
from agents.stream_events import RawResponsesStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from bench.workload import long_message


async def measure(runs: int, words: int, paced: int = 0) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="chat-bench-floor-") as data_dir:
        from domain.agent import todo_agent
        from domain.database import close_database, open_database
        from domain.offline_model import OfflineModel
        from domain.tools import TodoContext

        from app.gc_tuning import tune_gc

        db = await open_database(f"sqlite:///{os.path.join(data_dir, 'floor.sqlite3')}")
        tune_gc()  # as a serving process does, so the floor stays the floor
        set_tracing_disabled(True)
        agent = todo_agent(OfflineModel(token_delay_s=0.02 if paced else 0))
        history = [{"role": "user", "content": long_message(words)}]
        config = RunConfig(tracing_disabled=True, trace_include_sensitive_data=False)

        rates: list[float] = []
        gaps: list[float] = []

        async def one(user: str = "floor", after_s: float = 0) -> int:
            await asyncio.sleep(after_s)
            times = []
            context = TodoContext(user_id=user, db=db)
            # One agent per run, as the server does (see RunManager._execute).
            result = Runner.run_streamed(copy.copy(agent), history, context=context, max_turns=10, run_config=config)
            async for event in result.stream_events():
                if isinstance(event, RawResponsesStreamEvent) and isinstance(event.data, ResponseTextDeltaEvent):
                    times.append(time.perf_counter())
            if len(times) > 1 and times[-1] > times[0]:
                rates.append((len(times) - 1) / (times[-1] - times[0]))
                gaps.extend(b - a for a, b in zip(times, times[1:]))
            return len(times)

        for _ in range(3):  # warm up: imports, first queries
            await one()
        cpu, wall = time.process_time(), time.perf_counter()
        if paced:
            runs = paced
            texts = sum(await asyncio.gather(*(one(f"floor-{i}", i / paced) for i in range(paced))))
        else:
            texts = 0
            for _ in range(runs):
                texts += await one()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await close_database(db)
    result = {
        "runs": runs, "text_events": texts, "wall_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall,
        "cpu_us_per_event": cpu / texts * 1e6, "events_per_s": texts / wall,
    }
    if paced:
        gaps.sort()
        result.update(
            achieved_pct_of_ideal=100 * sum(rates) / len(rates) / 50,
            gap_p50_ms=1000 * gaps[len(gaps) // 2], gap_p99_ms=1000 * gaps[int(len(gaps) * 0.99)],
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--words", type=int, default=500)
    parser.add_argument("--paced", type=int, default=0, metavar="N", help="N replies at once, 20 ms between pieces")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    result = uvloop.run(measure(args.runs, args.words, args.paced))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"SDK floor: {result['text_events']} text events in {result['runs']} runs: "
              f"{result['cpu_us_per_event']:.1f} µs CPU per text event, {result['events_per_s']:,.0f} events/s, "
              f"CPU {result['cpu_pct']:.0f}% of a core")
        if args.paced:
            print(f"  achieved {result['achieved_pct_of_ideal']:.1f}% of 50 events/s per reply, "
                  f"gap p50 {result['gap_p50_ms']:.1f} ms, p99 {result['gap_p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
