"""Search latency over 100,000 messages, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.search [--messages 100000] [--users 1] [--queries 50]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]   # '' skips PostgreSQL

For each engine: a fresh database (a temporary SQLite file; a scratch PostgreSQL database,
created and dropped), migrated, then filled with ``--messages`` messages (user and assistant
turns, 50 per conversation) spread evenly over ``--users`` users: inserted as the server
writes them, so the index's triggers index every one (the fill time includes that). Then
``chat-server serve`` on it, and ``GET /api/<user>/search`` as the first user, one request
at a time over one keep-alive connection: ``--queries`` queries of each kind below after a
warm-up, timed from request to the whole answer (the first page, 20 results with snippets).

The text is synthetic: a vocabulary of 20,000 words drawn by Zipf's law (s = 1), some with
accents, so a few words are in a quarter of all messages and most are rare, as in real text.
Query kinds: a rare word, a mid-frequency word, a common word (ranks 20-500), two words of a message,
a prefix (a word's first three letters), a phrase (two consecutive words of a message), an
accent-folded word (a word with an accent, asked without it).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import random
import sqlite3
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bench.run_all import _reachable, scratch_postgres
from bench.server import percentile, running_server, token
from domain.database import close_database, open_database

PER_CONVERSATION = 50
VOCABULARY = 20_000
KINDS = ("rare", "medium", "common", "two words", "prefix", "phrase", "accent-folded")
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"] + ["an", "er", "in", "on", "st", "qu"]
_ACCENTED = {"a": "á", "e": "é", "i": "í", "o": "ö", "u": "ü"}


class Corpus:
    def __init__(self, seed: int = 7):
        self.random = random.Random(seed)
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < VOCABULARY:
            word = "".join(self.random.choice(_SYLLABLES) for _ in range(self.random.choice((1, 2, 2, 3, 3, 4))))
            if word in seen:
                continue
            seen.add(word)
            if self.random.random() < 0.05:  # some words carry an accent
                n = next((i for i, c in enumerate(word) if c in _ACCENTED), None)
                if n is not None:
                    word = word[:n] + _ACCENTED[word[n]] + word[n + 1:]
            words.append(word)
        self.words = words
        self.cumulative = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))

    def word(self) -> str:
        return self.words[bisect.bisect_left(self.cumulative, self.random.random() * self.cumulative[-1])]

    def text(self, low: int, high: int) -> str:
        words = [self.word() for _ in range(self.random.randint(low, high))]
        words[0] = words[0].capitalize()
        return " ".join(words) + "."

    def queries(self, per_kind: int, sample_texts: list[str]) -> list[tuple[str, str]]:
        pick = self.random.choice
        accented = [w for w in self.words[100:5000] if w != _fold(w)]
        made = {
            "rare": lambda: pick(self.words[5000:]),
            "medium": lambda: pick(self.words[500:5000]),
            "common": lambda: pick(self.words[20:500]),
            "two words": lambda: _two_words(pick(sample_texts), self.random),
            "prefix": lambda: pick([w for w in self.words[500:5000] if len(w) >= 5])[:3],
            "phrase": lambda: _phrase(pick(sample_texts), self.random),
            "accent-folded": lambda: _fold(pick(accented)),
        }
        return [(kind, made[kind]()) for _ in range(per_kind) for kind in KINDS]


def _fold(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _two_words(text: str, rng: random.Random) -> str:
    """Two words of one message, in any order (every word must match)."""
    words = text.rstrip(".").split()
    return " ".join(rng.sample(words, 2)) if len(words) > 1 else words[0]


def _phrase(text: str, rng: random.Random) -> str:
    words = text.rstrip(".").split()
    n = rng.randrange(max(1, len(words) - 1))
    return '"' + " ".join(words[n:n + 2]) + '"'


def rows(corpus: Corpus, messages: int, users: int) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """Batches of (conversation rows, message rows), as the run store writes them."""
    start = datetime.now(UTC) - timedelta(days=365)
    at = start
    for n in range(messages // PER_CONVERSATION):
        conversation = uuid.uuid4()
        said = []
        for turn in range(PER_CONVERSATION):
            at += timedelta(milliseconds=317)
            role = "user" if turn % 2 == 0 else "assistant"
            text = corpus.text(4, 20) if role == "user" else corpus.text(10, 80)
            said.append((uuid.uuid4(), conversation, None, role, text, None, "completed", None, at))
        title = " ".join(said[0][4].split()[:8])
        yield [(conversation, f"user{n % users}", title, start, at, None)], said


CONVERSATION_SQL = ("INSERT INTO conversation (id, user_id, title, created_at, updated_at, client_id) "
                    "VALUES ($1, $2, $3, $4, $5, $6)")
MESSAGE_SQL = ("INSERT INTO message (id, conversation, run_id, role, content, tool, status, feedback, created_at) "
               "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")


async def fill(url: str, corpus: Corpus, messages: int, users: int) -> tuple[float, list[str]]:
    """Seconds to fill (and index), and a sample of the texts (for phrase queries)."""
    engine = await open_database(url)  # migrates
    await close_database(engine)
    sample: list[str] = []
    batches = list(rows(corpus, messages, users))
    for _, said in batches[:: max(1, len(batches) // 200)]:
        sample.append(said[1][4])
    began = time.perf_counter()
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        connection.execute("PRAGMA foreign_keys = 1")
        with connection:
            for conversations, said in batches:
                # Piccolo's adapters (imported with domain.database) write UUIDs and times as it does.
                connection.executemany(CONVERSATION_SQL.replace("$", "?"), conversations)
                connection.executemany(MESSAGE_SQL.replace("$", "?"), said)
        connection.close()
    else:
        connection = await asyncpg.connect(url)
        try:
            async with connection.transaction():
                for conversations, said in batches:
                    await connection.executemany(CONVERSATION_SQL, conversations)
                    await connection.executemany(MESSAGE_SQL, said)
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
    return time.perf_counter() - began, sample


def measure(url: str, queries: list[tuple[str, str]], warmup: int = 20) -> dict[str, dict[str, float]]:
    timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
    slowest: list[tuple[float, str, str]] = []
    found: dict[str, list[int]] = {kind: [] for kind in KINDS}
    headers = {"Authorization": f"Bearer {token('user0')}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for _, q in queries[:warmup]:
            client.get("/api/user0/search", params={"q": q}).raise_for_status()
        for kind, q in queries:
            began = time.perf_counter()
            response = client.get("/api/user0/search", params={"q": q})
            elapsed = time.perf_counter() - began
            response.raise_for_status()
            timings[kind].append(elapsed * 1000)
            slowest = sorted([*slowest, (elapsed * 1000, kind, q)], reverse=True)[:5]
            found[kind].append(len(response.json()["results"]))
    every = [t for kind in KINDS for t in timings[kind]]
    report = {kind: _stats(timings[kind]) | {"results": sum(found[kind]) / len(found[kind])} for kind in KINDS}
    report["all"] = _stats(every)
    report["slowest"] = [{"ms": ms, "kind": kind, "q": q} for ms, kind, q in slowest]
    return report


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values), "n": len(values)}


def bench(url: str, args: argparse.Namespace) -> dict:
    corpus = Corpus()
    print(f"  filling {args.messages:,} messages ({args.users} users)…", flush=True)
    seconds, sample = asyncio.run(fill(url, corpus, args.messages, args.users))
    print(f"  filled and indexed in {seconds:.1f} s ({args.messages / seconds:,.0f} messages/s)", flush=True)
    queries = corpus.queries(args.queries, sample)
    with running_server(DATABASE_URL=url) as (base, _):
        report = measure(base, queries)
    report["fill_s"] = seconds
    return report


def print_report(engine: str, report: dict) -> None:
    print(f"\n{engine}: search latency (ms), {report['all']['n']} queries, first page of 20")
    print("| kind | p50 | p95 | max | results on page 1 |\n|---|---:|---:|---:|---:|")
    for kind in (*KINDS, "all"):
        row = report[kind]
        results = f"{row['results']:.1f}" if "results" in row else ""
        print(f"| {kind} | {row['p50']:.1f} | {row['p95']:.1f} | {row['max']:.1f} | {results} |")
    print("slowest: " + ", ".join(f"{s['q']!r} {s['ms']:.0f} ms" for s in report["slowest"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1, help="the messages are spread over this many users")
    parser.add_argument("--queries", type=int, default=50, help="queries of each kind")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="chat-search-bench-") as directory:
        print("SQLite", flush=True)
        results["sqlite"] = bench(f"sqlite:///{Path(directory) / 'chat.sqlite3'}", args)
    if args.postgres and _reachable(args.postgres):
        print("PostgreSQL", flush=True)
        with scratch_postgres(args.postgres) as url:
            results["postgresql"] = bench(url, args)
    elif args.postgres:
        print(f"PostgreSQL at {args.postgres} is not reachable: skipped")
    for engine, report in results.items():
        print_report(engine, report)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
