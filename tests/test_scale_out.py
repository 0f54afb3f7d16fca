"""Several instances behind a load balancer: any instance can cancel or resume any run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from app.settings import Settings
from tests.conftest import ServerProcess, auth, fetch_rows, fresh_postgres, token_for
from tests.test_runs import stream_lines, wait_for_status

BROKERS = ["redis", "postgresql"]


@pytest.fixture
def shared_settings(tmp_path, postgres_server) -> Settings:
    """Two instances need a database they can share: PostgreSQL."""
    fresh_postgres(postgres_server)
    return Settings(data_dir=str(tmp_path / "data"), database_url=postgres_server, offline_token_delay_ms=40)


def broker_env(broker: str) -> dict[str, str]:
    if broker == "postgresql":
        return {"REDIS_URL": ""}
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("TEST_REDIS_URL is needed for the Redis broker")
        pytest.skip("the Redis broker needs TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    return {"REDIS_URL": url}


def two_instances(settings, **env: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on one database, started side by side; stopped after."""
    a = ServerProcess(settings, wait=False, RUN_LEASE_S="1", **env)
    b = ServerProcess(settings, wait=False, RUN_LEASE_S="1", **env)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(params=BROKERS)
def instances(request, shared_settings):
    yield from two_instances(shared_settings, **broker_env(request.param))


def ws_url(server: ServerProcess, user: str = "alice") -> str:
    return server.url.replace("http", "ws") + f"/api/{user}/ws?token={token_for(user)}"


def test_cancel_on_another_instance_stops_the_run(instances, shared_settings):
    a, b = instances

    async def scenario():
        async with websockets.connect(ws_url(a)) as on_a, httpx.AsyncClient(base_url=b.url,
                                                                             headers=auth("alice")) as http_b:
            await on_a.send(json.dumps({"type": "chat", "message": "hello"}))
            start = json.loads(await on_a.recv())
            assert json.loads(await on_a.recv())["type"] == "text"
            response = await http_b.post(f"/api/alice/runs/{start['run_id']}/cancel")
            assert response.status_code == 202
            while (event := json.loads(await asyncio.wait_for(on_a.recv(), 10)))["type"] != "done":
                assert event["type"] == "text"
            return start, event

    start, done = asyncio.run(scenario())
    assert done["status"] == "cancelled"
    assert fetch_rows(shared_settings.database, "SELECT status FROM run") == [("cancelled",)]


def test_websocket_cancel_and_resume_frames_on_another_instance(instances):
    a, b = instances

    async def scenario():
        async with websockets.connect(ws_url(a)) as on_a:
            await on_a.send(json.dumps({"type": "chat", "message": "hello"}))
            start = json.loads(await on_a.recv())
            seen = [start, json.loads(await on_a.recv()), json.loads(await on_a.recv())]
        async with websockets.connect(ws_url(b)) as on_b:
            await on_b.send(json.dumps({"type": "resume", "run_id": start["run_id"], "after": seen[-1]["seq"]}))
            resumed = [json.loads(await asyncio.wait_for(on_b.recv(), 10))]
            await on_b.send(json.dumps({"type": "cancel", "run_id": start["run_id"]}))
            while resumed[-1]["type"] != "done":
                resumed.append(json.loads(await asyncio.wait_for(on_b.recv(), 10)))
        return seen, resumed

    seen, resumed = asyncio.run(scenario())
    assert resumed[-1]["status"] == "cancelled"
    seqs = [e["seq"] for e in seen + resumed]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate


def test_resume_on_another_instance_replays_then_follows_live(instances, shared_settings):
    a, b = instances
    with httpx.Client(headers=auth("alice"), timeout=30) as http:
        with http.stream("POST", f"{a.url}/api/alice/chat/stream",
                         json={"message": "hello", "on_disconnect": "continue"}) as response:
            events = stream_lines(response)
            seen = [next(events) for _ in range(5)]
        run_id = seen[0]["run_id"]
        with http.stream("GET", f"{b.url}/api/alice/runs/{run_id}/events",
                         headers={"Last-Event-ID": str(seen[-1]["seq"])}) as resumed:
            rest = list(stream_lines(resumed))
        assert wait_for_status(shared_settings.database, run_id) == "completed"
        everything = [json.loads(line.removeprefix("data: "))
                      for line in http.get(f"{b.url}/api/alice/runs/{run_id}/events").text.splitlines()
                      if line.startswith("data: ")]
    assert rest[-1]["type"] == "done" and rest[-1]["status"] == "completed"
    assert seen + rest == everything
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))


def test_a_killed_instance_leaves_its_runs_to_be_interrupted(instances, shared_settings):
    a, b = instances
    with httpx.Client(headers=auth("alice"), timeout=30) as http:
        with http.stream("POST", f"{a.url}/api/alice/chat/stream",
                         json={"message": "hello", "on_disconnect": "continue"}) as response:
            events = stream_lines(response)
            start = next(events)
            for _ in range(10):
                next(events)
            a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=10)
        # B's periodic sweep notices the lapsed lease; a follower on B sees the run end.
        began = time.monotonic()
        with http.stream("GET", f"{b.url}/api/alice/runs/{start['run_id']}/events") as resumed:
            replay = list(stream_lines(resumed))
        assert time.monotonic() - began < 30
    assert replay[-1]["type"] == "done" and replay[-1]["status"] == "interrupted"
    assert fetch_rows(shared_settings.database, "SELECT status FROM run") == [("interrupted",)]
    assert fetch_rows(shared_settings.database,
                      "SELECT status FROM message WHERE role = 'assistant'") == [("interrupted",)]


@pytest.mark.parametrize("broker", BROKERS)
def test_two_workers_cancel_each_others_runs(shared_settings, broker):
    server = ServerProcess(shared_settings, workers=2, **broker_env(broker))

    async def one(n: int) -> str:
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "chat", "message": "hello"}))
            start = json.loads(await ws.recv())
            # A new connection: the kernel may hand it to either worker.
            async with httpx.AsyncClient(base_url=server.url, headers=auth("alice")) as http:
                assert (await http.post(f"/api/alice/runs/{start['run_id']}/cancel")).status_code == 202
            while (event := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "done":
                pass
            return event["status"]

    async def scenario():
        return await asyncio.gather(*(one(n) for n in range(4)))

    try:
        statuses = asyncio.run(scenario())
    finally:
        server.stop()
    assert statuses == ["cancelled"] * 4


def test_several_workers_need_a_broker(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
                          env={**os.environ, "DATA_DIR": str(tmp_path), "REDIS_URL": "", "DATABASE_URL": ""},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers > 1 needs" in done.stderr
