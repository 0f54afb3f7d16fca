"""Cold start: from starting ``chat-server serve`` to its ``GET /health`` answering 200, on SQLite.

    .venv/bin/python -m bench.cold_start [--repeat 7] [--before-ref REF] [--json]

Each start is a new process on a free port with a fresh data directory (a new SQLite database,
so the migrations run, and the dev-mode secret is created), ``/health`` polled every 10 ms; the
server is stopped (SIGTERM) once it answers. Prints the median, min and max wall time, and the
server's CPU seconds up to that point (its own, from ``/proc``: steadier than wall time on a
shared machine). With ``--before-ref`` the code of that git commit is measured in the same run,
its starts alternating with this code's so that other load falls on both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procstat import cpu_seconds
from bench.provider_path import checkout
from bench.server import free_port

HERE = Path(__file__).resolve().parent.parent


def one_start(cwd: Path, timeout_s: float = 60.0) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) from the process's start to ``/health`` 200."""
    with tempfile.TemporaryDirectory(prefix="chat-cold-") as data_dir:
        port = free_port()
        env = {
            **os.environ, "PYTHONPATH": str(cwd), "DATA_DIR": data_dir, "DATABASE_URL": "", "JWT_SECRET": "",
            "LOG_LEVEL": "WARNING", "REDIS_URL": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        }
        url = f"http://127.0.0.1:{port}/health"
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=cwd,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(timeout=5) as client:
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if client.get(url).status_code == 200:
                            wall = time.perf_counter() - started
                            return wall, cpu_seconds(process.pid)
                    if process.poll() is not None:
                        raise RuntimeError(f"the server at {cwd} exited during start-up ({process.returncode})")
                    if time.perf_counter() - started > timeout_s:
                        raise RuntimeError(f"the server at {cwd} did not answer /health in {timeout_s} s")
                    time.sleep(0.01)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
    return {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
            "cpu_median_s": statistics.median(cpus), "runs": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="starts of each code (default: 7)")
    parser.add_argument("--before-ref", default="", help="a git commit to measure too, as the before")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with checkout(args.before_ref) as before:
        sources = ([(f"before ({args.before_ref})", Path(before))] if before else []) + [("this code", HERE)]
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in sources}
        one_start(HERE)  # a first start writes the bytecode caches; not counted
        if before:
            one_start(Path(before))
        for _ in range(args.repeat):
            for name, cwd in sources:
                samples[name].append(one_start(cwd))

    results = {name: summary(runs) for name, runs in samples.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"cold start, process start to /health 200 on SQLite ({args.repeat} starts each; "
          f"load average {os.getloadavg()[0]:.1f})")
    for name, figures in results.items():
        print(f"  {name:>24}: median {figures['median_s']:.3f} s, min {figures['min_s']:.3f}, "
              f"max {figures['max_s']:.3f}; server CPU median {figures['cpu_median_s']:.2f} s")


if __name__ == "__main__":
    main()
