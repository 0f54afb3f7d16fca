"""Redis misbehaving under several instances. While it is down, Stop from another instance
still stops the reply (through the database); once it is back, each instance subscribes again
by itself, and live follow and Stop go through it again within seconds. Deployments on one
Redis with different database numbers never hear each other.

Each test runs its own redis-server on a free port: the shared one is never stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest
import redis
import websockets

from app.settings import Settings
from tests.conftest import ServerProcess, auth, fetch_rows
from tests.test_scale_out import shared_settings, ws_url

__all__ = ["shared_settings"]  # a fixture, used by name

REDIS_SERVER = shutil.which("redis-server")

T = TypeVar("T")

# What reaches a follower or a Stop in time came through the broker: the database safety nets
# (followers' poll, the stored Stop requests while the broker listens) are a minute apart.
# While the broker is away, an instance reads the stored Stop requests every 0.2 s.
BROKER_ONLY = {"FOLLOW_POLL_S": "60", "CANCEL_POLL_S": "0.2"}


def wait_for(condition: Callable[[], T], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)
    return result


class RedisServer:
    """A redis-server of this test's own, stopped and started again on the same port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(answers, 10, "redis-server answers")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        if os.environ.get("REQUIRE_POSTGRES"):  # CI: these must run
            pytest.fail("redis-server is needed on the PATH")
        pytest.skip("needs redis-server on the PATH")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Instance:
    """A server process started without waiting for it (two start side by side)."""

    def __init__(self, settings: Settings, **env: str):
        self.server = ServerProcess(settings, wait=False, **env)
        self.url = self.server.url

    @property
    def log(self) -> str:
        return self.server.output()

    def metric(self, name: str) -> float | None:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.split(" ")[0] == name:
                return float(line.split(" ")[1])
        return None

    def terminate(self) -> int:
        self.server.process.send_signal(signal.SIGTERM)
        return self.server.process.wait(timeout=15)

    def kill(self) -> None:
        self.server.stop()


def started(*instances: Instance) -> None:
    for instance in instances:
        try:
            instance.server.wait_ready()
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{instance.log}") from None


@pytest.fixture
def two_instances(shared_settings: Settings, redis_server: RedisServer) -> Iterator[tuple[Instance, Instance]]:
    settings = Settings(data_dir=shared_settings.data_dir, database_url=shared_settings.database,
                        offline_token_delay_ms=80)  # a reply takes about 6 s
    a = Instance(settings, REDIS_URL=redis_server.url(), **BROKER_ONLY)
    b = Instance(settings, REDIS_URL=redis_server.url(), **BROKER_ONLY)
    try:
        started(a, b)
        yield a, b
    finally:
        a.kill()
        b.kill()


async def start_reply(on_a: websockets.ClientConnection) -> dict:
    """Send a message on A's socket; its ``start``, once the first text has come too."""
    await on_a.send(json.dumps({"type": "chat", "message": "hello"}))
    start = json.loads(await asyncio.wait_for(on_a.recv(), 10))
    assert start["type"] == "start", start
    assert json.loads(await asyncio.wait_for(on_a.recv(), 10))["type"] == "text"
    return start


async def until_done(ws: websockets.ClientConnection) -> tuple[dict, float]:
    """The reply's ``done`` and when it came (time.monotonic)."""
    while (event := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] != "done":
        pass
    return event, time.monotonic()


async def stop_on_b(b: Instance, run_id: str) -> float:
    async with httpx.AsyncClient(base_url=b.url, headers=auth("alice"), timeout=30) as http_b:
        asked = time.monotonic()
        response = await http_b.post(f"/api/alice/runs/{run_id}/cancel")
    assert response.status_code == 202, (response.status_code, response.text)
    return asked


def test_redis_down_then_back_stop_works_throughout_and_live_follow_recovers(two_instances, redis_server,
                                                                             shared_settings):
    a, b = two_instances

    # -- Redis is down: Stop on B is stored on the run's row, and A reads it there. ----------
    redis_server.stop()

    async def stop_while_redis_is_down() -> tuple[dict, float, float]:
        async with websockets.connect(ws_url(a)) as on_a:
            start = await start_reply(on_a)
            asked = await stop_on_b(b, start["run_id"])
            done, at = await until_done(on_a)
            return done, asked, at

    done, asked, at = asyncio.run(stop_while_redis_is_down())
    assert done["status"] == "cancelled"
    assert at - asked < 5
    assert fetch_rows(shared_settings.database, "SELECT status FROM run WHERE id = $1",
                      done["run_id"]) == [("cancelled",)]
    for instance in (a, b):
        wait_for(lambda: instance.metric("chat_broker_listening") == 0, 10, "the instance says it lost Redis")

    # -- Redis is back: both instances listen again within 5 s, by themselves. --------------
    redis_server.start()
    for instance in (a, b):
        wait_for(lambda: instance.metric("chat_broker_listening") == 1, 5, "the instance listens to Redis again")
        assert instance.metric("chat_broker_reconnects_total") >= 1

    async def follow_and_stop_through_redis() -> tuple[list[dict], list[dict], float, dict, float, float]:
        async with websockets.connect(ws_url(a)) as on_a, httpx.AsyncClient(
                base_url=b.url, headers=auth("alice"), timeout=90) as http_b:
            # A follower on B sees the reply written on A as it is written: by notice, since
            # B reads the database only once a minute here.
            await on_a.send(json.dumps({"type": "chat", "message": "hello"}))
            seen_on_a = [json.loads(await asyncio.wait_for(on_a.recv(), 10))]

            async def follow_on_b() -> tuple[list[dict], float]:
                events = []
                async with http_b.stream("GET", f"/api/alice/runs/{seen_on_a[0]['run_id']}/events") as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            events.append(json.loads(line.removeprefix("data: ")))
                            if events[-1]["type"] == "done":
                                return events, time.monotonic()
                raise AssertionError(f"the follow on B ended without done: {events}")

            follower = asyncio.create_task(follow_on_b())
            while seen_on_a[-1]["type"] != "done":
                seen_on_a.append(json.loads(await asyncio.wait_for(on_a.recv(), 30)))
            done_on_a = time.monotonic()
            seen_on_b, done_on_b = await asyncio.wait_for(follower, 90)

            # Stop on B reaches A through Redis (its stored-requests safety net is a minute away).
            start = await start_reply(on_a)
            asked = await stop_on_b(b, start["run_id"])
            stopped, at = await until_done(on_a)
            return seen_on_a, seen_on_b, done_on_b - done_on_a, stopped, asked, at

    seen_on_a, seen_on_b, follower_lag, stopped, asked, at = asyncio.run(follow_and_stop_through_redis())
    assert seen_on_a[-1]["status"] == "completed"
    assert seen_on_b == seen_on_a
    assert follower_lag < 5  # a minute without the notices
    assert stopped["status"] == "cancelled"
    assert at - asked < 5  # a minute without the broker

    # -- A clean shutdown, and nothing left unhandled along the way. --------------------------
    for instance in (a, b):
        assert instance.terminate() in (0, -signal.SIGTERM)
        log = instance.log
        assert "lost the Redis broker" in log and "Redis broker is back" in log, log
        for trouble in ("Task exception was never retrieved", "Application shutdown failed", "Traceback"):
            assert trouble not in log, log


def test_deployments_on_one_redis_with_different_database_numbers_never_hear_each_other(tmp_path, redis_server):
    """Pub/sub channels are global to a Redis server: each deployment's carry its number."""

    def deployment(name: str, db: int) -> Instance:
        settings = Settings(data_dir=str(tmp_path / name), database_url=f"sqlite:///{tmp_path / name}.sqlite3",
                            offline_token_delay_ms=0)
        return Instance(settings, REDIS_URL=redis_server.url(db))

    one, two = deployment("one", 1), deployment("two", 2)
    watcher = redis.Redis(port=redis_server.port, socket_timeout=10)
    published = watcher.pubsub()
    published.psubscribe("*")
    assert published.get_message(timeout=5)["type"] == "psubscribe"
    try:
        started(one, two)

        async def scenario() -> tuple[list[dict], set[str], str]:
            async with websockets.connect(ws_url(two)) as alice_on_two:
                await alice_on_two.send(json.dumps({"type": "subscribe"}))
                assert json.loads(await alice_on_two.recv()) == {"type": "subscribed"}
                # Alice writes on deployment one: its notices go out on its channels…
                async with websockets.connect(ws_url(one)) as alice_on_one:
                    await alice_on_one.send(json.dumps({"type": "chat", "message": "add buy milk"}))
                    await until_done(alice_on_one)
                channels = set()
                while not channels:
                    message = await asyncio.to_thread(published.get_message, timeout=5)
                    assert message is not None, "deployment one published nothing"
                    if message["type"] == "pmessage":
                        channels.add(message["channel"].decode())
                # …and her feed on deployment two shows only what she does there.
                await alice_on_two.send(json.dumps({"type": "chat", "message": "add buy bread"}))
                frames: list[dict] = []
                start: dict | None = None
                while start is None or (frames[-1]["type"], frames[-1].get("run_id")) != ("run_finished",
                                                                                         start["run_id"]):
                    frames.append(json.loads(await asyncio.wait_for(alice_on_two.recv(), 30)))
                    if frames[-1]["type"] == "start":
                        start = frames[-1]
                return frames, channels, start["conversation_id"]

        frames, channels, own = asyncio.run(scenario())
    finally:
        one.kill()
        two.kill()
        published.close()
        watcher.close()
    feed = [f for f in frames if "conversation_id" in f and f["type"] not in ("start", "done")]
    assert feed and {f["conversation_id"] for f in feed} == {own}, feed
    assert channels == {"chat:1:notices"}  # as the README says


def test_without_a_broker_stop_on_another_process_of_one_sqlite_file_works_through_the_database(tmp_path):
    """No broker at all: the Stop stored on the run's row is the whole way (SQLite's engine)."""
    settings = Settings(data_dir=str(tmp_path / "data"), database_url=f"sqlite:///{tmp_path / 'chat.sqlite3'}",
                        offline_token_delay_ms=80)
    a = Instance(settings, REDIS_URL="")
    b = Instance(settings, REDIS_URL="")
    try:
        started(a, b)

        async def scenario() -> tuple[dict, float, float]:
            async with websockets.connect(ws_url(a)) as on_a:
                start = await start_reply(on_a)
                asked = await stop_on_b(b, start["run_id"])
                done, at = await until_done(on_a)
                return done, asked, at

        done, asked, at = asyncio.run(scenario())
    finally:
        a.kill()
        b.kill()
    assert done["status"] == "cancelled"
    assert at - asked < 5
    assert fetch_rows(settings.database, "SELECT status FROM run") == [("cancelled",)]
