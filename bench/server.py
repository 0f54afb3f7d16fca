"""Start ``chat-server serve`` on 127.0.0.1 with a temporary database, for benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx
import jwt

from bench.procstat import raise_fd_limit

JWT_SECRET = "bench-secret-bench-secret-bench-secret!!"


def token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, JWT_SECRET, algorithm="HS256")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(
    workers: int = 1, log_path: str | None = None, cwd: str | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yields (base URL, process); the server is stopped and its data removed afterwards.
    With ``cwd``, the server's code is the checkout there (``python -m`` imports from it).

    The server may open as many files as the hard limit allows (thousands of streams);
    its output goes to ``log_path`` when given."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as data_dir:
        port = free_port()
        environ = {
            **os.environ, "DATA_DIR": data_dir, "JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "WARNING",
            "OFFLINE_TOKEN_DELAY_MS": "0", "MESSAGES_PER_MINUTE": "1000000", **env,
        }
        output = open(log_path, "ab") if log_path else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)],
            env=environ, stdout=output, stderr=output, preexec_fn=raise_fd_limit, cwd=cwd,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                if process.poll() is not None:
                    raise RuntimeError("the server exited during start-up")
                time.sleep(0.1)
            else:
                raise RuntimeError("the server did not start in 60 s")
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if log_path:
                output.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]
