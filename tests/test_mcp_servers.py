"""MCP_SERVERS: a remote MCP server's tools join the agent's. The server here is a real one,
built with the official ``mcp`` package (tests/mcp_tool_server.py) in a process of its own, so
that a test can take it away mid-reply."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from app.settings import Settings, load_settings
from tests.conftest import auth, start_live_server
from tests.sse import parse_frames, text_of
from tests.test_cli import chat_server, one_line

SERVER_SCRIPT = Path(__file__).parent / "mcp_tool_server.py"


class ToolServer:
    """tests/mcp_tool_server.py on a free port; it wants ``token`` as a bearer token."""

    def __init__(self, port: int | None = None, token: str | None = None, *extra_tools: str):
        if port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port, self.token = port, token or secrets.token_hex(8)
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), str(port), self.token, *extra_tools],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # importing the stack takes seconds on a busy machine
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the MCP server did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                threading.Event().wait(0.05)
        self.kill()
        raise RuntimeError("the MCP server did not start in 60 s")

    def wait_for_hang(self) -> None:
        """Until the ``hang`` tool is running (it says so on stdout)."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        assert ready and self.process.stdout.readline() == b"hanging\n"

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer()
    yield server
    server.kill()


def with_servers(settings: Settings, server: ToolServer, **more: str) -> Settings:
    """The settings with MCP_SERVERS naming ``server``, its token given as ${FILES_TOKEN}, read
    from the environment the way the server reads it."""
    entry = [{"name": "files", "url": server.url, "headers": {"Authorization": "Bearer ${FILES_TOKEN}"}}]
    loaded = load_settings({"MCP_SERVERS": json.dumps(entry), "FILES_TOKEN": server.token, **more}, env_file=None)
    changed = {name: getattr(loaded, name) for name in ("mcp_servers", *(key.lower() for key in more))}
    return msgspec.structs.replace(settings, **changed)


def chat(url: str, message: str, conversation_id: str | None = None) -> list[dict]:
    response = httpx.post(f"{url}/api/alice/chat/stream", headers=auth("alice"), timeout=60,
                          json={"message": message, "conversation_id": conversation_id})
    assert response.status_code == 200, response.text
    return parse_frames(response.content)


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [event for event in events if event["type"] == kind]


def test_the_agent_calls_an_mcp_servers_tool_like_its_own(settings, tool_server):
    live = start_live_server(with_servers(settings, tool_server))
    try:
        events = chat(live.url, 'use files.echo {"text": "hi"}')
        own = chat(live.url, "add buy milk", events[0]["conversation_id"])  # its own tools still work
        reply = httpx.post(f"{live.url}/api/alice/chat", headers=auth("alice"), timeout=60,
                           json={"message": 'use files__echo {"text": "again"}'}).json()
    finally:
        live.stop()
    (call,), (result,) = of_type(events, "tool_call"), of_type(events, "tool_result")
    assert call == {**call, "name": "files__echo", "arguments": {"text": "hi"}}
    assert result == {**result, "call_id": call["call_id"], "name": "files__echo", "result": {"result": "echo: hi"}}
    assert text_of(events) == "files__echo answered: echo: hi"
    assert events[-1]["status"] == "completed"
    assert "Added “buy milk”" in text_of(own)
    assert reply["tool_calls"][0]["result"] == {"result": "echo: again"} and reply["status"] == "completed"


def test_tool_approval_names_an_mcp_tool_server_dot_tool(settings, tool_server):
    live = start_live_server(with_servers(settings, tool_server, TOOL_APPROVAL="delete_task,files.echo"))
    try:
        asked = chat(live.url, 'use files.echo {"text": "hi"}')
        (request,) = of_type(asked, "approval_request")
        before = chat(live.url, "use files.count")  # not named: runs at once (another conversation)
        decided = httpx.post(f"{live.url}/api/alice/runs/{asked[0]['run_id']}/approvals", headers=auth("alice"),
                             json={"call_id": request["call_id"], "approve": True}, timeout=60)
        continuation = parse_frames(decided.content)
        after = chat(live.url, "use files.count")
    finally:
        live.stop()
    assert asked[-1]["status"] == "awaiting_approval" and not of_type(asked, "tool_result")
    assert request == {**request, "name": "files__echo", "arguments": {"text": "hi"}}
    assert of_type(before, "tool_result")[0]["result"] == {"result": 0}  # echo had not run
    assert decided.status_code == 200, decided.text
    assert of_type(continuation, "tool_result")[0]["result"] == {"result": "echo: hi"}
    assert text_of(continuation) == "files__echo answered: echo: hi"
    assert continuation[-1]["status"] == "completed"
    assert of_type(after, "tool_result")[0]["result"] == {"result": 1}


def test_an_mcp_server_going_away_mid_reply_is_told_to_the_model(settings, tool_server):
    live = start_live_server(with_servers(settings, tool_server))
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=60) as http, \
                http.stream("POST", "/api/alice/chat/stream", json={"message": "use files.hang"}) as stream:
            events, lines = [], stream.iter_lines()
            for line in lines:  # until the call is under way, then the server dies
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
                    if events[-1]["type"] == "tool_call":
                        tool_server.wait_for_hang()
                        tool_server.kill()
                        break
            events += [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
            assert stream.status_code == 200
        after = chat(live.url, "use files.echo {\"text\": \"still there?\"}")
    finally:
        live.stop()
    (result,) = of_type(events, "tool_result")
    error = result["result"]["error"]
    assert error.startswith("The MCP server “files” failed") and "may not have run" in error
    assert text_of(events).startswith("Sorry, files__hang failed: The MCP server “files”")
    assert events[-1] == {**events[-1], "type": "done", "status": "completed"}
    # Its tools are still listed (the last list is kept), and a call says it cannot reach it.
    assert of_type(after, "tool_result")[0]["result"]["error"].startswith("The MCP server “files” could not be reached")
    assert after[-1]["status"] == "completed"


def test_stop_during_an_mcp_call_stops_the_reply(settings, tool_server):
    live = start_live_server(with_servers(settings, tool_server))
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=60) as http, \
                http.stream("POST", "/api/alice/chat/stream", json={"message": "use files.hang"}) as stream:
            events = []
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
                    if events[-1]["type"] == "tool_call":
                        tool_server.wait_for_hang()
                        assert http.post(f"/api/alice/runs/{events[0]['run_id']}/cancel").status_code == 202
    finally:
        live.stop()
    assert events[-1] == {**events[-1], "type": "done", "status": "cancelled"}


def test_a_server_that_is_down_costs_only_its_tools(settings):
    with socket.socket() as closed:  # bound, never listening: a connection is refused at once
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/mcp"
        down = msgspec.structs.replace(settings, mcp_servers=load_settings(
            {"MCP_SERVERS": json.dumps([{"name": "files", "url": url}])}, env_file=None).mcp_servers)
        live = start_live_server(down)
        try:
            used = chat(live.url, 'use files.echo {"text": "hi"}')
            own = chat(live.url, "add buy milk")
        finally:
            live.stop()
    assert text_of(used) == "I have no tool named files.echo." and used[-1]["status"] == "completed"
    assert "Added “buy milk”" in text_of(own) and own[-1]["status"] == "completed"


def test_the_tool_list_is_cached_then_read_again(settings, tool_server):
    """A new tool on the server is known once the list is read again (MCP_TOOLS_REFRESH_S)."""

    def reverse_works(url: str) -> bool:
        return text_of(chat(url, 'use files.reverse {"text": "abc"}')) == "files__reverse answered: cba"

    cached = start_live_server(with_servers(settings, tool_server, MCP_TOOLS_REFRESH_S="600"))
    refreshed = start_live_server(with_servers(settings, tool_server, MCP_TOOLS_REFRESH_S="0.2"))
    try:
        assert chat(cached.url, "use files.count")[-1]["status"] == "completed"  # both have read the list
        assert chat(refreshed.url, "use files.count")[-1]["status"] == "completed"
        tool_server.kill()
        # The same address and token, one more tool.
        tool_server.process = ToolServer(tool_server.port, tool_server.token, "reverse").process
        deadline = time.monotonic() + 30
        while not reverse_works(refreshed.url):
            assert time.monotonic() < deadline, "the new tool never showed"
            threading.Event().wait(0.1)
        assert text_of(chat(cached.url, 'use files.reverse {"text": "abc"}')) == "I have no tool named files.reverse."
    finally:
        cached.stop()
        refreshed.stop()


@pytest.mark.parametrize("value, says", [
    ("[{", "not JSON"),
    ('{"name": "files"}', "Expected `array`"),
    ('[{"name": "files", "url": "http://h/mcp", "headers": {"Authorization": "Bearer ${NOT_SET_ANYWHERE}"}}]',
     "${NOT_SET_ANYWHERE} is not set"),
    ('[{"name": "files"}]', "missing required field `url`"),
    ('[{"name": "a", "url": "http://h/mcp"}, {"name": "a", "url": "http://i/mcp"}]', "two servers are named 'a'"),
])
def test_a_malformed_mcp_servers_stops_start_up_in_one_line(tmp_path, value, says):
    line = one_line(chat_server("serve", "--port", "0", MCP_SERVERS=value, DATA_DIR=str(tmp_path)))
    assert line.startswith("chat-server: invalid value for MCP_SERVERS: ") and says in line
