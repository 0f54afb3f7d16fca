"""Where the server's time goes: py-spy samples the server while the bench drives it.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile [--transport sse|ws] [--seconds 15] [--paced N] [--out bench/out/profile.txt]

Starts the server (1 worker, SQLite), attaches ``py-spy record`` (all threads, including
idle ones off), drives a hot stream (one long reply after another, no delay) or ``--paced N``
conversations at 50 text events/s, and summarises the samples: the share of time per area
(SDK, Litestar, uvicorn, database, ...) and the functions with the most own time. The raw
collapsed stacks are kept beside the summary (``.folded``) for a flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.client import sse_chat, ws_connect
from bench.server import running_server, token
from bench.workload import long_message

# First match wins, looking from the innermost frame outwards.
AREAS = [
    ("database (piccolo, sqlite, asyncpg)", ("piccolo/", "aiosqlite", "sqlite3", "asyncpg")),
    ("json/msgspec encoding", ("msgspec", "json/")),
    ("pydantic (SDK event models)", ("pydantic",)),
    ("agents SDK", ("agents/",)),
    ("openai types", ("openai/",)),
    ("offline model", ("domain/offline",)),
    ("run manager / run log", ("domain/runs/",)),
    ("transports (sse/ws)", ("transports/",)),
    ("litestar", ("litestar/",)),
    ("uvicorn / websockets protocol", ("uvicorn/", "websockets/", "httptools")),
    ("asyncio / uvloop", ("asyncio/", "uvloop")),
]


def area_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in AREAS:
            if any(n in frame for n in needles):
                return name
    return "other"


def summarise(folded: Path, top: int = 30) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        areas[area_of(frames)] += n
    out = [f"{total} samples", "", "time by area (innermost recognised frame):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in areas.most_common()]
    out += ["", f"top {top} functions by own time:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    out += ["", f"top {top} functions by inclusive time:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


async def drive_hot(url: str, transport: str, seconds: float, words: int = 500) -> int:
    user, tok, message = "prof", token("prof"), long_message(words)
    deadline, runs = time.monotonic() + seconds, 0
    connection = await ws_connect(url, user, tok) if transport == "ws" else None
    try:
        while time.monotonic() < deadline:
            if connection is None:
                await sse_chat(url, user, tok, message)
            else:
                await connection.chat(message).finished
            runs += 1
    finally:
        if connection is not None:
            connection.close()
    return runs


async def drive_paced(url: str, transport: str, n: int, words: int) -> int:
    from bench.client import ws_chat

    chat = ws_chat if transport == "ws" else sse_chat

    async def one(i: int) -> None:
        await asyncio.sleep(i / n)
        await chat(url, f"pp-{i}", token(f"pp-{i}"), long_message(words))

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 300)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["sse", "ws"], default="sse")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--paced", type=int, default=0, help="N paced conversations instead of a hot stream")
    parser.add_argument("--words", type=int, default=0, help="reply length (default: 500 hot, 300 paced)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--native", action="store_true", help="C frames too (uvloop, the kernel calls)")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL (Python's CPU, no waits)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "profile.txt")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    folded = args.out.with_suffix(".folded")
    env = {"MAX_ACTIVE_RUNS_PER_USER": "1000", "OFFLINE_TOKEN_DELAY_MS": "20" if args.paced else "0"}
    with running_server(**env) as (url, process):
        if args.paced:
            asyncio.run(drive_paced(url, args.transport, 10, 20))  # warm up
        else:
            asyncio.run(drive_hot(url, args.transport, 1))
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(process.pid), "--format", "raw", "--output", str(folded),
             "--rate", str(args.rate), "--threads", *(["--gil"] if args.gil else []), *(["--native"] if args.native else ["--nonblocking"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(1.5)
        if args.paced:
            runs = asyncio.run(drive_paced(url, args.transport, args.paced, args.words or 300))
        else:
            runs = asyncio.run(drive_hot(url, args.transport, args.seconds, args.words or 500))
        spy.send_signal(2)  # py-spy writes its output on SIGINT
        _, err = spy.communicate(timeout=60)
    if not folded.exists():
        raise SystemExit(f"py-spy wrote nothing: {err.decode()[-500:]}")
    what = f"{args.paced} paced conversations" if args.paced else f"hot stream, {runs} long replies"
    summary = f"profile: {what} over {args.transport.upper()}\n" + summarise(folded)
    args.out.write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
