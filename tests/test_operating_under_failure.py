"""Shutdown, restart and a database outage, as clients and operators see them."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import websockets

from tests.conftest import ServerProcess, Settings, auth, fresh_postgres, token_for
from tests.test_runs import run_status


CLIENTS = 10


def test_sigterm_gives_every_websocket_client_its_done_before_the_socket_closes(settings):
    slow = msgspec.structs.replace(settings, offline_token_delay_ms=50)
    server = ServerProcess(slow)
    def url(user: str) -> str:
        return server.url.replace("http", "ws") + f"/api/{user}/ws?token={token_for(user)}"

    async def client(n: int, streaming: asyncio.Event, count: list[int]) -> list[dict]:
        seen = []
        async with websockets.connect(url(f"user{n}")) as ws:
            await ws.send(msgspec.json.encode({"type": "chat", "message": "add " + " ".join(f"w{n}" for _ in range(60))}))
            try:
                async for frame in ws:
                    seen.append(msgspec.json.decode(frame))
                    if sum(e["type"] == "text" for e in seen) == 3 and seen[-1]["type"] == "text":
                        count[0] += 1  # this client's reply is well under way
                        if count[0] == CLIENTS:
                            streaming.set()
            except websockets.ConnectionClosed:
                pass
        return seen

    async def scenario() -> list[list[dict]]:
        streaming, count = asyncio.Event(), [0]
        clients = [asyncio.create_task(client(n, streaming, count)) for n in range(CLIENTS)]
        await asyncio.wait_for(streaming.wait(), 60)
        server.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(asyncio.gather(*clients), 60)

    try:
        seen = asyncio.run(scenario())
        assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    for events in seen:
        assert events[-1]["type"] == "done" and events[-1]["status"] == "interrupted", events[-3:]


def test_on_sqlite_a_restart_closes_a_crashed_servers_runs_at_once(settings):
    """One process serves a SQLite file: no lease to wait out after kill -9 (PostgreSQL keeps it)."""
    slow = msgspec.structs.replace(settings, offline_token_delay_ms=50)
    server = ServerProcess(slow, RUN_LEASE_S="600")
    try:
        with httpx.Client(base_url=server.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream",
                             json={"message": "hello there", "on_disconnect": "continue"}) as response:
                lines = response.iter_lines()
                start = msgspec.json.decode(next(line for line in lines if line.startswith("data: "))[6:])
                server.process.kill()
    finally:
        server.stop()
    restarted = ServerProcess(slow, RUN_LEASE_S="600")
    try:
        expected = "interrupted" if settings.database.startswith("sqlite") else "running"
        assert run_status(settings.database, start["run_id"]) == expected
    finally:
        restarted.stop()


class Proxy:
    """A TCP proxy in front of PostgreSQL that can cut the database off and bring it back."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.pairs: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.pairs += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up = False
        for s in self.pairs:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.pairs.clear()

    def restore(self) -> None:
        self.up = True


def test_a_database_outage_answers_503_and_the_server_recovers_by_itself(tmp_path, postgres_server):
    database = fresh_postgres(postgres_server)
    parts = urlsplit(database)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    settings = Settings(data_dir=str(tmp_path / "data"), database_url=through_proxy, offline_token_delay_ms=0)
    server = ServerProcess(settings)
    try:
        with httpx.Client(base_url=server.url, headers=auth("alice"), timeout=30) as http:
            assert http.post("/api/alice/chat", json={"message": "add milk"}).status_code == 200
            proxy.cut()
            down = [http.post("/api/alice/chat", json={"message": "add bread"}),
                    http.get("/api/alice/tasks"), http.get("/health")]
            proxy.restore()
            deadline = time.monotonic() + 30
            while http.get("/health").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            back = http.post("/api/alice/chat", json={"message": "add eggs"})
            tasks = [t["title"] for t in http.get("/api/alice/tasks").json()]
    finally:
        server.stop()
    refused, listing, health = down
    for response in (refused, listing):
        assert response.status_code == 503, response.text
        assert response.json()["extra"] == {"code": "database_unavailable"}
        assert int(response.headers["retry-after"]) > 0
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert back.status_code == 200 and tasks == ["milk", "eggs"]


def test_tokens_never_reach_the_access_log(settings):
    server = ServerProcess(settings, LOG_LEVEL="INFO")
    token = token_for("alice")
    try:
        httpx.get(f"{server.url}/api/alice/tasks", params={"token": token}, headers=auth("alice"))

        async def socket_with_token() -> None:
            url = server.url.replace("http", "ws") + f"/api/alice/ws?token={token}"
            async with websockets.connect(url) as ws:
                await ws.send(b'{"type": "ping"}')
                await ws.recv()

        asyncio.run(socket_with_token())
        # Both requests reach the access log (written after each answer), tokens redacted.
        deadline = time.monotonic() + 10
        while not all(f"/api/alice/{path}?token=[redacted]" in server.output() for path in ("ws", "tasks")):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.02)
    finally:
        server.stop()
    output = server.output()
    assert token not in output
