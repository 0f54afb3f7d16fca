"""The tests' fake OpenAI-compatible server (``tests/fake_openai.py``) in a process of its own,
so that its CPU is not counted with the client's or the server's.

    .venv/bin/python -m bench.fake_provider --deltas 300 [--interval-ms 20]

Prints its base URL on the first line, then serves every request (Chat Completions or
Responses) the same text reply of ``--deltas`` pieces until its standard input closes.
"""

from __future__ import annotations

import argparse
import sys

from tests.fake_openai import FakeOpenAI, Reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    pieces = tuple(f" w{n}" for n in range(args.deltas))
    fake = FakeOpenAI().repeat(Reply.say(*pieces, usage=(50, args.deltas), interval_s=args.interval_ms / 1000)).start()
    print(fake.base_url, flush=True)
    sys.stdin.read()
    fake.stop()


if __name__ == "__main__":
    main()
