"""kill -9 at several points of a reply: nothing a client saw is lost, every resume completes."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import msgspec
import pytest

from tests.conftest import ServerProcess, auth, fetch_rows

CLIENTS = 4


class Seen(msgspec.Struct):
    """What one client received: the raw payload of each event, in order."""

    payloads: list[bytes] = msgspec.field(default_factory=list)


def read_stream(url: str, message: str, seen: Seen, started: threading.Event) -> None:
    try:
        with httpx.Client(base_url=url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream",
                             json={"message": message, "on_disconnect": "continue"}) as response:
                started.set()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        seen.payloads.append(line.removeprefix("data: ").encode())
    except httpx.HTTPError:
        pass  # the server died under it
    finally:
        started.set()


def stored_payloads(database_url: str, run_id: str) -> list[bytes]:
    key = run_id if database_url.startswith("sqlite") else uuid.UUID(run_id)
    rows = fetch_rows(database_url, "SELECT seq, payload FROM run_event WHERE run = $1 ORDER BY seq", key)
    return [line.encode() for _, payload in rows for line in payload.split("\n")]


def resume(url: str, run_id: str, after: int) -> list[tuple[int, bytes]]:
    with httpx.Client(base_url=url, headers={**auth("alice"), "Last-Event-ID": str(after)}, timeout=30) as http:
        body = http.get(f"/api/alice/runs/{run_id}/events").content
    frames = []
    for frame in body.split(b"\n\n"):
        if frame.startswith(b"id: "):
            head, payload = frame.split(b"\ndata: ", 1)
            frames.append((int(head.removeprefix(b"id: ")), payload))
    return frames


@pytest.mark.parametrize("kill_after", [1, 4, 25])
def test_kill_9_loses_no_event_a_client_saw(settings, kill_after):
    """``kill_after``: events the first client has seen when the server dies (1: only start)."""
    slow = msgspec.structs.replace(settings, offline_token_delay_ms=15)
    server = ServerProcess(slow, RUN_LEASE_S="1")
    seen = [Seen() for _ in range(CLIENTS)]
    try:
        readers = []
        for n, record in enumerate(seen):
            started = threading.Event()
            thread = threading.Thread(target=read_stream, args=(server.url, f"hello {n}", record, started))
            thread.start()
            started.wait(10)
            readers.append(thread)
        deadline = time.monotonic() + 10
        while len(seen[0].payloads) < kill_after and time.monotonic() < deadline:
            time.sleep(0.002)
        server.process.kill()
        for thread in readers:
            thread.join(10)
    finally:
        server.stop()
    assert len(seen[0].payloads) >= kill_after

    restarted = ServerProcess(slow, RUN_LEASE_S="1")
    try:
        for record in seen:
            if not record.payloads:
                continue  # it never saw its start: nothing to keep
            first = msgspec.json.decode(record.payloads[0])
            run_id = first["run_id"]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                stored = stored_payloads(settings.database, run_id)
                if stored and msgspec.json.decode(stored[-1])["type"] == "done":
                    break
                time.sleep(0.1)
            # Byte for byte, every event the client saw is in the store, in its place.
            assert stored[: len(record.payloads)] == record.payloads
            kinds = [msgspec.json.decode(p)["type"] for p in stored]
            assert kinds[0] == "start" and kinds.count("done") == 1 and kinds[-1] == "done"
            # A resume from the last seq the client saw returns the rest, ending in its done.
            rest = resume(restarted.url, run_id, len(record.payloads))
            assert [seq for seq, _ in rest] == list(range(len(record.payloads) + 1, len(stored) + 1))
            assert [payload for _, payload in rest] == stored[len(record.payloads):]
    finally:
        restarted.stop()
