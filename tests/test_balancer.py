"""Three instances behind HAProxy (Debian's package), run from deploy/haproxy.cfg itself: replies
stream through it on every protocol, Stop reaches a reply wherever it runs, and a killed instance
is taken out by the health check while its replies end as they do without a balancer."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import websockets
import yaml

from tests.conftest import ServerProcess, auth, fetch_rows, token_for
from tests.test_ai_sdk import node_client
from tests.test_mcp import mcp_session, titles
from tests.test_runs import wait_for_status
from tests.test_scale_out import broker_env, shared_settings  # noqa: F401 (a fixture)

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "deploy" / "haproxy.cfg"
INSTANCES = 3


def haproxy_binary() -> str:
    """Debian's haproxy (.ci/run installs it); CI, which sets REQUIRE_BROWSER, fails without it."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("haproxy is not installed: apt-get install haproxy")
        pytest.skip("needs HAProxy (apt-get install haproxy)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def local_config(servers: list[ServerProcess], port: int, stats_port: int) -> str:
    """The shipped configuration with its addresses swapped for this machine's: every other
    setting (timeouts, health check, balancing) is what a deployment runs."""
    text = CONFIG.read_text()
    swaps = {"bind :8000": f"bind 127.0.0.1:{port}", "bind :8404": f"bind 127.0.0.1:{stats_port}"}
    swaps |= {f" chat-{n}:8000": f" 127.0.0.1:{server.port}" for n, server in enumerate(servers, 1)}
    for old, new in swaps.items():
        assert text.count(old) == 1, f"deploy/haproxy.cfg no longer has {old!r}"
        text = text.replace(old, new)
    return text


class Balancer:
    """``haproxy -db`` (foreground) as a process; its log goes to a file, never a pipe nobody reads."""

    def __init__(self, directory: Path, servers: list[ServerProcess]):
        port, stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.stats_url = f"http://127.0.0.1:{stats_port}/stats;csv"
        config = directory / "haproxy.cfg"
        config.write_text(local_config(servers, port, stats_port))
        self.log_path = directory / "haproxy.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)],
                                            stdout=log, stderr=subprocess.STDOUT)

    def server_states(self) -> dict[str, str]:
        """Each instance's state as the health check sees it: ``UP``, ``DOWN``, ``UP 1/2``..."""
        text = httpx.get(self.stats_url, timeout=5).text.removeprefix("# ")
        return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "chat" and row["svname"].startswith("chat-")}

    def wait_for(self, condition, what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"haproxy exited:\n{self.log_path.read_text()}"
            try:
                if condition():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{what} within {timeout_s} s; haproxy's view: {self.server_states()}")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path, shared_settings) -> Iterator[tuple[Balancer, dict[str, ServerProcess]]]:  # noqa: F811
    """Three instances on one PostgreSQL database with the Redis broker, HAProxy in front;
    instances by the name HAProxy gives them (``chat-1``...)."""
    env = {**broker_env("redis"), "RUN_LEASE_S": "1"}
    servers = [ServerProcess(shared_settings, wait=False, **env) for _ in range(INSTANCES)]
    balancer = None
    try:
        for server in servers:
            server.wait_ready()
        balancer = Balancer(tmp_path, servers)
        balancer.wait_for(lambda: set(balancer.server_states().values()) == {"UP"}, "every instance up")
        yield balancer, {f"chat-{n}": server for n, server in enumerate(servers, 1)}
    finally:
        if balancer is not None:
            balancer.stop()
        for server in servers:
            server.stop()


def ws_url(balancer: Balancer) -> str:
    return balancer.url.replace("http", "ws") + f"/api/alice/ws?token={token_for('alice')}"


def sse_events(text: str) -> list[dict]:
    return [json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]


async def read_sse(lines, until: int | None = None) -> list[dict]:
    """Events from an SSE stream's lines: ``until`` of them, or all up to the stream's end."""
    events = []
    async for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == until:
                break
    return events


def test_sse_websocket_ai_sdk_and_mcp_work_through_the_balancer(cluster, shared_settings):  # noqa: F811
    balancer, _ = cluster
    served_by = set()
    with httpx.Client(base_url=balancer.url, headers=auth("alice"), timeout=30) as http:
        reply = http.post("/api/alice/chat/stream", json={"message": "hello"})
        served_by.add(reply.headers["x-served-by"])
        # The balancer's request id (a UUID; the instance's own would have no dashes) is kept.
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", reply.headers["x-request-id"])
        events = sse_events(reply.text)
        assert events[-1]["type"] == "done" and events[-1]["status"] == "completed"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        served_by |= {http.get("/health").headers["x-served-by"] for _ in range(2 * INSTANCES)}
    assert served_by == {"chat-1", "chat-2", "chat-3"}  # balanced, not pinned to one instance

    async def websocket_reply() -> list[dict]:
        async with websockets.connect(ws_url(balancer)) as ws:  # the Upgrade passes through
            await ws.send(json.dumps({"type": "chat", "message": "hello"}))
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 10))]
            while frames[-1]["type"] != "done":
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            return frames

    frames = asyncio.run(websocket_reply())
    assert frames[0]["type"] == "start" and frames[-1]["status"] == "completed"
    assert "".join(f["content"] for f in frames if f["type"] == "text")

    result = node_client(SimpleNamespace(url=balancer.url), "alice", "send", "chat-behind-haproxy", "add buy milk")
    assert result["errors"] == []
    assert "buy milk" in "".join(p["text"] for p in result["message"]["parts"] if p["type"] == "text")
    assert fetch_rows(shared_settings.database, "SELECT status FROM run") == [("completed",)] * 3

    # An MCP session lives on one instance: the balancer sends its every request there.
    async def mcp_calls() -> list[str]:
        async with mcp_session(balancer.url, "alice") as mcp:
            await mcp.list_tools()
            for title in ("call mom", "water plants", "pay rent"):
                await mcp.call_tool("add_task", {"title": title})
            return titles(await mcp.call_tool("list_tasks", {}))

    assert asyncio.run(mcp_calls()) == ["buy milk", "call mom", "water plants", "pay rent"]


def test_stop_through_the_balancer_reaches_the_reply_on_whichever_instance_runs_it(cluster, shared_settings):  # noqa: F811
    balancer, _ = cluster

    async def scenario():
        sockets = [await websockets.connect(ws_url(balancer)) for _ in range(INSTANCES)]
        try:
            starts = []
            for ws in sockets:
                await ws.send(json.dumps({"type": "chat", "message": "hello"}))
                starts.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "text"
            # leastconn: each open socket went to the instance with the fewest, so the three
            # replies run on three instances and most Stops below land on another one.
            holders = {ws.response.headers["X-Served-By"] for ws in sockets}
            async with httpx.AsyncClient(base_url=balancer.url, headers=auth("alice")) as http:
                for start in starts:
                    response = await http.post(f"/api/alice/runs/{start['run_id']}/cancel")
                    assert response.status_code == 202
            ends = []
            for ws in sockets:
                while (frame := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "done":
                    pass
                ends.append(frame["status"])
            return holders, ends
        finally:
            for ws in sockets:
                await ws.close()

    holders, ends = asyncio.run(scenario())
    assert holders == {"chat-1", "chat-2", "chat-3"}
    assert ends == ["cancelled"] * INSTANCES
    assert fetch_rows(shared_settings.database, "SELECT status FROM run") == [("cancelled",)] * INSTANCES


def test_a_killed_instance_is_taken_out_and_its_replies_end_interrupted(cluster, shared_settings):  # noqa: F811
    balancer, servers = cluster

    async def start_replies(http: httpx.AsyncClient):
        """Three replies at once (one per instance, by leastconn), a few events read of each;
        then the instance of the first is killed and the clients of the others leave."""
        streams, lines, seen = [], [], []
        try:
            for _ in range(INSTANCES):
                request = http.build_request("POST", "/api/alice/chat/stream",
                                             json={"message": "hello", "on_disconnect": "continue"})
                response = await http.send(request, stream=True)
                streams.append(response)
                lines.append(response.aiter_lines())  # one reader per stream, read in two goes
                seen.append(await read_sse(lines[-1], until=3))
            holders = [response.headers["x-served-by"] for response in streams]
            victim = servers[holders[0]]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=10)
            # Its client sees the stream cut (no `done`), at once: not a hang.
            try:
                rest = await asyncio.wait_for(read_sse(lines[0]), 10)
            except httpx.HTTPError:
                rest = []
            assert not any(e["type"] == "done" for e in rest)
            seen[0] += rest
            return holders, seen
        finally:
            for response in streams:
                await response.aclose()

    async def resume(http: httpx.AsyncClient, events: list[dict]) -> list[dict]:
        last = events[-1]
        async with http.stream("GET", f"/api/alice/runs/{last['run_id']}/events",
                               headers={"Last-Event-ID": str(last["seq"])}) as response:
            return await read_sse(response.aiter_lines())

    async def scenario():
        async with httpx.AsyncClient(base_url=balancer.url, headers=auth("alice"), timeout=30) as http:
            holders, seen = await start_replies(http)
            victim = holders[0]
            # The health check takes the dead instance out...
            await asyncio.to_thread(balancer.wait_for, lambda: balancer.server_states()[victim] == "DOWN",
                                    f"{victim} marked down", 10)

            # ...and new requests all reach the living ones.
            async def all_succeed() -> bool:
                answers = [await http.get("/api/alice/conversations") for _ in range(2 * INSTANCES)]
                return all(a.status_code == 200 and a.headers["x-served-by"] != victim for a in answers)

            deadline = time.monotonic() + 10
            while not await all_succeed():
                assert time.monotonic() < deadline, "new requests still fail after the instance died"
                await asyncio.sleep(0.1)
            # A resume of a reply on a living instance replays what was missed and follows it live;
            # a reply on the dead one ends `interrupted` once its lease lapses (takeover: issue 28).
            survivor = await resume(http, seen[1])
            dead = await asyncio.wait_for(resume(http, seen[0]), 30)
            return seen, survivor, dead

    seen, survivor, dead = asyncio.run(scenario())
    assert survivor[-1]["type"] == "done" and survivor[-1]["status"] == "completed"
    assert [e["seq"] for e in seen[1] + survivor] == list(range(1, len(seen[1]) + len(survivor) + 1))
    assert dead[-1]["type"] == "done" and dead[-1]["status"] == "interrupted"
    assert [e["seq"] for e in seen[0] + dead] == list(range(1, len(seen[0]) + len(dead) + 1))
    database = shared_settings.database
    statuses = [wait_for_status(database, events[0]["run_id"]) for events in seen]
    assert statuses == ["interrupted", "completed", "completed"]


def test_compose_runs_three_instances_behind_haproxy_with_this_configuration():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    instances = [name for name in services if name.startswith("chat-")]
    assert instances == ["chat-1", "chat-2", "chat-3"]
    assert services["balancer"]["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in services["balancer"]["volumes"]
    config = CONFIG.read_text()
    assert all(f"server {name} {name}:8000" in config for name in instances)
    for setting in ("option httpchk GET /health", "inter 500ms fall 2", "timeout tunnel 1h", "balance leastconn"):
        assert setting in config
    local = local_config([SimpleNamespace(port=free_port()) for _ in instances], free_port(), free_port())
    done = subprocess.run([haproxy_binary(), "-c", "-f", "/dev/stdin"], input=local, check=False,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
